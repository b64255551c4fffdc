"""Prune plans: which channels of which group to keep, chosen to meet a target, as JSON data.

`make_plan(graph, scores, level, target="params", allocation="global", round_to=1,
min_channels=2, criterion=None, normalizer="mean", seed=None)` returns a plain dict:

- `level` is the fraction in [0, 1) of the whole model's `target` measure to remove:
  `params` (all weights, the paper's pruning level), `flops` (multiply-accumulates) or
  `filters` (output channels of producer layers). The level reached is reported in
  `achieved` next to the target (blocked groups, `round_to` and `min_channels` limit it).
- `global`: one ranking of all channels of all prunable groups by their group scores
  (`tfprune.core.group_scores`, normalised per group); the lowest are removed until the
  target is met. `uniform`: the same fraction removed from every group.
- every group keeps at least `min_channels` channels, and a multiple of `round_to` (or all).

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
TARGETS = ("params", "flops", "filters")
ALLOCATIONS = ("global", "uniform")
_MEASURE = {"params": "params", "flops": "macs", "filters": "filters"}


class PlanError(TfpruneError):
    """A plan that cannot be made or applied; the message says why."""


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


def make_plan(graph, scores: dict, level: float, target: str = "params",
              allocation: str = "global", round_to: int = 1, min_channels: int = 2,
              criterion: str | None = None, normalizer: str = "mean", seed=None) -> dict:
    """A plan removing `level` of the model's `target` measure (see module doc)."""
    level = check_level(level)
    if target not in TARGETS:
        raise PlanError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if allocation not in ALLOCATIONS:
        raise PlanError(f"unknown allocation {allocation!r}; choose {', '.join(ALLOCATIONS)}")
    if round_to < 1 or min_channels < 1:
        raise PlanError("round_to and min_channels must be at least 1")
    groups = [g for g in graph.prunable_groups() if g.size > min_channels]
    if not groups:
        reasons = "; ".join(f"{', '.join(b['members'][:3])}: " + ", ".join(
            f"{x['layer']} ({x['reason']})" for x in b["blocked_by"][:2])
            for b in graph.describe_blocked()[:5])
        raise PlanError(f"nothing is prunable in model {graph.spec.name!r}: {reasons or 'no filters'}")
    gscores = group_scores(graph, scores, normalizer) if scores else {}
    sizes = np.array([g.size for g in groups])
    steps = np.array([np.lcm(round_to, g.blocks) for g in groups])
    order = {g.id: np.lexsort((np.arange(g.size), gscores.get(g.id, np.zeros(g.size))))
             for g in groups}  # ascending score: first = removed first
    measure = _MEASURE[target]
    before = graph.counts()
    total = before[measure]

    def keeps_for(keep_counts):
        return {g.id: _top(order[g.id], k, g.blocks) for g, k in zip(groups, keep_counts)}

    def reached(keep_counts):
        kept = graph.keep_mask(keeps_for(keep_counts))
        return 1.0 - graph.counts(kept)[measure] / total if total else 0.0

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
    best = _search(grid, lambda x: reached(counts_at(x)), level)
    keep_counts = counts_at(best)
    kept = keeps_for(keep_counts)
    return _plan_dict(graph, kept, before, level, target, allocation, round_to, min_channels,
                      criterion, normalizer, seed)


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
               criterion, normalizer, seed) -> dict:
    mask = graph.keep_mask(kept)
    after = graph.counts(mask)
    achieved = {k: (1.0 - after[v] / before[v]) if before[v] else 0.0
                for k, v in _MEASURE.items()}
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
        "round_to": round_to, "min_channels": min_channels, "normalizer": normalizer,
        "seed": seed, "ignore": list(graph.ignore),
        "achieved": {"level": round(achieved[target], 6),
                     **{f"{k}_level": round(v, 6) for k, v in achieved.items()},
                     **{k: after[k] for k in ("params", "macs", "bytes", "filters")}},
        "groups": [{"id": g.id, "members": list(g.members), "channels": g.size,
                    "kept": np.asarray(kept.get(g.id, np.arange(g.size))).tolist()}
                   for g in graph.prunable_groups()],
        "blocked": graph.describe_blocked(),
        "layers": layers,
    }
    if achieved[target] < level - 0.02:
        plan["notes"] = [f"target {target} level {level:.3f} not reached ({achieved[target]:.3f}):"
                         " blocked groups, min_channels or round_to limit it"]
    return plan


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
