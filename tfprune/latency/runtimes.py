"""Runtime targets of the latency model: LiteRT float32 or full-int8, 1 or 2 threads, on the
machine it runs on (the CPU model and the LiteRT version go into every cache key)."""
from __future__ import annotations

import dataclasses
import functools
import os
import platform

from tfprune.errors import TfpruneError

RUNTIMES = ("litert-float32-1t", "litert-float32-2t", "litert-int8-1t", "litert-int8-2t")
DEFAULT = "litert-float32-1t"   # what the main job ships (float32 bundle) and reports first


class LatencyError(TfpruneError):
    """A runtime, cache or model the latency model cannot take; the message says which."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str
    precision: str     # float32 | int8 (tfprune.litert.convert modes)
    threads: int


def parse_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise LatencyError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    _, precision, threads = name.split("-")
    return Runtime(name, precision, int(threads[:-1]))


def parse_round_to(value):
    """A round_to value: "auto" or a positive integer; LatencyError otherwise."""
    if str(value) == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise LatencyError(f"round_to must be auto or a positive integer, got {value!r}")
    return n


SIMD_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve"}


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """What the measurements depend on besides the block: LiteRT version and the CPU."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = {}
            for ln in f:
                if not ln.strip():
                    break  # the first processor's block
                key, _, value = ln.partition(":")
                info[key.strip()] = value.strip()
        # a virtual machine's model name ("AMD EPYC") hides the generation, whose kernels
        # differ (int8 ran 10x faster on one EPYC than another): family/model and SIMD too
        simd = sorted(set(info.get("flags", "").split()) & SIMD_FLAGS)
        cpu = (f"{info.get('model name', cpu)} (family {info.get('cpu family', '?')}, model "
               f"{info.get('model', '?')}; {' '.join(simd) or 'no avx'})")
    except OSError:
        pass
    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert = "unknown"
    return {"litert": litert, "cpu": cpu, "cores": os.cpu_count()}
