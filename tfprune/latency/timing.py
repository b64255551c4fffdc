"""Convert a small Keras model (one block, any number of inputs) to LiteRT and time it.

Blocks convert through `TFLiteConverter.from_concrete_functions` (a tenth of the time of
`model.export`, the same converter and options: `tfprune.litert.convert.converter_options`);
int8 calibrates on seeded normal noise (latency does not depend on the values). Latency is
the best of `rounds` medians of `invokes` back-to-back invokes: load on a shared machine only
ever slows a run, so the best round median is the least disturbed one.

Clock (`clock_of`): with 1 thread LiteRT runs the whole invoke on the calling thread, so an
invoke is timed by that thread's CPU clock: the wall time it takes when it has the core. Wall
time would add the time the thread waits for a core: on a loaded machine an invoke longer
than the scheduler's time slice (a whole ResNet-56, ~3 ms) waits in almost every invoke while
a 0.03 ms block rarely does, which made a whole model 7x its blocks and booked the waiting as
the model's fixed cost. With 2 threads the work is spread over a pool, and only wall time
measures it (load inflates it; say so where it is reported).
"""
from __future__ import annotations

import logging
import statistics

import numpy as np

CLOCKS = ("thread_cpu", "wall")


def clock_of(threads: int) -> str:
    """The clock a `threads`-thread invoke is timed by (see the module docstring)."""
    return "thread_cpu" if int(threads) == 1 else "wall"


def _no_trackable_warning(record) -> bool:
    return "trackable_obj" not in record.getMessage()


def to_tflite(model, precision: str, calibration_images: int = 8) -> bytes:
    import tensorflow as tf

    from tfprune import console
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
    absl_log = logging.getLogger("absl")
    absl_log.addFilter(_no_trackable_warning)
    try:  # a frozen function has no trackable object to give: the warning is noise here
        with console.native_stderr_hidden():
            conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
            for key, value in opts.items():
                if key == "target_spec":
                    for k, v in value.items():
                        setattr(conv.target_spec, k, v)
                else:
                    setattr(conv, key, value)
            return conv.convert()
    finally:
        absl_log.removeFilter(_no_trackable_warning)


def interpreter(blob: bytes, threads: int):
    from tfprune import litert

    interp = litert.load_interpreter(blob, num_threads=threads)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return interp


def invoke_times(interp, invokes: int) -> dict:
    """{clock: [ms per invoke]} of `invokes` back-to-back invokes, on both clocks."""
    from tfprune.litert.validate.latency import invoke_times as times

    return times(interp, invokes)


def round_median(interp, invokes: int, clock: str) -> float:
    return statistics.median(invoke_times(interp, invokes)[clock])


def time_ms(blob: bytes, threads: int, rounds: int = 3, invokes: int = 15) -> float:
    interp = interpreter(blob, threads)
    for _ in range(3):
        interp.invoke()
    return min(round_median(interp, invokes, clock_of(threads)) for _ in range(rounds))


def time_interleaved(blobs: dict, threads: int, rounds: int = 5, invokes: int = 20,
                     wall: dict | None = None) -> dict:
    """{label: [round medians]} on the `threads` clock (`clock_of`): every model once per
    round, the order rotating per round. `wall`, if given, receives the wall-clock round
    medians of the same invokes."""
    interps = {k: interpreter(b, threads) for k, b in blobs.items()}
    out = {k: [] for k in blobs}
    if wall is not None:
        wall.update({k: [] for k in blobs})
    labels = list(blobs)
    for r in range(rounds):
        for k in labels[r % len(labels):] + labels[:r % len(labels)]:
            times = invoke_times(interps[k], invokes)
            out[k].append(statistics.median(times[clock_of(threads)]))
            if wall is not None:
                wall[k].append(statistics.median(times["wall"]))
    return out


def paired_ratio(per_round: dict, num, den) -> float:
    """Median over rounds of `num`'s round median over `den`'s (`time_interleaved` output):
    pairing each round cancels the machine's drift between rounds."""
    return statistics.median(a / b for a, b in zip(per_round[num], per_round[den]))
