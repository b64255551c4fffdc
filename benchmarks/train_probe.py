"""A few training steps in a fresh process, for benchmarks/ondevice_train.py:

    python benchmarks/train_probe.py peak litert TRAINABLE.tflite STEPS
    python benchmarks/train_probe.py peak keras MODEL.keras STEPS BATCH
        -> peak resident set in MB, and whether TensorFlow got loaded
    python benchmarks/train_probe.py cpu_ms TRAINABLE.tflite XNNPACK(0|1) STEPS
        -> CPU ms per LiteRT `train` step on 1 thread (run under `perf record` for op shares)

Peak memory is VmHWM, not ru_maxrss: after fork+exec, ru_maxrss keeps the parent's mark.
"""
import sys
import time

import numpy as np


def _batch(size: int):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(size, 32, 32, 3)).astype(np.float32),
            rng.integers(0, 100, size))


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024


def peak(mode: str, path: str, steps: int, batch: int = 0) -> None:
    if mode == "litert":
        from tfprune.ondevice.runtime import TrainableRuntime
        rt = TrainableRuntime(path)
        batch, train_step = rt.batch_size, rt.train_batch
    else:
        import keras
        from tfprune.training import fit as train
        model = train.compile_sgd(keras.models.load_model(path, compile=False), 1e-3, 5e-4)
        train_step = model.train_on_batch
    x, y = _batch(batch)
    for _ in range(steps):
        train_step(x, y)
    print(peak_mb(), "tensorflow" in sys.modules)


def cpu_ms(path: str, xnnpack: str, steps: int) -> None:
    from tfprune.ondevice.runtime import TrainableRuntime
    rt = TrainableRuntime(path, num_threads=1, xnnpack=xnnpack == "1")
    x, y = _batch(rt.batch_size)
    rt.train_batch(x, y)
    start = time.process_time()
    for _ in range(steps):
        rt.train_batch(x, y)
    print((time.process_time() - start) / steps * 1e3)


if __name__ == "__main__":
    if sys.argv[1] == "peak":
        peak(sys.argv[2], sys.argv[3], int(sys.argv[4]), *map(int, sys.argv[5:6]))
    else:
        cpu_ms(sys.argv[2], sys.argv[3], int(sys.argv[4]))
