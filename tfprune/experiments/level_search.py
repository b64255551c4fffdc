"""The paper's DaPR search: the highest pruning level whose accuracy matches the unpruned
model on the subset, by binary search over 5%..95% in 5% steps, starting at 50%.

`binary_search(accuracy, reference)` takes the accuracy as a function of the level, so the
decisions are testable with a scripted function. `search_subset` passes a function that runs
the data-aware protocol at that level (one sweep run, tfprune.experiments.sweep, so probes resume and
are shared with sweeps in the same directory) and returns its VALIDATION accuracy (the
original compared test accuracy, which leaks the test set into the choice). A level
"matches" when its accuracy is at least `reference - tolerance`. Each probed level is
evaluated once (cached). `markdown` renders a search's result.
"""
from __future__ import annotations

import dataclasses
from typing import Callable
from tfprune.errors import TfpruneError

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


@dataclasses.dataclass
class Step:
    level: float
    accuracy: float | None        # None: no plan reaches this level
    matched: bool


@dataclasses.dataclass
class SearchResult:
    level: float | None           # highest matching level found; None if none matched
    accuracy: float | None
    reference: float
    steps: list                   # [Step] in probing order

    def to_json(self) -> dict:
        return {"level": self.level, "accuracy": self.accuracy, "reference": self.reference,
                "steps": [dataclasses.asdict(s) for s in self.steps]}


def binary_search(accuracy: Callable[[float], float], reference: float,
                  levels=LEVELS, start: float = 0.5, tolerance: float = 0.0) -> SearchResult:
    """Probe `start`, then halve the remaining interval: up after a match, down after a miss.
    `accuracy` returns None for a level no plan can reach (a miss)."""
    levels = sorted(levels)
    if start not in levels:
        raise TfpruneError(f"start level {start} is not one of the levels {levels}")
    lo, hi, mid = 0, len(levels) - 1, levels.index(start)
    best, cache, steps = None, {}, []
    while lo <= hi:
        level = levels[mid]
        if level not in cache:
            value = accuracy(level)
            cache[level] = None if value is None else float(value)
        matched = cache[level] is not None and cache[level] >= reference - tolerance
        steps.append(Step(level, cache[level], matched))
        if matched:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
        mid = (lo + hi) // 2
    if best is None:
        return SearchResult(None, None, reference, steps)
    return SearchResult(levels[best], cache[levels[best]], reference, steps)


def search_subset(setup, network: str, subset: str, criterion: str, seed: int, workdir,
                  start: float = 0.5, tolerance: float = 0.0) -> dict:
    """The DaPR search for one (network, subset) under a protocol `setup`
    (tfprune.experiments.protocol.make_setup); returns the JSON-ready result with the chosen level's test
    accuracy reported beside (never used to choose)."""
    from tfprune.experiments import sweep

    runs = {}

    def run(method, level=0.0):
        spec = sweep.RunSpec(method, network, level, seed, subset,
                             criterion if method == "aware" else None)
        runs[level if method == "aware" else "unpruned"] = r = sweep.run_spec(
            spec, setup, workdir, [subset])
        return r["subsets"][subset]

    def aware_accuracy(level):
        from tfprune.core.plan import UnreachableLevel
        try:
            return run("aware", level)["val_accuracy"]
        except UnreachableLevel:
            return None

    reference = run("unpruned")["val_accuracy"]
    result = binary_search(aware_accuracy, reference, start=start, tolerance=tolerance)
    test_at = lambda key: runs[key]["subsets"][subset]["test_accuracy"]
    return {**result.to_json(), "subset": subset, "network": network, "criterion": criterion,
            "tolerance": tolerance, "selected_on": "validation",
            "unpruned_test_accuracy": test_at("unpruned"),
            "test_accuracy": test_at(result.level) if result.level is not None else None}


def markdown(out: dict, protocol: str = "") -> str:
    lines = [f"# DaPR search: {out['network']} on {out['subset']} ({out['criterion']}"
             f"{', ' + protocol if protocol else ''})", "",
             f"Unpruned val accuracy {100 * out['reference']:.1f}% (tolerance "
             f"{100 * out['tolerance']:.1f} pp). Chosen on validation only.", "",
             "| probe | level % | val accuracy % | matches |", "|---|---|---|---|"]
    lines += [f"| {i + 1} | {100 * s['level']:.0f} | {_percent(s['accuracy'])} | "
              f"{'yes' if s['matched'] else 'no'} |" for i, s in enumerate(out["steps"])]
    chosen = ("no level matched" if out["level"] is None else
              f"chosen level {100 * out['level']:.0f}%: val {100 * out['accuracy']:.1f}%, "
              f"test {100 * out['test_accuracy']:.1f}% (unpruned test "
              f"{100 * out['unpruned_test_accuracy']:.1f}%)")
    return "\n".join(lines + ["", chosen, ""])


def _percent(value) -> str:
    return "unreachable" if value is None else f"{100 * value:.1f}"
