// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from Android's org.json reference.
package org.json;

public class JSONObject {
    public JSONObject(String json) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public JSONObject getJSONObject(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public JSONObject optJSONObject(String name) { throw new UnsupportedOperationException("stub"); }
    public JSONArray getJSONArray(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public String getString(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public String optString(String name) { throw new UnsupportedOperationException("stub"); }
    public int getInt(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public double getDouble(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public boolean getBoolean(String name) throws JSONException { throw new UnsupportedOperationException("stub"); }
    public boolean optBoolean(String name, boolean fallback) { throw new UnsupportedOperationException("stub"); }
}
