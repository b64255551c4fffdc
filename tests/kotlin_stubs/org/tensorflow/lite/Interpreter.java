// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from LiteRT's Java sources (Interpreter.java, InterpreterImpl.java; see README.md).
package org.tensorflow.lite;

import java.io.File;
import java.nio.ByteBuffer;
import java.util.Map;

public final class Interpreter implements AutoCloseable {
    public static class Options {
        public Options() {}
        public Options setNumThreads(int numThreads) { throw new UnsupportedOperationException("stub"); }
        public Options setUseXNNPACK(boolean useXNNPACK) { throw new UnsupportedOperationException("stub"); }
        public Options setCancellable(boolean allow) { throw new UnsupportedOperationException("stub"); }
    }
    public Interpreter(File modelFile) { throw new UnsupportedOperationException("stub"); }
    public Interpreter(File modelFile, Options options) { throw new UnsupportedOperationException("stub"); }
    public Interpreter(ByteBuffer byteBuffer) { throw new UnsupportedOperationException("stub"); }
    public Interpreter(ByteBuffer byteBuffer, Options options) { throw new UnsupportedOperationException("stub"); }
    public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) { throw new UnsupportedOperationException("stub"); }
    public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs) { throw new UnsupportedOperationException("stub"); }
    public String[] getSignatureKeys() { throw new UnsupportedOperationException("stub"); }
    public String[] getSignatureOutputs(String signatureKey) { throw new UnsupportedOperationException("stub"); }
    public void close() { throw new UnsupportedOperationException("stub"); }
}
