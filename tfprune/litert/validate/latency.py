"""Single-image LiteRT latency: median and p90 over repeated invokes, per thread count."""
from __future__ import annotations

import time

import numpy as np

from tfprune import litert
from tfprune.errors import TfpruneError


def invoke_times_ms(interp, runs: int) -> list[float]:
    """Wall time of `runs` successive `interp.invoke()` calls on its current input, in ms."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure(source, threads=(1, 2), runs: int = 50, warmup: int = 5,
            image: np.ndarray | None = None) -> dict:
    """{threads: {median_ms, p90_ms, min_ms, runs}} timing `invoke` alone on one input
    (`image`: a normalised float batch; zeros of the input shape by default)."""
    if runs < 1:
        raise TfpruneError(f"latency runs must be >= 1, got {runs}")
    out = {}
    for n in threads:
        interp = litert.load_interpreter(source, num_threads=int(n))
        detail = interp.get_input_details()[0]
        x = np.zeros(detail["shape"], np.float32) if image is None else image
        litert.run(interp, x)  # sets the (quantised) input once; invokes below reuse it
        for _ in range(warmup):
            interp.invoke()
        times = invoke_times_ms(interp, runs)
        out[str(n)] = {"median_ms": float(np.median(times)),
                       "p90_ms": float(np.percentile(times, 90)),
                       "min_ms": float(np.min(times)), "runs": runs}
    return out
