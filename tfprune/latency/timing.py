"""Convert a small Keras model (one block, any number of inputs) to LiteRT and time it.

Blocks convert through `TFLiteConverter.from_concrete_functions` (a tenth of the time of
`model.export`, the same converter and options: `tfprune.litert.convert.converter_options`);
int8 calibrates on seeded normal noise (latency does not depend on the values). Latency is
the best of `rounds` medians of `invokes` back-to-back invokes: load on a shared machine only
ever slows a run, so the best round median is the least disturbed one.
"""
from __future__ import annotations

import statistics

import numpy as np


def to_tflite(model, precision: str, calibration_images: int = 8) -> bytes:
    import tensorflow as tf

    from tfprune.litert import convert

    specs = [tf.TensorSpec((1, *t.shape[1:]), tf.float32) for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2  # int8 calibration cannot read resource variables
    concrete = convert_variables_to_constants_v2(fn.get_concrete_function(*specs))
    rng = np.random.default_rng(0)
    samples = [[rng.normal(size=s.shape).astype(np.float32) for s in specs]
               for _ in range(calibration_images)]
    opts = convert.converter_options(precision, np.zeros((1, 1), np.float32))
    if precision == "int8":
        opts["representative_dataset"] = lambda: iter(samples)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    for key, value in opts.items():
        if key == "target_spec":
            for k, v in value.items():
                setattr(conv.target_spec, k, v)
        else:
            setattr(conv, key, value)
    return conv.convert()


def interpreter(blob: bytes, threads: int):
    from tfprune import litert

    interp = litert.load_interpreter(blob, num_threads=threads)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return interp


def round_median(interp, invokes: int) -> float:
    from tfprune.litert.validate.latency import invoke_times_ms

    return statistics.median(invoke_times_ms(interp, invokes))


def time_ms(blob: bytes, threads: int, rounds: int = 3, invokes: int = 15) -> float:
    interp = interpreter(blob, threads)
    for _ in range(3):
        interp.invoke()
    return min(round_median(interp, invokes) for _ in range(rounds))


def time_interleaved(blobs: dict, threads: int, rounds: int = 5, invokes: int = 20) -> dict:
    """{label: [round medians]}: every model once per round, the order rotating per round."""
    interps = {k: interpreter(b, threads) for k, b in blobs.items()}
    out = {k: [] for k in blobs}
    labels = list(blobs)
    for r in range(rounds):
        for k in labels[r % len(labels):] + labels[:r % len(labels)]:
            out[k].append(round_median(interps[k], invokes))
    return out
