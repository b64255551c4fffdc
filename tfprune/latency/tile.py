"""The channel tile of a runtime's conv kernels, read from a probe's timings.

The probe times a 3x3 conv with c input and c output channels at c = 16, 20, ..., 64. A
kernel that works in tiles of m channels pads the channels it tiles up to a multiple of m,
so its time is a staircase in c: a + b*c*pad(c) when it tiles output channels only (XNNPACK
float32), a + d*pad(c)^2 when it tiles both (int8). `choose_tile` fits
a + b*c*pad_m(c) + d*pad_m(c)^2 for every candidate m by least squares on relative error
and takes the smallest m whose median relative residual is within `TOLERANCE` of the best
fit. m = 4 pads nothing at these counts: it is the smooth, untiled model.

Comparing mean throughput at multiples of m instead favours large m on 2 threads, where
throughput grows with size alone (32 and 64 against 16..64).
"""
from __future__ import annotations

import numpy as np

CANDIDATES = (4, 8, 16, 32)
CHANNELS = tuple(range(16, 65, 4))
TOLERANCE = 0.01     # median relative residual: 1% of the time
CLEAN_FIT = 0.03     # a best fit worse than this is re-timed (`LatencyModel.tile`)


def residuals(channels, ms) -> dict:
    """{m: median |fit - ms| / ms} of the staircase fit for every candidate tile m."""
    c, ms = np.asarray(channels, float), np.asarray(ms, float)
    if len(c) < 4 or np.any(ms <= 0):
        raise ValueError("the tile probe needs at least 4 positive timings")
    out = {}
    for m in CANDIDATES:
        pad = np.ceil(c / m) * m
        x = np.stack([np.ones_like(c), c * pad, pad * pad], axis=1)
        coef, *_ = np.linalg.lstsq(x / ms[:, None], np.ones_like(ms), rcond=None)
        out[m] = float(np.median(np.abs(x @ coef - ms) / ms))
    return out


def choose_tile(channels, ms) -> tuple[int, dict]:
    """(tile, residuals): the smallest candidate whose fit is within TOLERANCE of the best."""
    res = residuals(channels, ms)
    best = min(res.values())
    return min(m for m in CANDIDATES if res[m] <= best + TOLERANCE), res
