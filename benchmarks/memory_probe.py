"""Peak memory of a few training steps in a fresh process (run by benchmarks/ondevice_train.py):

    python benchmarks/memory_probe.py litert TRAINABLE.tflite STEPS
    python benchmarks/memory_probe.py keras MODEL.keras STEPS BATCH

Prints the peak resident set in MB and whether TensorFlow was loaded. VmHWM, not ru_maxrss:
after fork+exec, ru_maxrss keeps the parent's high-water mark.
"""
import sys

import numpy as np


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024


def main(mode: str, path: str, steps: int, batch: int = 0) -> None:
    rng = np.random.default_rng(0)
    if mode == "litert":
        from tfprune.ondevice.runtime import TrainableRuntime
        rt = TrainableRuntime(path)
        batch = rt.batch_size
        train_step = rt.train_batch
    else:
        import keras
        from tfprune import train
        model = train.compile_sgd(keras.models.load_model(path, compile=False), 1e-3, 5e-4)
        train_step = model.train_on_batch
    x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 100, batch)
    for _ in range(steps):
        train_step(x, y)
    print(peak_mb(), "tensorflow" in sys.modules)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:5]))
