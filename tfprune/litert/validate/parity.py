"""Parity of a converted model with its Keras source on real held-out images.

Both models see the same normalised float images; a quantised model's int8/uint8 input and
output are (de)quantised with their own parameters (`tfprune.litert.model_file.run`). Reported: top-1
agreement, max |logit difference|, and each model's accuracy. The gate depends on the kind of
model: `float` (float32/float16 weights) must agree on >= `min_agreement` of the images;
`dynamic` and `int8` (quantised weights or activations) may lose at most
`max_accuracy_drop_pp` percentage points of accuracy.
"""
from __future__ import annotations

import numpy as np

from tfprune import litert
from tfprune.errors import TfpruneError

MIN_AGREEMENT = 0.995
MAX_ACCURACY_DROP_PP = 1.0


def model_kind(info: litert.ModelInfo) -> str:
    """`int8` when activations are 8-bit, `dynamic` when only weights are, else `float`."""
    tensors = [t for op in info.ops for t in (*op.inputs, *op.outputs)]
    if any(t.dtype in ("int8", "uint8") and not t.is_constant for t in tensors):
        return "int8"
    if any(t.dtype in ("int8", "uint8") and t.is_constant for t in tensors):
        return "dynamic"
    return "float"


def keras_logits(model, x: np.ndarray, batch_size: int = 100) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def tflite_logits(interp, x: np.ndarray) -> np.ndarray:
    """Run every image through the interpreter in its static batch (the last batch padded)."""
    batch = int(interp.get_input_details()[0]["shape"][0]) or 1
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out.append(litert.run(interp, chunk)[:batch - pad])
    return np.concatenate(out)


def parity(source, keras_model, images, min_agreement: float = MIN_AGREEMENT,
           max_accuracy_drop_pp: float = MAX_ACCURACY_DROP_PP, interp=None) -> dict:
    """Compare a .tflite with `keras_model` on `images` (uint8 Images with labels)."""
    from tfprune.data import normalize_np

    info = litert.inspect(source)
    interp = interp or litert.load_interpreter(source)
    x, y = normalize_np(images.x), np.asarray(images.y)
    ref, got = keras_logits(keras_model, x), tflite_logits(interp, x)
    if ref.shape != got.shape:
        raise TfpruneError(f"{info.path}: output shape {got.shape[1:]} differs from the Keras "
                         f"model's {ref.shape[1:]}; is this the right Keras model?")
    ref_top, got_top = ref.argmax(1), got.argmax(1)
    acc_ref, acc_got = float((ref_top == y).mean()), float((got_top == y).mean())
    agreement = float((ref_top == got_top).mean())
    drop_pp = 100.0 * (acc_ref - acc_got)
    kind = model_kind(info)
    if kind == "float":
        passed = agreement >= min_agreement
        gate = f"top-1 agreement {agreement:.2%} >= {min_agreement:.2%}"
    else:
        passed = drop_pp <= max_accuracy_drop_pp
        gate = f"accuracy drop {drop_pp:.2f} pp <= {max_accuracy_drop_pp:.2f} pp"
    return {"kind": kind, "images": int(len(y)), "top1_agreement": agreement,
            "max_abs_logit_diff": float(np.abs(ref - got).max()),
            "keras_accuracy": acc_ref, "tflite_accuracy": acc_got,
            "accuracy_drop_pp": drop_pp, "passed": bool(passed),
            "summary": ("" if passed else "NOT ") + gate}
