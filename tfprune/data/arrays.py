"""NumPy-only image constants and normalisation (the CIFAR-100 channel statistics), for code
that feeds interpreters without loading TensorFlow (the simulated device, the runtime)."""
from __future__ import annotations

import numpy as np

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
PAD = 4  # pixels of zero padding before CIFAR's random crop


def normalize_np(x: np.ndarray) -> np.ndarray:
    """uint8 (or float 0..255) images -> float32 (x / 255 - MEAN) / STD, as the tf.data
    pipeline's `normalize`."""
    return ((x.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)
