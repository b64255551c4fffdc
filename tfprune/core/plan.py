"""Prune plans: which channels of which group to keep, chosen to meet a target, as JSON data.

`make_plan(graph, scores, level, target="params", allocation="global", round_to=1,
min_channels=2, criterion=None, normalizer="mean", seed=None, cost=None)` returns a plain dict:

- `level` is the fraction in [0, 1) of the whole model's `target` measure to remove:
  `params` (all weights, the paper's pruning level), `flops` (multiply-accumulates),
  `filters` (output channels of producers in prunable groups: the blocked model output and
  `ignore`d layers are left out of the count, the plan's `denominator` says what was counted)
  or `latency` (the predicted latency of `cost`, e.g. `tfprune.latency.model.GraphCost`).
  A level no plan can reach raises PlanError naming the highest reachable level; a level
  within reach but missed by the rounding steps is reported in `achieved` and a note.
- `global`: one ranking of all channels of all prunable groups by their group scores
  (`tfprune.core.group_scores`, normalised per group); the lowest are removed until the
  target is met; with round_to steps, single-step group reductions then land it closer to
  the level (the ranking's levels jump a whole step at a time). For `latency` the ranking is
  greedy by importance lost per predicted millisecond saved: each step takes the group
  reduction (to one of its allowed counts) with the lowest sum of removed scores per ms, a
  group channel's score counted once per member filter it removes (a residual stream's
  channel is a filter in every block it ties: averaged, it looked as cheap as one filter).
  `uniform`: the same fraction removed from every prunable group.
- every group keeps at least `min_channels` channels, and a multiple of `round_to` (or all);
  `round_to` is an int or {group id: step} (`round_to=auto`, resolved by the caller).
- `cost` (an object with `total(counts)`, `delta(counts, gid, new)` and `describe()`, counts
  being {group id: kept channels}) makes the plan record the runtime and the predicted
  latency before and after.

The plan holds the model fingerprint (architecture hash; `check_plan` refuses another model),
the kept channel indices per group and the kept input/output indices per changed layer, the
blocked groups with the layers that blocked them, and counts before and after.
"""
from __future__ import annotations

import json

import numpy as np

from tfprune.core.group_scores import group_scores
from tfprune.errors import TfpruneError

FORMAT = "tfprune.core.plan/1"
TARGETS = ("params", "flops", "filters", "latency")
ALLOCATIONS = ("global", "uniform")
_MEASURE = {"params": "params", "flops": "macs", "filters": "prunable_filters"}


class PlanError(TfpruneError):
    """A plan that cannot be made or applied; the message says why."""


class UnreachableLevel(PlanError):
    """A level no plan can reach; `highest` is the highest level that can be."""

    def __init__(self, message: str, highest: float):
        super().__init__(message)
        self.highest = highest


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 <= level < 1.0 or not np.isfinite(level):
        raise PlanError(f"pruning level {level} is outside [0, 1): it is the fraction of the "
                        "model to remove")
    return level


def _allowed(want: np.ndarray, sizes: np.ndarray, steps: np.ndarray, min_channels: int):
    keep = np.maximum(want, min_channels)
    keep = -(-keep // steps) * steps
    return np.minimum(keep, sizes)


def _top(order: np.ndarray, keep: int, blocks: int) -> np.ndarray:
    """The `keep` best channels (`order` ascending by score); with blocks > 1, keep/blocks
    from each contiguous block of channels."""
    if blocks == 1:
        return np.sort(order[len(order) - keep:])
    per, width = keep // blocks, len(order) // blocks
    out = []
    for j in range(blocks):
        in_block = order[(order >= j * width) & (order < (j + 1) * width)]
        out.extend(in_block[len(in_block) - per:] if per else [])
    return np.sort(np.asarray(out, dtype=np.int64))


def _counts(graph, keep=None) -> dict:
    """graph.counts plus `prunable_filters`: filters of producers in prunable groups."""
    out = graph.counts(keep)
    keep = np.ones(len(graph.atom_group), dtype=bool) if keep is None else keep
    out["prunable_filters"] = int(sum(keep[slice(*_span(graph.producers[m]))].sum()
                                      for g in graph.prunable_groups() for m in g.members))
    return out


def _span(producer):
    start, n = producer
    return start, start + n


def _steps(groups, round_to) -> np.ndarray:
    per = [round_to.get(g.id, 1) if isinstance(round_to, dict) else round_to for g in groups]
    if min(per) < 1:
        raise PlanError("round_to and min_channels must be at least 1")
    return np.array([np.lcm(int(r), g.blocks) for r, g in zip(per, groups)])


def _groups(graph, target, allocation, round_to, min_channels, cost) -> list:
    """The groups a plan can shrink, after checking the plan's options."""
    if target not in TARGETS:
        raise PlanError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if allocation not in ALLOCATIONS:
        raise PlanError(f"unknown allocation {allocation!r}; choose {', '.join(ALLOCATIONS)}")
    if target == "latency" and cost is None:
        raise PlanError("target latency needs a latency model of the runtime (cost)")
    if (not isinstance(round_to, dict) and round_to < 1) or min_channels < 1:
        raise PlanError("round_to and min_channels must be at least 1")
    groups = [g for g in graph.prunable_groups() if g.size > min_channels]
    if not groups:
        reasons = "; ".join(f"{', '.join(b['members'][:3])}: " + ", ".join(
            f"{x['layer']} ({x['reason']})" for x in b["blocked_by"][:2])
            for b in graph.describe_blocked()[:5])
        raise PlanError(f"nothing is prunable in model {graph.spec.name!r}: {reasons or 'no filters'}")
    return groups


def _reached(graph, groups, target, cost, keeps_for):
    """level(keep_counts): the fraction of `target` a plan keeping those counts removes."""
    if target == "latency":
        base = cost.total({})
        return lambda counts: 1.0 - cost.total(
            {g.id: int(k) for g, k in zip(groups, counts)}) / base
    measure = _MEASURE[target]
    total = _counts(graph)[measure]
    return lambda counts: (1.0 - _counts(graph, graph.keep_mask(keeps_for(counts)))[measure]
                           / total if total else 0.0)


def _check_reachable(level, target, groups, steps, min_channels, reached) -> None:
    """UnreachableLevel unless `level` <= the level of every group at its floor."""
    floor = _allowed(np.zeros(len(groups), np.int64), np.array([g.size for g in groups]),
                     steps, min_channels)
    highest = reached(floor)
    if level > highest + 1e-9:
        raise UnreachableLevel(
            f"level {level:.3f} of {target} cannot be reached: the highest reachable "
            f"level is {highest:.3f} (every prunable group at min_channels "
            f"{min_channels} / its round_to step; blocked groups are left out)", highest)


def check_reachable(graph, level: float, target: str = "params", allocation: str = "global",
                    round_to=1, min_channels: int = 2, cost=None) -> None:
    """Refuse, before any scoring, options no plan can satisfy: the checks of `make_plan`
    that do not depend on scores (UnreachableLevel names the highest reachable level)."""
    level = check_level(level)
    groups = _groups(graph, target, allocation, round_to, min_channels, cost)
    reached = _reached(graph, groups, target, cost,
                       lambda counts: {g.id: _top(np.arange(g.size), k, g.blocks)
                                       for g, k in zip(groups, counts)})
    _check_reachable(level, target, groups, _steps(groups, round_to), min_channels, reached)


def make_plan(graph, scores: dict, level: float, target: str = "params",
              allocation: str = "global", round_to=1, min_channels: int = 2,
              criterion: str | None = None, normalizer: str = "mean", seed=None,
              cost=None) -> dict:
    """A plan removing `level` of the model's `target` measure (see module doc)."""
    level = check_level(level)
    groups = _groups(graph, target, allocation, round_to, min_channels, cost)
    gscores = group_scores(graph, scores, normalizer) if scores else {}
    sizes = np.array([g.size for g in groups])
    steps = _steps(groups, round_to)
    order = {g.id: np.lexsort((np.arange(g.size), gscores.get(g.id, np.zeros(g.size))))
             for g in groups}  # ascending score: first = removed first
    before = _counts(graph)

    def keeps_for(keep_counts):
        return {g.id: _top(order[g.id], k, g.blocks) for g, k in zip(groups, keep_counts)}

    reached = _reached(graph, groups, target, cost, keeps_for)
    _check_reachable(level, target, groups, steps, min_channels, reached)
    if target == "latency" and allocation == "global":
        per_filter = {g.id: gscores[g.id] * max(1, sum(m in scores for m in g.members))
                      for g in groups if g.id in gscores}  # once per member filter removed
        keep_counts = _greedy_latency(groups, sizes, steps, min_channels, order, per_filter,
                                      cost, level)
    else:
        if allocation == "uniform":
            def counts_at(x):
                return _allowed(np.round(sizes * (1.0 - x)).astype(np.int64), sizes, steps,
                                min_channels)
            grid = np.linspace(0.0, 1.0, 201)
        else:
            flat = np.concatenate([gscores[g.id] for g in groups]) if gscores else np.zeros(sizes.sum())
            owner = np.repeat(np.arange(len(groups)), sizes)
            ranked = owner[np.lexsort((np.arange(len(flat)), flat))]

            def counts_at(i):
                removed = np.bincount(ranked[:int(i)], minlength=len(groups))
                return _allowed(sizes - removed, sizes, steps, min_channels)
            grid = np.arange(len(ranked) + 1)
        keep_counts = counts_at(_search(grid, lambda x: reached(counts_at(x)), level))
        if allocation == "global" and (steps > 1).any():
            keep_counts = _refine(groups, keep_counts, sizes, steps, min_channels, order,
                                  gscores, reached, level)
    kept = keeps_for(keep_counts)
    plan = _plan_dict(graph, kept, before, level, target, allocation, round_to, min_channels,
                      criterion, normalizer, seed, cost)
    if isinstance(round_to, dict):
        for entry in plan["groups"]:
            entry["step"] = int(round_to.get(entry["id"], 1))
    return plan


def _score_prefix(groups, order, gscores) -> dict:
    """{group id: cumulative scores in removal order}: prefix[n] is the score lost by
    removing a group's n lowest channels."""
    return {g.id: np.concatenate([[0.0], np.cumsum(np.asarray(
        gscores.get(g.id, np.zeros(g.size)), float)[order[g.id]])]) for g in groups}


def _refine(groups, counts, sizes, steps, min_channels, order, gscores, reached, level):
    """Counts closer to `level` than the global ranking's: with round_to steps the ranking's
    levels jump (a group drops a whole step at a time), so its closest point can be far under
    the level. From it, single-step reductions that land closer to the level are taken, each
    time the one losing the least score per level gained."""
    counts = np.array(counts)
    floor = _allowed(np.zeros_like(sizes), sizes, steps, min_channels)
    prefix = _score_prefix(groups, order, gscores)
    now = reached(counts)
    while now < level:
        pick = None
        for i, g in enumerate(groups):
            k = (int(counts[i]) - 1) // int(steps[i]) * int(steps[i])
            if k < floor[i]:
                continue
            trial = counts.copy()
            trial[i] = k
            gain = reached(trial) - now
            if gain <= 1e-12 or abs(now + gain - level) >= abs(now - level):
                continue
            key = (prefix[g.id][g.size - k] - prefix[g.id][g.size - counts[i]]) / gain
            if pick is None or key < pick[0]:
                pick = (key, i, k, now + gain)
        if pick is None:
            break
        counts[pick[1]], now = pick[2], pick[3]
    return counts


def _greedy_latency(groups, sizes, steps, min_channels, order, gscores, cost, level):
    """Keep counts removing `level` of the predicted latency: repeatedly take the group
    reduction with the least importance lost per predicted ms saved (NetAdapt/HALP-style
    lookup-table pruning in one shot) until the goal is passed; then land (`_land`)."""
    counts = {g.id: int(g.size) for g in groups}
    base = cost.total({})
    goal = base * (1.0 - level)
    prefix = _score_prefix(groups, order, gscores)
    allowed = {}
    for g, size, step in zip(groups, sizes, steps):
        low = max(min_channels, 1)
        low = -(-low // step) * step
        allowed[g.id] = sorted({int(size)} | set(range(int(low), int(size), int(step))))
    now, prev = base, (dict(counts), base)
    while now - goal > 1e-9 * base:
        best = None
        for g in groups:
            c = counts[g.id]
            lower = [k for k in allowed[g.id] if k < c][-8:]
            for k in lower:
                saved = -cost.delta(counts, g.id, k)
                if saved <= 1e-9:
                    continue
                lost = prefix[g.id][g.size - k] - prefix[g.id][g.size - c]
                key = (lost / saved, -saved)
                if best is None or key < best[0]:
                    best = (key, g.id, k, saved)
        if best is None:
            raise UnreachableLevel(f"level {level:.3f} of latency cannot be reached: the "
                                   f"highest reachable level is {1 - now / base:.3f} (no "
                                   "further reduction saves predicted time)", 1 - now / base)
        prev = (dict(counts), now)
        counts[best[1]] = best[2]
        now -= best[3]
    counts = _land(groups, allowed, cost, prefix, prev, (counts, now), goal)
    return np.array([counts[g.id] for g in groups])


def _land(groups, allowed, cost, prefix, before, after, goal) -> dict:
    """The counts closest to `goal` ms from the greedy's last two states: the last step can
    be a big one (a residual group shared by many blocks), so from the state before it,
    single smaller reductions are taken while one lands closer to the goal (within 0.5% of
    the unpruned latency, the one losing the least importance)."""
    tol = 0.005 * cost.total({})
    best_counts, best_ms = after if abs(after[1] - goal) < abs(before[1] - goal) else before
    counts, now = dict(before[0]), before[1]
    while now > goal:
        pick = None
        for g in groups:
            c = counts[g.id]
            for k in (k for k in allowed[g.id] if k < c):
                ms = now + cost.delta(counts, g.id, k)
                lost = prefix[g.id][g.size - k] - prefix[g.id][g.size - c]
                key = (int(abs(ms - goal) / tol), lost)
                if ms < now - 1e-9 and (pick is None or key < pick[0]):
                    pick = (key, g.id, k, ms)
        if pick is None or abs(pick[3] - goal) >= abs(best_ms - goal):
            break
        counts[pick[1]] = pick[2]
        now = pick[3]
        best_counts, best_ms = dict(counts), now
    return best_counts


def _search(grid, level_at, target):
    """The grid point whose level is closest to `target` (level grows along the grid)."""
    lo, hi = 0, len(grid) - 1
    if level_at(grid[hi]) <= target:
        return grid[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if level_at(grid[mid]) < target:
            lo = mid
        else:
            hi = mid
    return grid[lo] if target - level_at(grid[lo]) <= level_at(grid[hi]) - target else grid[hi]


def _plan_dict(graph, kept, before, level, target, allocation, round_to, min_channels,
               criterion, normalizer, seed, cost=None) -> dict:
    mask = graph.keep_mask(kept)
    after = _counts(graph, mask)
    achieved = {k: (1.0 - after[v] / before[v]) if before[v] else 0.0
                for k, v in _MEASURE.items()}
    if cost is not None:
        counts = {gid: len(idx) for gid, idx in kept.items()}
        predicted = {"unpruned": cost.total({}), "pruned": cost.total(counts)}
        achieved["latency"] = 1.0 - predicted["pruned"] / predicted["unpruned"]
    layers = {}
    for name, layer in graph.spec.layers.items():
        out = mask[graph.prov[name]]
        ins = [mask[p] for p in graph.input_provs(name)]
        if out.all() and all(m.all() for m in ins):
            continue
        layers[name] = {"out": np.flatnonzero(out).tolist(),
                        "in": [np.flatnonzero(m).tolist() for m in ins]}
    plan = {
        "format": FORMAT,
        "model": {"name": graph.spec.name, "fingerprint": graph.fingerprint(),
                  **{k: before[k] for k in ("params", "macs", "bytes", "filters")}},
        "criterion": criterion, "target": target, "level": level, "allocation": allocation,
        "round_to": round_to if not isinstance(round_to, dict) else "auto",
        "min_channels": min_channels, "normalizer": normalizer,
        "seed": seed, "ignore": list(graph.ignore),
        "achieved": {"level": round(achieved[target], 6),
                     **{f"{k}_level": round(v, 6) for k, v in achieved.items()},
                     **{k: after[k] for k in ("params", "macs", "bytes", "filters")}},
        "denominator": {"filters": before["prunable_filters"],
                        "filters_all": before["filters"],
                        "filters_left_out": sorted(
                            m for g in graph.groups if not g.prunable for m in g.members)},
        "groups": [{"id": g.id, "members": list(g.members), "channels": g.size,
                    "kept": np.asarray(kept.get(g.id, np.arange(g.size))).tolist()}
                   for g in graph.prunable_groups()],
        "blocked": graph.describe_blocked(),
        "layers": layers,
    }
    if cost is not None:
        plan["runtime"] = cost.describe()
        plan["predicted_latency_ms"] = {k: round(v, 5) for k, v in predicted.items()}
    if achieved[target] < level - 0.02:
        plan["notes"] = [f"target {target} level {level:.3f} not reached ({achieved[target]:.3f}):"
                         " the round_to steps of the groups are too coarse for it"]
    return plan


def kept_counts(plan: dict) -> dict:
    """{group id: channels kept} of `plan`."""
    return {e["id"]: len(e["kept"]) for e in plan["groups"]}


def check_plan(plan: dict, graph) -> dict:
    """{group id: kept channel indices} of `plan` for the model of `graph`, or PlanError."""
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise PlanError(f"not a tfprune plan (format {plan.get('format') if isinstance(plan, dict) else type(plan).__name__!r})")
    if plan["model"]["fingerprint"] != graph.fingerprint():
        raise PlanError(f"plan was made for model {plan['model']['name']!r} with another "
                        f"architecture than {graph.spec.name!r} (fingerprint mismatch)")
    if list(plan.get("ignore", [])) != list(graph.ignore):
        raise PlanError(f"plan was made with ignore={plan.get('ignore')}, graph has {list(graph.ignore)}")
    kept = {}
    by_id = {g.id: g for g in graph.prunable_groups()}
    for entry in plan["groups"]:
        g = by_id.get(entry["id"])
        if g is None or list(g.members) != list(entry["members"]) or g.size != entry["channels"]:
            raise PlanError(f"plan group {entry['id']} ({', '.join(entry['members'][:3])}) does "
                            "not match the model's channel groups")
        idx = np.asarray(entry["kept"], dtype=np.int64)
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= g.size or len(np.unique(idx)) != len(idx):
            raise PlanError(f"plan group {g.id}: kept indices must be distinct, in [0, {g.size})")
        kept[g.id] = idx
    return kept


def save_plan(plan: dict, path) -> None:
    from tfprune.fileio import atomic_write_text
    atomic_write_text(path, json.dumps(plan, indent=1))


def load_plan(path) -> dict:
    """The plan in `path` (checked against a model by `check_plan`); PlanError names the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise PlanError(f"cannot read plan {path}: {err}") from None
