"""The paper's DaPR search: the highest pruning level whose accuracy matches the unpruned
model on the subset, by binary search over 5%..95% in 5% steps, starting at 50%.

`binary_search(accuracy, reference)` takes the accuracy as a function of the level, so the
decisions are testable with a scripted function; the apps pass a function that runs the
data-aware protocol at that level and returns its VALIDATION accuracy (the original compared
test accuracy, which leaks the test set into the choice). A level "matches" when its accuracy
is at least `reference - tolerance`. Each probed level is evaluated once (cached).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


@dataclasses.dataclass
class Step:
    level: float
    accuracy: float
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
    """Probe `start`, then halve the remaining interval: up after a match, down after a miss."""
    levels = sorted(levels)
    if start not in levels:
        raise ValueError(f"start level {start} is not one of the levels {levels}")
    lo, hi, mid = 0, len(levels) - 1, levels.index(start)
    best, cache, steps = None, {}, []
    while lo <= hi:
        level = levels[mid]
        if level not in cache:
            cache[level] = float(accuracy(level))
        matched = cache[level] >= reference - tolerance
        steps.append(Step(level, cache[level], matched))
        if matched:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
        mid = (lo + hi) // 2
    if best is None:
        return SearchResult(None, None, reference, steps)
    return SearchResult(levels[best], cache[levels[best]], reference, steps)
