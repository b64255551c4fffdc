"""The latency model's measurements: blocks convert like the shipped model, and 1-thread
timing does not count the time a loaded machine keeps the invoke off the core."""
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from test_latency import small_resnet
from tfprune.latency import timing
from tfprune.litert import convert, inspect


def _ops(blob: bytes) -> list:
    """Per op: name, fused activation, and every input and output's static shape and dtype."""
    return [(op.name, op.option("fusedActivationFunction"),
             [(t.shape_signature, t.dtype) for t in op.inputs + op.outputs])
            for op in inspect(blob).ops]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_block_path_converts_like_the_shipped_path(precision):
    """Blocks are converted through frozen concrete functions, the model ships through
    `model.export`: the same ops on the same static shapes, so their times add up."""
    model = small_resnet()
    cal = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    shipped = convert.convert(model, precision, calibration=cal)
    timed = timing.to_tflite(model, precision)
    assert _ops(timed) == _ops(shipped)
    assert [op.name for op in inspect(shipped).ops].count("CONV_2D") == 5


def _heavy_model():
    """Two 3x3 convs on 128x128x64 maps (1.2 GMACs): an invoke of ~10 ms on a fast core,
    longer than a scheduler time slice (one conv on 64x64 maps took 1.2 ms on an AVX-512
    EPYC, and a competitor then rarely preempted it)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((128, 128, 64), batch_size=1)
    x = keras.layers.Conv2D(64, 3, padding="same")(inp)
    return keras.Model(inp, keras.layers.Conv2D(64, 3, padding="same")(x))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_one_thread_timing_ignores_a_competitor_on_the_same_core():
    """A busy process pinned to the same core doubles the wall time of every invoke; the
    1-thread clock (the invoking thread's CPU time) stays at the time alone."""
    assert timing.clock_of(1) == "thread_cpu" and timing.clock_of(2) == "wall"
    blob = timing.to_tflite(_heavy_model(), "float32")
    before = os.sched_getaffinity(0)
    core = min(before)
    os.sched_setaffinity(0, {core})
    hog = None
    try:
        alone = timing.time_ms(blob, 1, rounds=3, invokes=8)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(hog.pid, {core})
        interp = timing.interpreter(blob, 1)
        shared = timing.invoke_times(interp, 8)
        timed = timing.time_ms(blob, 1, rounds=3, invokes=8)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, before)
    assert np.median(shared["wall"]) > 1.5 * np.median(shared["thread_cpu"])  # contention
    assert timed < 1.3 * alone, (alone, timed, shared)


def test_validation_latency_reports_the_one_thread_cpu_clock():
    from tfprune.litert.validate import latency

    blob = timing.to_tflite(small_resnet(), "float32")
    measured = latency.measure(blob, threads=(1, 2), runs=5, warmup=1)
    assert "cpu_median_ms" in measured["1"] and "cpu_median_ms" not in measured["2"]
    assert 0 < measured["1"]["cpu_median_ms"] <= measured["1"]["median_ms"] * 1.05


def _wide_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


def test_a_run_is_timed_side_by_side_and_the_table_shows_it(tmp_path):
    """A run directory's files, timed in one interleaved session per runtime: the reference
    (the bar in float32) against the shipped file, a ~70x heavier model clearly slower; roles
    without a file (no `l1` baseline here) are left out; the report's table shows the same
    numbers."""
    from tfprune.latency import report

    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "restricted_float32.tflite").write_bytes(
        timing.to_tflite(_wide_model(), "float32"))
    (tmp_path / "model_float32.tflite").write_bytes(timing.to_tflite(small_resnet(), "float32"))
    measured = report.time_run(tmp_path, ["litert-float32-1t", "litert-float32-2t"],
                               rounds=5, invokes=5)
    one, two = measured["litert-float32-1t"], measured["litert-float32-2t"]
    assert one["clock"] == "thread_cpu" and two["clock"] == "wall"
    assert one["reference"] == "bar" and set(one["ms"]) == {"bar", "shipped"}
    assert one["speedup"] == one["vs_shipped"]["bar"] > 3
    assert one["ms"]["bar"] > 3 * one["ms"]["shipped"] > 0
    predicted = {rt: {"unpruned": 1.0, "pruned": 0.5} for rt in measured}
    lines = report.markdown(predicted, measured, 100, 50)
    row = next(ln for ln in lines if ln.startswith("| litert-float32-1t"))
    assert (f"| {one['ms']['bar']:.3f} |" in row and f"| {one['ms']['shipped']:.3f} |" in row
            and f"| {one['speedup']:.2f}x | {one['speedup'] / 2:.2f} |" in row
            and f"| 50.0% / {1 - 1 / one['speedup']:.1%} |" in row)
