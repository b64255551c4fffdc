"""NumPy-only image constants, normalisation (the CIFAR-100 channel statistics) and CIFAR
augmentation, for code that feeds interpreters without loading TensorFlow (the simulated
device, the runtime). `tfprune.data.pipeline` is the tf.data twin of each."""
from __future__ import annotations

import numpy as np

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
PAD = 4  # pixels of zero padding before CIFAR's random crop


def normalize_np(x: np.ndarray) -> np.ndarray:
    """uint8 (or float 0..255) images -> float32 (x / 255 - MEAN) / STD, as the tf.data
    pipeline's `normalize`."""
    return ((x.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def augment_np(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A batch of uint8 images randomly cropped back to size after PAD-pixel zero padding and
    randomly flipped left-right, as the tf.data pipeline's `augment`."""
    n, h, w, _ = x.shape
    padded = np.pad(x, [(0, 0), (PAD, PAD), (PAD, PAD), (0, 0)])
    dy, dx = rng.integers(0, 2 * PAD + 1, n), rng.integers(0, 2 * PAD + 1, n)
    flip = rng.random(n) < 0.5
    out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip, :, ::-1]
    return out
