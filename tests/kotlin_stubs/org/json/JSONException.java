// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from Android's org.json reference.
package org.json;

public class JSONException extends Exception {
    public JSONException(String s) { super(s); }
}
