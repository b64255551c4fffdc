"""The `--target_grid` run of benchmarks/latency.py: pruning to a requested cut of predicted
LiteRT latency (`--target=latency`, round_to=auto), then measuring what was cut.

For each model and runtime (float32/int8 x 1/2 threads) the latency model of the runtime is
built (or read from the cache) and the model is pruned (l1 scores, random weights: latency does
not depend on their values) to each requested cut. Each pruned model and the unpruned one are
converted the shipped way (`tfprune.litert.convert`, static batch 1) and timed side by side in
interleaved rounds at the runtime's thread count; a model's latency is its best round median,
and the paired per-round ratio pruned/unpruned gives the measured cut (median over rounds;
its spread over rounds is the noise reported). Prediction error = predicted / measured - 1.
Clock: 1-thread runtimes are timed by the invoking thread's CPU clock, 2-thread runtimes by
wall time (`tfprune.latency.timing.clock_of`); the wall-clock medians of the same invokes are
recorded beside them, and the load average when each runtime was timed.
"""
from __future__ import annotations

import os
import statistics
import time


def build_model(name: str):
    import keras

    from tfprune.models import zoo

    keras.utils.set_random_seed(0)
    if name == "mobilenetv3small_96":
        return keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
                                                   classes=100)
    return zoo.build(name)


def _depth_plan(model, cut, rt_name, cache, feedback, log):
    """(pruned model, plan, predicted cut, predicted ms) of `--blocks=auto` without data: the
    fewest residual branches (by bn_gamma) whose channel plan reaches `cut`; the prediction is
    the whole model's, before the branches went."""
    from tfprune import latency, pruner
    from tfprune.latency.report import predict_plan

    res = pruner.prune_model(model, "l1", cut, "latency", blocks="auto", feedback=feedback,
                             terms=lambda m: latency.plan_terms(m, "latency", "auto", rt_name,
                                                                cache=cache, log=log), log=log)
    ms = predict_plan(res.source, res.graph, res.plan, [rt_name], cache, log,
                      unpruned=model)[rt_name]
    return res.pruned, res.plan, 1 - ms["pruned"] / ms["unpruned"], ms["pruned"]


def run_model(name, runtimes, cuts, cache, rounds, invokes, feedback=True,
              log=print, blocks="0") -> list:
    import numpy as np

    from tfprune import scoring
    from tfprune.core import graph as graph_mod
    from tfprune.core import plan as plan_mod
    from tfprune.core import surgery
    from tfprune.latency import parse_runtime, timing
    from tfprune.latency.model import LatencyModel
    from tfprune.litert import convert

    model = build_model(name)
    g = graph_mod.build_graph(model)
    scores = scoring.compute_scores("l1", model, g)
    shape = tuple(model.inputs[0].shape[1:])
    calibration = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    blobs, rows = {}, []
    for rt_name in runtimes:
        rt = parse_runtime(rt_name)
        start = time.time()
        lm = LatencyModel(rt_name, cache, log)
        steps = lm.auto_steps(g)
        cost = lm.graph_cost(g, steps, model)
        build_s = time.time() - start
        if ("unpruned", rt.precision) not in blobs:
            blobs["unpruned", rt.precision] = convert.convert(model, rt.precision,
                                                              calibration=calibration)
        variants, plans = {"unpruned": blobs["unpruned", rt.precision]}, {}
        for cut in cuts:
            cost.reset()  # every cut starts from the build's calibration

            def make(level):
                return plan_mod.make_plan(g, scores, level, "latency", "global", steps,
                                          criterion="l1", cost=cost)
            try:
                if blocks == "auto":
                    pruned, p, predicted_cut, predicted_ms = _depth_plan(
                        model, cut, rt_name, cache, feedback, log)
                else:
                    p = cost.fit(make, model, g, cut, log) if feedback else make(cut)
                    pruned = surgery.apply_plan(model, p, graph=g)
                    predicted_cut = p["achieved"]["latency_level"]
                    predicted_ms = p["predicted_latency_ms"]["pruned"]
            except plan_mod.PlanError as err:
                rows.append({"model": name, "runtime": rt_name, "requested_cut": cut,
                             "error": str(err)})
                continue
            variants[cut] = convert.convert(pruned, rt.precision, calibration=calibration)
            plans[cut] = p, predicted_cut, predicted_ms
        log(f"latency_target: {name} {rt_name}: timing {len(variants)} models "
            f"(model built in {build_s / 60:.1f} min)")
        wall, load = {}, os.getloadavg()[0]
        per_round = timing.time_interleaved(variants, rt.threads, rounds, invokes, wall=wall)
        load = round(max(load, os.getloadavg()[0]), 2)
        base = min(per_round["unpruned"])
        rows.append({"model": name, "runtime": rt_name, "requested_cut": 0.0,
                     "clock": timing.clock_of(rt.threads), "load_average_1min": load,
                     "predicted_ms": round(cost.total({}), 4), "measured_ms": round(base, 4),
                     "prediction_error": round(cost.total({}) / base - 1, 4),
                     "round_medians_ms": [round(v, 4) for v in per_round["unpruned"]],
                     "wall_round_medians_ms": [round(v, 4) for v in wall["unpruned"]],
                     "calibration": cost.describe(),
                     "tile": cost.tile, "build_min": round(build_s / 60, 2)})
        from tfprune.litert import inspect
        macs0 = sum(op.macs for op in inspect(variants["unpruned"]).ops)
        for cut, (p, predicted_cut, predicted) in plans.items():
            best = min(per_round[cut])
            ratios = [v / u for u, v in zip(per_round["unpruned"], per_round[cut])]
            wall_ratios = [v / u for u, v in zip(wall["unpruned"], wall[cut])]
            macs = sum(op.macs for op in inspect(variants[cut]).ops)
            measured_cut = 1 - statistics.median(ratios)
            rows.append({
                "model": name, "runtime": rt_name, "requested_cut": cut,
                "branches_removed": p.get("depth", {}).get("removed", []),
                "predicted_cut": round(predicted_cut, 4),
                "measured_cut": round(measured_cut, 4),
                "measured_cut_best": round(1 - best / base, 4),
                "cut_rounds_min_max": [round(1 - max(ratios), 4), round(1 - min(ratios), 4)],
                "cut_relative_error": round(measured_cut / cut - 1, 4),
                "measured_cut_wall": round(1 - statistics.median(wall_ratios), 4),
                "wall_round_medians_ms": [round(v, 4) for v in wall[cut]],
                "clock": timing.clock_of(rt.threads), "load_average_1min": load,
                "predicted_ms": round(predicted, 4), "measured_ms": round(best, 4),
                "prediction_error": round(predicted / best - 1, 4),
                "flops_reduction": round(macs0 / macs, 4),
                "speedup": round(base / best, 4),
                "efficiency": round(base / best / (macs0 / macs), 4),
                "params_level": p["achieved"]["params_level"],
                "feedback": p.get("latency_feedback", []),
                "kept": {e["members"][0]: len(e["kept"]) for e in p["groups"]}})
            r = rows[-1]
            log(f"  cut {cut:.0%}: predicted {r['predicted_cut']:.1%}, measured "
                f"{r['measured_cut']:.1%} (rounds {r['cut_rounds_min_max']}), pred err "
                f"{r['prediction_error']:+.1%}, speed-up {r['speedup']:.2f}x for FLOPs "
                f"{r['flops_reduction']:.2f}x")
    return rows


def _side_by_side(r) -> float:
    return (1 - r["predicted_cut"]) / (1 - r["measured_cut"]) - 1


def _why(r) -> str:
    """Why a pruned row misses a goal, from its own numbers."""
    out = []
    if abs(r["predicted_cut"] / r["requested_cut"] - 1) > 0.1:
        out.append(f"plan predicted {r['predicted_cut']:.0%} (channel steps too coarse)")
    if abs(r["prediction_error"]) > 0.1:
        out.append(f"prediction {r['prediction_error']:+.0%} ({_side_by_side(r):+.0%} side "
                   "by side)")
    lo, hi = r["cut_rounds_min_max"]
    if hi - lo > 0.2:
        out.append(f"rounds spread {lo:.0%}..{hi:.0%}")
    return "; ".join(out)


def _summary(rows, refused, label) -> list:
    cut = [abs(r["cut_relative_error"]) <= 0.1 for r in rows]
    pred = [abs(r["prediction_error"]) <= 0.1 for r in rows]
    side = [abs(_side_by_side(r)) <= 0.1 for r in rows]
    n = len(rows) + len(refused)
    if not n:
        return []
    med = statistics.median(abs(r["prediction_error"]) for r in rows) if rows else float("nan")
    med_side = statistics.median(abs(_side_by_side(r)) for r in rows) if rows else float("nan")
    return [f"| {label} | {n} | {len(refused)} | {sum(cut)}/{n} | {sum(pred)}/{len(rows)} "
            f"({med:.1%}) | {sum(side)}/{len(rows)} ({med_side:.1%}) |"]


def markdown(result) -> str:
    rows = [r for r in result["rows"] if "error" not in r]
    refused = [r for r in result["rows"] if "error" in r]
    pruned = [r for r in rows if r["requested_cut"]]
    lines = ["# Pruning to a requested cut of LiteRT latency (`--target=latency`)", "",
             "Random weights, l1 scores, round_to=auto, "
             + ("`--blocks=auto` (the fewest residual branches, by bn_gamma, whose channel plan "
                "reaches the cut; `-N branches` beside the model; the one-shot and feedback "
                "columns are the channel plan's, on the model without them), "
                if result.get("blocks") == "auto" else "")
             + ("measured feedback (`tfprune.latency.feedback`: the plan's model is timed side "
                "by side with the unpruned one when planning, and re-planned on a calibration "
                "through that measurement while the cut is more than 4% off, at most 3 plans; "
                "`plans` counts them, `one shot` gives the first plan's predicted and measured "
                "cut). " if result.get("feedback") else "one shot. ")
             + f"Timing: {result['rounds']} "
             f"interleaved rounds of {result['invokes']} invokes; measured cut = 1 - median over "
             "rounds of the paired ratio pruned/unpruned (min..max over rounds shown as noise); "
             "prediction error = predicted ms / measured ms (best round median) - 1, the "
             "prediction calibrated on the unpruned model timed when the latency model was "
             "built; `side by side` is the same prediction rescaled to the unpruned model "
             "timed in the same rounds, (1 - predicted cut) / (1 - measured cut) - 1, which "
             "leaves out the drift of the machine's speed between the build and the "
             "benchmark. Goals: measured cut within 10% (relative) of the request, prediction "
             "error within 10%.", "",
             "Clock: 1-thread runtimes are timed on the invoking thread's CPU clock (the "
             "invoke's time when it has the core: LiteRT runs a 1-thread invoke on the calling "
             "thread), 2-thread runtimes on wall time, which on this shared 2-core machine "
             "includes waiting for the second core; `wall cut` is the cut on wall time of the "
             "same invokes. `load` is the 1-minute load average while the runtime was timed.",
             "",
             "| model | runtime | requested | one shot: predicted / measured | plans "
             "| predicted cut | measured cut (rounds) | relative "
             "| wall cut | predicted ms | measured ms | pred. error | side by side | FLOPs x | "
             "speed-up | speed-up / FLOPs x | load | misses because |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["requested_cut"] == 0:
            lines.append(f"| {r['model']} | {r['runtime']} | unpruned (tile {r['tile']}, "
                         f"built {r['build_min']:.1f} min) | | | | | | | {r['predicted_ms']:.3f} | "
                         f"{r['measured_ms']:.3f} | {r['prediction_error']:+.1%} | | | | | "
                         f"{r.get('load_average_1min', '-')} | |")
            continue
        lo, hi = r["cut_rounds_min_max"]
        wall = r.get("measured_cut_wall")
        fb = r.get("feedback") or []
        first = (f"{fb[0]['predicted_cut']:.1%} / {fb[0]['measured_cut']:.1%}" if fb else "-")
        gone = len(r.get("branches_removed", []))
        lines.append(
            f"| {r['model']}" + (f" -{gone} branches" if gone else "")
            + f" | {r['runtime']} | {r['requested_cut']:.0%} | {first} | "
            f"{len(fb) or 1} | {r['predicted_cut']:.1%} | {r['measured_cut']:.1%} ({lo:.0%}..{hi:.0%}) | "
            f"{r['cut_relative_error']:+.1%} | {'-' if wall is None else f'{wall:.1%}'} | "
            f"{r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | {r['prediction_error']:+.1%} | "
            f"{_side_by_side(r):+.1%} | {r['flops_reduction']:.2f} | {r['speedup']:.2f} | {r['efficiency']:.2f} | "
            f"{r.get('load_average_1min', '-')} | {_why(r)} |")
    if refused:
        lines += ["", "Refused (unreachable) cuts (each counts as a miss of the cut goal):", ""]
        lines += [f"- {r['model']} {r['runtime']} {r['requested_cut']:.0%}: {r['error']}"
                  for r in refused]
    if pruned or refused:
        lines += ["", "## Summary per goal", "",
                  "| runtimes | requested cuts | refused | measured cut within 10% | prediction "
                  "error within 10% (median abs.) | side by side within 10% (median abs.) |",
                  "|---|---|---|---|---|---|"]
        groups = [("all", lambda r: True), ("1 thread", lambda r: r["runtime"].endswith("1t")),
                  ("2 threads", lambda r: r["runtime"].endswith("2t"))]
        groups += [(rt, lambda r, rt=rt: r["runtime"] == rt)
                   for rt in sorted({r["runtime"] for r in pruned + refused})]
        groups += [(m, lambda r, m=m: r["model"] == m)
                   for m in sorted({r["model"] for r in pruned + refused})]
        for label, keep in groups:
            lines += _summary([r for r in pruned if keep(r)], [r for r in refused if keep(r)],
                              label)
    return "\n".join(lines) + "\n"
