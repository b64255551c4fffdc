"""Predicted latency of a plan on every runtime, and the predicted-vs-measured table that
reports put next to the FLOPs reduction."""
from __future__ import annotations

from tfprune.latency.runtimes import RUNTIMES

# runtime -> (LiteRT file the main job writes, threads key of its latency record)
FILES = {"litert-float32-1t": ("model_float32.tflite", "1"),
         "litert-float32-2t": ("model_float32.tflite", "2"),
         "litert-int8-1t": ("model_int8.tflite", "1"),
         "litert-int8-2t": ("model_int8.tflite", "2")}


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


def _measured(rows: dict, runtime: str):
    name, threads = FILES[runtime]
    latency = (rows.get(name) or {}).get("latency") or {}
    entry = latency.get(threads) or {}
    return entry.get("cpu_median_ms", entry.get("median_ms"))  # the latency model's clock


def markdown(predicted: dict, tflite: dict, original_tflite: dict, macs_before: int,
             macs_after: int) -> list:
    """Lines of a table: per runtime, predicted and measured ms, unpruned and pruned, the
    measured speed-up and its ratio to the FLOPs (MACs) reduction."""
    flops_x = macs_before / macs_after if macs_after else float("nan")
    lines = [f"FLOPs (MACs) reduction: {flops_x:.2f}x. Measured: the validation gate's median "
             "single-image invoke (1 thread: on the invoking thread's CPU clock, as the "
             "latency model times it, so waits for a core on a loaded machine are left out; "
             "2 threads: wall time); predicted: the latency model (tfprune.latency).", "",
             "| runtime | predicted unpruned ms | measured unpruned ms | predicted pruned ms | "
             "measured pruned ms | prediction error (pruned) | measured speed-up | "
             "speed-up / FLOPs reduction |", "|---|---|---|---|---|---|---|---|"]
    for rt, p in predicted.items():
        mu, mp = _measured(original_tflite, rt), _measured(tflite, rt)
        err = f"{p['pruned'] / mp - 1:+.1%}" if mp else "-"
        speed = mu / mp if mu and mp else None
        lines.append(f"| {rt} | {p['unpruned']:.3f} | {mu or float('nan'):.3f} | "
                     f"{p['pruned']:.3f} | {mp or float('nan'):.3f} | {err} | "
                     f"{'-' if speed is None else f'{speed:.2f}x'} | "
                     f"{'-' if speed is None else f'{speed / flops_x:.2f}'} |")
    return lines
