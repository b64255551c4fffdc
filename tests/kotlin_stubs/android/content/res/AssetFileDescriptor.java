// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from the Android SDK reference.
package android.content.res;

import java.io.Closeable;
import java.io.FileDescriptor;
import java.io.IOException;

public class AssetFileDescriptor implements Closeable, AutoCloseable {
    public FileDescriptor getFileDescriptor() { throw new UnsupportedOperationException("stub"); }
    public long getStartOffset() { throw new UnsupportedOperationException("stub"); }
    public long getDeclaredLength() { throw new UnsupportedOperationException("stub"); }
    public void close() throws IOException { throw new UnsupportedOperationException("stub"); }
}
