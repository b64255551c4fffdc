// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from the Android SDK reference.
package android.content.res;

import java.io.IOException;
import java.io.InputStream;

public final class AssetManager implements AutoCloseable {
    private AssetManager() {}
    public InputStream open(String fileName) throws IOException { throw new UnsupportedOperationException("stub"); }
    public AssetFileDescriptor openFd(String fileName) throws IOException { throw new UnsupportedOperationException("stub"); }
    public void close() {}
}
