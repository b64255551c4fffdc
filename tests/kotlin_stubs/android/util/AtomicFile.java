// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from the Android SDK reference (API 17+).
package android.util;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;

public class AtomicFile {
    public AtomicFile(File baseName) { throw new UnsupportedOperationException("stub"); }
    public File getBaseFile() { throw new UnsupportedOperationException("stub"); }
    public FileOutputStream startWrite() throws IOException { throw new UnsupportedOperationException("stub"); }
    public void finishWrite(FileOutputStream str) { throw new UnsupportedOperationException("stub"); }
    public void failWrite(FileOutputStream str) { throw new UnsupportedOperationException("stub"); }
    public byte[] readFully() throws IOException { throw new UnsupportedOperationException("stub"); }
    public void delete() { throw new UnsupportedOperationException("stub"); }
}
