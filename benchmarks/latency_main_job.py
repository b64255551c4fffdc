"""The `--main_job=RUN_DIR` run of benchmarks/latency.py: the main job's speed-up, measured
side by side, against its FLOPs reduction (issue #16's goal: speed-up >= 0.9 of it).

A main-job run directory (`python -m pipelines.run --output=RUN_DIR`) holds the unpruned
model as shipped without us (`original/`: the 100-way model; `original/restricted_float32`:
its logits restricted to the subset, what the shipped subset head is compared with) and the
pruned, fine-tuned model (`model_float32.tflite`, `model_int8.tflite`). For each precision and
thread count, the unpruned and pruned files are timed in interleaved rounds
(`tfprune.latency.timing.time_interleaved`: 1 thread on the invoking thread's CPU clock, 2
threads on the wall clock); latency is the best round median and the speed-up is the median
of the per-round ratios. MACs are counted from the LiteRT files themselves, so the FLOPs
reduction and the speed-up describe the same two graphs. The run's own predicted latencies
(plan.json) stand beside the measurements.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

GOAL = 0.9
PAIRS = {  # precision: (unpruned file, pruned file), relative to the run directory
    "float32": ("original/restricted_float32.tflite", "model_float32.tflite"),
    "int8": ("original/model_int8.tflite", "model_int8.tflite"),
}


def run(run_dir: Path, threads: list[int], rounds: int, invokes: int, log=print) -> dict:
    from tfprune import litert
    from tfprune.latency import timing

    run_dir = Path(run_dir)
    missing = [str(run_dir / f) for pair in PAIRS.values() for f in pair
               if not (run_dir / f).exists()]
    if missing:
        raise SystemExit(f"latency: --main_job {run_dir} is not a finished main-job run "
                         f"({missing[0]} is missing)")
    plan = json.loads((run_dir / "plan.json").read_text())
    rows = []
    for precision, (unpruned, pruned) in PAIRS.items():
        blobs = {"unpruned": (run_dir / unpruned).read_bytes(),
                 "pruned": (run_dir / pruned).read_bytes()}
        macs = {k: sum(op.macs for op in litert.inspect(b).ops) for k, b in blobs.items()}
        for n in threads:
            log(f"latency: main job {precision}, {n} thread(s): timing side by side")
            wall: dict = {}
            per_round = timing.time_interleaved(blobs, n, rounds, invokes, wall=wall)
            ratios = [u / p for u, p in zip(per_round["unpruned"], per_round["pruned"])]
            speedup = statistics.median(ratios)
            flops_x = macs["unpruned"] / macs["pruned"]
            rows.append({
                "precision": precision, "threads": n, "clock": timing.clock_of(n),
                "unpruned_file": unpruned, "pruned_file": pruned,
                "macs_unpruned": macs["unpruned"], "macs_pruned": macs["pruned"],
                "flops_reduction": round(flops_x, 4),
                "unpruned_ms": round(min(per_round["unpruned"]), 4),
                "pruned_ms": round(min(per_round["pruned"]), 4),
                "speedup": round(speedup, 4),
                "speedup_range": [round(min(ratios), 4), round(max(ratios), 4)],
                "efficiency": round(speedup / flops_x, 4),
                "wall_unpruned_ms": round(min(wall["unpruned"]), 4),
                "wall_pruned_ms": round(min(wall["pruned"]), 4),
                "load_average": round(os.getloadavg()[0], 2)})
            log(f"  x{speedup:.2f} for FLOPs x{flops_x:.2f}: {speedup / flops_x:.2f} of it")
    return {"benchmark": "latency of the main job", "run_dir": str(run_dir),
            "goal_efficiency": GOAL, "rounds": rounds, "invokes": invokes,
            "plan_target": plan.get("target"), "plan_level": plan.get("level"),
            "plan_runtime": (plan.get("runtime") or {}).get("runtime"),
            "predicted_ms": _predicted(run_dir, plan),
            "depth": plan.get("depth"), "rows": rows}


def _predicted(run_dir: Path, plan: dict):
    """The run's prediction on the plan's runtime, from the model before any depth cut
    (pruned.json), else the plan's own (which counts from the model the channels were cut on)."""
    pruned = run_dir / "pruned.json"
    runtime = (plan.get("runtime") or {}).get("runtime")
    if pruned.exists():
        per_runtime = json.loads(pruned.read_text()).get("predicted_latency_ms") or {}
        if runtime in per_runtime:
            return per_runtime[runtime]
    return plan.get("predicted_latency_ms")


def markdown(result: dict) -> str:
    lines = ["# The main job's speed-up against its FLOPs reduction (issue #16)", "",
             f"Run `{result['run_dir']}` (pruned for {result['plan_target']} at level "
             f"{result['plan_level']} on {result['plan_runtime']}"
             + (f", after removing residual branches {', '.join(result['depth']['removed'])}"
                if (result.get("depth") or {}).get("removed") else "")
             + "). Unpruned and pruned LiteRT "
             f"files timed side by side in {result['rounds']} interleaved rounds of "
             f"{result['invokes']} invokes; 1 thread on the invoking thread's CPU clock, 2 "
             "threads on the wall clock (load inflates it: the load average is given). "
             "Speed-up: median of the per-round ratios (range beside it). Generated by "
             "`benchmarks/latency.py --main_job` (benchmarks/latency_main_job.py).", "",
             "| precision | threads | clock | unpruned ms | pruned ms | measured speed-up "
             "(range) | FLOPs reduction | speed-up / FLOPs | goal >= 0.9 | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lo, hi = r["speedup_range"]
        lines.append(f"| {r['precision']} | {r['threads']} | {r['clock']} | "
                     f"{r['unpruned_ms']:.3f} | {r['pruned_ms']:.3f} | x{r['speedup']:.2f} "
                     f"({lo:.2f}-{hi:.2f}) | x{r['flops_reduction']:.2f} | "
                     f"{r['efficiency']:.2f} | "
                     f"{'met' if r['efficiency'] >= result['goal_efficiency'] else 'NOT met'} "
                     f"| {r['load_average']} |")
    if result.get("predicted_ms"):
        p = result["predicted_ms"]
        lines += ["", f"The plan's prediction on {result['plan_runtime']}: {p['unpruned']:.3f} "
                  f"ms unpruned, {p['pruned']:.3f} ms pruned (x{p['unpruned'] / p['pruned']:.2f})."]
    return "\n".join(lines) + "\n"
