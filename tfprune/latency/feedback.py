"""Measured feedback for `--target=latency`: make the plan, measure what it cuts, and re-plan
on a calibration through that measurement until the measured cut is the requested one.

The latency model predicts from blocks timed alone, calibrated on two whole models (the
unpruned one and a uniform half cut). A plan far from that reference can still miss: int8 on
2 threads cut MobileNetV2 and MobileNetV3Small 12-25% short of the request. As NetAdapt
measures its proposals, `fit_plan` converts the planned model the way it ships and times it
side by side with the unpruned one (`LatencyModel.measured_ratio`). If the measured cut is off
by more than TOLERANCE (relative), the prediction is recalibrated through the unpruned model
and this plan (`GraphCost.recalibrate`) and the level planned again, at most MAX_PLANS times.
The greedy order does not depend on the calibration's scale, so each re-plan walks the same
path to a point where the corrected prediction meets the level, or, when the correction puts
the level out of reach, to the highest level it can reach. No training in the loop.

The plan kept is the one measured closest to the request; it records every measured plan in
`plan["latency_feedback"]` (also the cost's `describe()["feedback"]`).
"""
from __future__ import annotations

TOLERANCE = 0.04
MAX_PLANS = 3


def _reachable(make, level: float) -> dict:
    """`make(level)`, or when the corrected prediction puts it out of reach, the plan of the
    highest level it reaches (the greedy may stop short of the floor's level: then once more)."""
    from tfprune.core import plan as plan_mod

    for _ in range(3):
        try:
            return make(level)
        except plan_mod.UnreachableLevel as err:
            if err.highest >= level:
                raise
            level = err.highest
    return make(level)


def fit_plan(cost, make, source, graph, level: float, log=None) -> dict:
    """`make(level)`'s plan, measured and re-planned on `cost` (a GraphCost with a measurer).
    `source` is the model the plans apply to (`graph` is its channel graph)."""
    from tfprune.core import plan as plan_mod
    from tfprune.core import surgery

    log = log or (lambda *_: None)
    tried = []
    plan = make(level)
    if level <= 0:  # nothing to cut: nothing to measure
        return plan
    for attempt in range(MAX_PLANS):
        counts = plan_mod.kept_counts(plan)
        pruned = surgery.apply_plan(source, plan, graph=graph)
        ratio = cost.measurer.measured_ratio(source, graph, pruned, counts)
        row = {"predicted_cut": round(plan["achieved"]["latency_level"], 4),
               "measured_cut": round(1.0 - ratio, 4)}
        tried.append((plan, row))
        log(f"latency: plan {attempt + 1}: predicted cut {row['predicted_cut']:.1%}, measured "
            f"{row['measured_cut']:.1%} (requested {level:.1%}, {cost.runtime})")
        if abs((1.0 - ratio) / level - 1.0) <= TOLERANCE or attempt == MAX_PLANS - 1:
            break
        if not cost.recalibrate(counts, ratio):
            break
        try:
            plan = _reachable(make, level)
        except plan_mod.PlanError as err:
            log(f"latency: re-planning stopped: {err}")
            break
        if plan_mod.kept_counts(plan) == counts:
            break
    plan, _ = min(tried, key=lambda t: abs(t[1]["measured_cut"] - level))
    cost.feedback = [row for _, row in tried]
    plan["latency_feedback"] = cost.feedback
    plan["runtime"]["feedback"] = cost.feedback
    return plan
