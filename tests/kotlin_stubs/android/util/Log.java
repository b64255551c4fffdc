// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from the Android SDK reference.
package android.util;

public final class Log {
    private Log() {}
    public static int w(String tag, String msg) { throw new UnsupportedOperationException("stub"); }
    public static int w(String tag, String msg, Throwable tr) { throw new UnsupportedOperationException("stub"); }
    public static int i(String tag, String msg) { throw new UnsupportedOperationException("stub"); }
}
