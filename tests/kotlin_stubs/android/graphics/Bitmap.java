// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from the Android SDK reference.
package android.graphics;

public final class Bitmap {
    public enum Config { ALPHA_8, RGB_565, ARGB_4444, ARGB_8888, RGBA_F16, HARDWARE, RGBA_1010102 }
    private Bitmap() {}
    public Config getConfig() { throw new UnsupportedOperationException("stub"); }
    public Bitmap copy(Config config, boolean isMutable) { throw new UnsupportedOperationException("stub"); }
    public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) { throw new UnsupportedOperationException("stub"); }
    public void getPixels(int[] pixels, int offset, int stride, int x, int y, int width, int height) { throw new UnsupportedOperationException("stub"); }
    public void recycle() { throw new UnsupportedOperationException("stub"); }
    public int getWidth() { throw new UnsupportedOperationException("stub"); }
    public int getHeight() { throw new UnsupportedOperationException("stub"); }
}
