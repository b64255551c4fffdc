"""Predicted latency of a plan on every runtime, the models of a run timed side by side, and
the predicted-vs-measured table that reports put next to the FLOPs reduction.

Side by side: every file once per round, the order rotating (`timing.time_interleaved`), so
the machine's drift between rounds cancels in the per-round ratios. Timed apart, minutes
from each other, one main-job run's float32 speed-up read 1.72x where side by side it was
1.45x."""
from __future__ import annotations

import os
from pathlib import Path

from tfprune.latency.runtimes import RUNTIMES, parse_runtime

def predict_plan(model, graph, plan: dict, runtimes=RUNTIMES, cache=None, log=print,
                 unpruned=None) -> dict:
    """{runtime: {"unpruned": ms, "pruned": ms}} predicted for `plan` applied to `model`;
    "unpruned" is `unpruned` whole when given (the model before a depth cut), else `model`."""
    from tfprune.core import graph as graph_mod
    from tfprune.core import plan as plan_mod
    from tfprune.latency.model import LatencyModel

    counts = plan_mod.kept_counts(plan)
    steps = {e["id"]: e.get("step", plan["round_to"] if isinstance(plan["round_to"], int)
                                 else 1) for e in plan["groups"]}
    out = {}
    for rt in runtimes:
        lm = LatencyModel(rt, cache, log)
        cost = lm.graph_cost(graph, steps, model)
        whole = cost
        if unpruned is not None:
            g = graph_mod.build_graph(unpruned)
            whole = lm.graph_cost(g, lm.auto_steps(g), unpruned)
        out[rt] = {"unpruned": round(whole.total({}), 5), "pruned": round(cost.total(counts), 5)}
    return out


# a run's LiteRT files by precision and role (run-dir relative); the shipped model's
# speed-up is against REFERENCE: the bar in float32, the 100-way original in int8 (the only
# unpruned int8 file a run writes)
SIDE_BY_SIDE = {"float32": {"original": "original/model_float32.tflite",
                            "bar": "original/restricted_float32.tflite",
                            "baseline": "l1/model_float32.tflite",
                            "shipped": "model_float32.tflite"},
                "int8": {"original": "original/model_int8.tflite",
                         "shipped": "model_int8.tflite"}}
REFERENCE = {"float32": "bar", "int8": "original"}


def time_run(run_dir, runtimes=RUNTIMES, rounds: int = 30, invokes: int = 10) -> dict:
    """{runtime: {"clock", "reference", "ms": {role: best round median}, "vs_shipped": {role:
    median of the per-round role / shipped ratios}, "speedup": vs_shipped[reference]}} of a run
    directory's LiteRT files (roles whose file is missing, e.g. no `l1` baseline, left out)."""
    from tfprune.latency import timing

    out = {}
    for rt in runtimes:
        r = parse_runtime(rt)
        blobs = {role: (Path(run_dir) / f).read_bytes()
                 for role, f in SIDE_BY_SIDE[r.precision].items() if (Path(run_dir) / f).exists()}
        per_round = timing.time_interleaved(blobs, r.threads, rounds, invokes)
        ratios = {k: round(timing.paired_ratio(per_round, k, "shipped"), 4) for k in blobs}
        out[rt] = {"clock": timing.clock_of(r.threads), "reference": REFERENCE[r.precision],
                   "ms": {k: round(min(v), 5) for k, v in per_round.items()},
                   "vs_shipped": ratios, "speedup": ratios[REFERENCE[r.precision]],
                   "load_average": round(os.getloadavg()[0], 2)}
    return out


def markdown(predicted: dict, measured: dict, macs_before: int, macs_after: int) -> list:
    """Lines of a table: per runtime, predicted and measured ms, unpruned and pruned, the
    measured speed-up and its ratio to the FLOPs (MACs) reduction; `measured` is `time_run`'s."""
    flops_x = macs_before / macs_after if macs_after else float("nan")
    lines = [f"FLOPs (MACs) reduction: {flops_x:.2f}x. Measured: the unpruned and pruned files "
             "side by side, every file once per round in rotating order; ms is the best "
             "round's median single-image invoke, the speed-up the median of the per-round "
             "ratios (1 thread: on the invoking thread's CPU clock, as the latency model times "
             "it, so waits for a core on a loaded machine are left out; 2 threads: wall time, "
             "which load inflates: the load average when timed is given). "
             "Unpruned: the restricted original in float32, the 100-way original in int8. "
             "Predicted: the latency model (tfprune.latency). Its tables keep the milliseconds "
             "of the day they were timed, and a (virtual) machine's speed drifts: the cut, "
             "predicted against measured side by side, is the error that does not drift.", "",
             "| runtime | predicted unpruned ms | measured unpruned ms | predicted pruned ms | "
             "measured pruned ms | prediction error (pruned ms) | predicted / measured cut | "
             "measured speed-up | speed-up / FLOPs reduction | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rt, p in predicted.items():
        m = measured.get(rt) or {}
        mu, mp = (m.get("ms") or {}).get(m.get("reference")), (m.get("ms") or {}).get("shipped")
        err = f"{p['pruned'] / mp - 1:+.1%}" if mp else "-"
        speed = m.get("speedup")
        cuts = (f"{1 - p['pruned'] / p['unpruned']:.1%} / {1 - 1 / speed:.1%}"
                if speed and p["unpruned"] else "-")
        lines.append(f"| {rt} | {p['unpruned']:.3f} | {mu or float('nan'):.3f} | "
                     f"{p['pruned']:.3f} | {mp or float('nan'):.3f} | {err} | {cuts} | "
                     f"{'-' if speed is None else f'{speed:.2f}x'} | "
                     f"{'-' if speed is None else f'{speed / flops_x:.2f}'} | "
                     f"{m.get('load_average', '-')} |")
    return lines
