"""The `android-gpu` gate: the model runs through LiteRT's GPU accelerator, for real.

Android apps reach the GPU today through LiteRT's `CompiledModel` API and its GPU accelerator
(ML Drift). ai-edge-litert ships that accelerator for Linux as WebGPU on Vulkan, so with a
Vulkan driver (a real GPU's, or Mesa's software lavapipe) the same compiler and kernels run
here. The check (`check`) starts `tfprune.litert.gpu_run` in a subprocess with a timeout, and
reports
  * whether the model is fully accelerated, and which ops fall back to the CPU and why, in
    the accelerator's own words (its "not supported by GPU delegate" lines on stderr);
  * parity with the CPU run on the same inputs: real images when the model takes images
    (top-1 agreement and max |logit difference|), else seeded random inputs (relative error);
    the GPU computes in fp16, so the thresholds are fp16's, not float32's;
  * whether the run failed (accelerator error, crash, timeout).
It fails on a run failure or on parity, warns when ops fall back. Without a Vulkan device the
check is "not run", says so in one line, and does not pass.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


MIN_AGREEMENT = 0.97      # top-1 agreement with the CPU; fp16 flips near-ties
MAX_RELATIVE_DIFF = 0.05  # max |gpu - cpu| / max |cpu| per output
IMAGES = 64               # real images per check (lavapipe: ~0.5 s per ResNet-20 image)
TIMEOUT_S = 900
FP16_MAX = 65504.0
NO_DEVICE = ("No adapters found", "Found no drivers", "Failed to initialize WebGPU environment")
HOW_TO_GET = ("install a Vulkan driver, e.g. Mesa's lavapipe: apt-get install -t "
              "bookworm-backports mesa-vulkan-drivers")


def _inputs(path, images, count: int, seed: int) -> tuple[dict, str]:
    """The model's inputs: normalised real images when the model takes one image input of
    their size (quantised for an int8 input), else seeded random values; and what they are."""
    from ai_edge_litert.interpreter import Interpreter

    specs = [{"key": f"t{d['index']}", "shape": [int(s) for s in d["shape"]],
              "dtype": np.dtype(d["dtype"]).name, "scale": d["quantization"][0],
              "zero_point": d["quantization"][1]}
             for d in Interpreter(model_path=os.fspath(path)).get_input_details()]
    if images is not None and len(specs) == 1 and len(specs[0]["shape"]) == 4 \
            and tuple(specs[0]["shape"][1:]) == tuple(np.asarray(images.x).shape[1:]):
        from tfprune.data import normalize_np

        spec = specs[0]
        pick = np.linspace(0, len(images.x) - 1, min(count, len(images.x))).round().astype(int)
        x = normalize_np(np.asarray(images.x)[pick])
        if spec["dtype"] in ("int8", "uint8"):
            info = np.iinfo(spec["dtype"])
            x = np.clip(np.round(x / spec["scale"] + spec["zero_point"]), info.min, info.max)
        x = x.astype(spec["dtype"])[:, None]  # one batch-1 example per image
        return {spec["key"]: x}, f"{len(pick)} real images"
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape = (count, *spec["shape"])
        arrays[spec["key"]] = (rng.standard_normal(shape) if spec["dtype"].startswith("float")
                                else rng.integers(0, 8, shape)).astype(spec["dtype"])
    return arrays, f"{count} seeded random inputs (the model does not take the images)"


def _delegate_lines(stderr: str) -> tuple[list[dict], str | None, str | None]:
    """(ops the accelerator refuses, with its reason; its partition line; the adapter)."""
    fallback, partition = [], None
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "Following operations are not supported by GPU delegate" in line:
            for op_line in lines[i + 1:]:
                if re.match(r"^\d+ operations will run on the GPU", op_line):
                    partition = op_line.strip()
                    break
                name, _, why = op_line.partition(":")
                if why:
                    fallback.append({"name": name.strip(), "why": why.strip()})
    adapter = next((m.group(1).strip() for m in (re.search(r"Selected adapter: (.*)", ln)
                                                 for ln in lines) if m), None)
    return fallback, partition, adapter


def _parity(arrays: dict, real_images: bool, min_agreement: float,
            max_relative_diff: float) -> dict:
    outs = sorted(k.removeprefix("gpu/") for k in arrays if k.startswith("gpu/"))
    result = {"outputs": {}}
    problems = []
    for name in outs:
        gpu, cpu = arrays[f"gpu/{name}"].astype(np.float64), arrays[f"cpu/{name}"].astype(np.float64)
        diff = float(np.abs(gpu - cpu).max()) if gpu.size else 0.0
        scale = float(np.abs(cpu).max()) if cpu.size else 0.0
        rel = diff / scale if scale else diff
        entry = {"max_abs_diff": diff, "max_relative_diff": rel, "cpu_max_abs": scale,
                 "gpu_finite": bool(np.isfinite(gpu).all())}
        if not entry["gpu_finite"]:
            problems.append(f"output {name}: the GPU gave inf/NaN" + (
                f" (the CPU's values reach {scale:.3g}, beyond fp16's {FP16_MAX:g})"
                if scale > FP16_MAX else ""))
        if real_images and len(outs) == 1 and cpu.ndim == 2 and cpu.shape[1] > 1:
            agreement = float((gpu.argmax(1) == cpu.argmax(1)).mean())
            entry["top1_agreement"] = agreement
            result.update(top1_agreement=agreement, max_abs_logit_diff=diff)
            if agreement < min_agreement:
                problems.append(f"top-1 agreement with the CPU {agreement:.2%} < "
                                f"{min_agreement:.2%}")
        elif not np.isfinite(rel) or rel > max_relative_diff:
            problems.append(f"output {name}: max relative difference {rel:.3g} > "
                            f"{max_relative_diff}")
        result["outputs"][name] = entry
    result.update(passed=not problems, problems=problems)
    return result


def _child_env() -> dict:
    env = dict(os.environ)
    if not env.get("XDG_RUNTIME_DIR"):  # Mesa's Vulkan loader and Dawn expect one
        runtime = Path(tempfile.gettempdir()) / f"tfprune-xdg-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def check(path, images=None, *, count: int = IMAGES, seed: int = 0,
          min_agreement: float = MIN_AGREEMENT, max_relative_diff: float = MAX_RELATIVE_DIFF,
          timeout_s: float = TIMEOUT_S) -> dict:
    """The `android-gpu` check of the .tflite at `path` (see the module docstring); `images`:
    uint8 Images (with labels) for the parity run. `status` is "pass", "fail" or "not run"."""
    base = {"target": "android-gpu", "check": "run", "runtime": "LiteRT CompiledModel, GPU "
            "accelerator (ML Drift on WebGPU/Vulkan)", "thresholds": {
                "min_agreement": min_agreement, "max_relative_diff": max_relative_diff}}
    arrays, described = _inputs(path, images, count, seed)
    with tempfile.TemporaryDirectory(prefix="tfprune_gpu_") as work:
        ins, outs = Path(work) / "inputs.npz", Path(work) / "outputs.npz"
        np.savez(ins, **arrays)
        cmd = [sys.executable, "-m", "tfprune.litert.gpu_run", os.fspath(path), str(ins), str(outs)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env=_child_env())
        except subprocess.TimeoutExpired:
            return _finish(base, "fail", f"the GPU run did not finish within {timeout_s:.0f} s")
        fallback, partition, adapter = _delegate_lines(proc.stderr)
        base.update(adapter=adapter, inputs=described, fallback_ops=fallback,
                    partition=partition)
        if any(marker in proc.stderr for marker in NO_DEVICE):
            base["check"] = "not run"
            return _finish(base, "not run", f"not run: no Vulkan device for LiteRT's GPU "
                           f"accelerator ({HOW_TO_GET}, or a GPU driver)")
        messages = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not outs.exists():
            errors = [m["error"] for m in messages if "error" in m]
            said = " ".join(errors[-1].split()) if errors else "; ".join(
                ln.strip() for ln in proc.stderr.splitlines()
                if ln.startswith(("ERROR", "E0000", "F0000")))[-500:]
            how = (f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else
                   f"failed (exit {proc.returncode})")
            stage = "while running" if any(m.get("compiled") for m in messages) else \
                "while compiling"
            return _finish(base, "fail", f"GPU accelerator {how} {stage}: {said}")
        run = messages[-1]
        loaded = dict(np.load(outs))
    base.update(fully_accelerated=run["fully_accelerated"], examples=run["examples"],
                seconds={k: round(run[k], 3) for k in ("compile_s", "gpu_run_s", "cpu_run_s")})
    parity = base["parity"] = _parity(loaded, "real images" in described, min_agreement,
                                      max_relative_diff)
    if "top1_agreement" in parity:
        said = (f"top-1 agreement with the CPU {parity['top1_agreement']:.2%} on {described}, "
                f"max |logit diff| {parity['max_abs_logit_diff']:.3g}")
    else:
        said = "max relative difference " + ", ".join(
            f"{k} {v['max_relative_diff']:.2g}" for k, v in parity["outputs"].items()) + \
            f" on {described}"
    accel = ("fully accelerated" if run["fully_accelerated"] else
             "NOT fully accelerated, " + (partition or "some ops on the CPU") + "; falls back: "
             + "; ".join(f"{f['name']} ({f['why']})" for f in fallback))
    if not parity["passed"]:
        return _finish(base, "fail", f"{accel}; parity FAILED: " + "; ".join(parity["problems"]))
    if not run["fully_accelerated"]:
        base["warning"] = accel
    return _finish(base, "pass", f"ran on the GPU: {accel}; {said}")


def _finish(result: dict, status: str, summary: str) -> dict:
    return {**result, "status": status, "passed": status == "pass", "summary": summary}
