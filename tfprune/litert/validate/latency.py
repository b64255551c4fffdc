"""Single-image LiteRT latency: median and p90 over repeated invokes, per thread count."""
from __future__ import annotations

import time

import numpy as np

from tfprune import litert
from tfprune.errors import TfpruneError


def invoke_times(interp, runs: int) -> dict:
    """{clock: [ms]} of `runs` successive `interp.invoke()` calls on its current input, on
    two clocks: `wall` and `thread_cpu` (the calling thread's CPU time: the whole invoke with
    1 thread, where LiteRT runs it on the calling thread; the time it would take on an idle
    core, not counting waits for a core on a loaded machine)."""
    cpu, wall = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        interp.invoke()
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        wall.append((time.perf_counter_ns() - w0) / 1e6)
    return {"thread_cpu": cpu, "wall": wall}


def invoke_times_ms(interp, runs: int) -> list[float]:
    """Wall time of `runs` successive `interp.invoke()` calls on its current input, in ms."""
    return invoke_times(interp, runs)["wall"]


def measure(source, threads=(1, 2), runs: int = 50, warmup: int = 5,
            image: np.ndarray | None = None) -> dict:
    """{threads: {median_ms, p90_ms, min_ms, runs}} timing `invoke` alone on one input
    (`image`: a normalised float batch; zeros of the input shape by default), on wall time;
    1 thread also gets `cpu_median_ms`, the median on the thread's CPU clock (see
    `invoke_times`), which load on a shared machine does not inflate."""
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
        clocks = invoke_times(interp, runs)
        times = clocks["wall"]
        out[str(n)] = {"median_ms": float(np.median(times)),
                       "p90_ms": float(np.percentile(times, 90)),
                       "min_ms": float(np.min(times)), "runs": runs}
        if int(n) == 1:
            out[str(n)]["cpu_median_ms"] = float(np.median(clocks["thread_cpu"]))
    return out
