// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from Android's org.json reference.
package org.json;

public class JSONArray {
    public int length() { throw new UnsupportedOperationException("stub"); }
    public int getInt(int index) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public double getDouble(int index) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public String getString(int index) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public JSONObject getJSONObject(int index) throws JSONException { throw new UnsupportedOperationException("stub"); }
}
