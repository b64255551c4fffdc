"""Paired bootstrap confidence intervals for the sweep's accuracies and deltas.

A delta between two methods in one cell (network, subset, level) is the mean over the
seeds both ran of (accuracy of the method - accuracy of the baseline): seeds are paired, so a
seed's shared choices (split order, fine-tune, augmentation) cancel. Its uncertainty has two
sources, both resampled in every replicate: which seeds were run (the paired seeds drawn with
replacement) and which test images the subset happens to have (the images drawn with
replacement, the same draw for both methods, since both were evaluated on the same images).
One seed still gets an interval from the images. Each (network, subset) draws its seeds and
images once per replicate and shares them across levels and methods, so a mean over levels
(the paper's headline) is resampled consistently. Runs without per-image results (older
result.json files) are resampled over seeds only.

    boot = Bootstrap(rows)                 # rows: sweep_report.collect (with `correct`)
    boot.delta(("resnet20", "aquatic"), "aware:act_l2", "agnostic", 0.9)
      -> {"delta", "lo", "hi", "seeds", "replicates"}
    ci(replicates) -> (lo, hi), percentile 95%
"""
from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np


def ci(replicates, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(np.asarray(replicates, float), [tail, 100 - tail])
    return float(lo), float(hi)


class Bootstrap:
    """Replicates of accuracies and paired deltas from sweep rows (see module doc)."""

    def __init__(self, rows, samples: int = 1000, seed: int = 0):
        self.samples, self.seed = samples, seed
        self.cells = defaultdict(lambda: defaultdict(dict))  # key -> (method, level) -> seed
        for r in rows:
            key = (r["network"], r["subset"])
            vec = r.get("correct")
            self.cells[key][(r["method"], float(r["level"]))][int(r["seed"])] = (
                float(r["test_accuracy"]), None if vec is None else np.asarray(vec, bool))
        self._draws = {}

    def _rng(self, key, what):
        return np.random.default_rng([self.seed, zlib.crc32(repr((key, what)).encode())])

    def _draw(self, key, what):
        """Resampling weights of `key`, drawn once: `("images", n)` -> R x n (each row a
        bootstrap sample's counts / n), `("seeds", seeds)` -> R x len(seeds)."""
        if (key, what) not in self._draws:
            n = what[1] if what[0] == "images" else len(what[1])
            self._draws[(key, what)] = (self._rng(key, what).multinomial(
                n, np.full(n, 1 / n), size=self.samples) / n).astype(np.float32)
        return self._draws[(key, what)]

    def _replicates(self, key, pairs: dict) -> np.ndarray:
        """Replicates of mean over seeds of (a - b); `pairs`: {seed: ((acc, vec), (acc, vec)
        or None)}, None = a baseline of 0."""
        seeds = tuple(sorted(pairs))
        items = [pairs[s] for s in seeds]
        lengths = {len(a[1]) if a[1] is not None else -1 for a, _ in items} | {
            len(b[1]) if b[1] is not None else -1 for _, b in items if b is not None}
        if len(lengths) == 1 and -1 not in lengths:   # per-image results: resample images
            diff = np.stack([a[1].astype(np.float32) - (0 if b is None else b[1])
                             for a, b in items])                        # seeds x n
            per_seed = self._draw(key, ("images", diff.shape[1])) @ diff.T  # R x seeds
        else:
            per_seed = np.array([[a[0] - (0 if b is None else b[0]) for a, b in items]],
                                np.float32).repeat(self.samples, 0)
        return np.sum(per_seed * self._draw(key, ("seeds", seeds)), axis=1)

    def _pairs(self, key, method, baseline, level):
        a = self.cells[key].get((method, float(level)), {})
        if baseline is None:
            return {s: (v, None) for s, v in a.items()}
        b = self.cells[key].get((baseline, float(level)), {})
        return {s: (a[s], b[s]) for s in a if s in b}

    def delta(self, key, method: str, baseline: str | None, level: float) -> dict | None:
        """Paired delta of `method` over `baseline` (None: the accuracy itself) in a cell:
        point estimate, 95% interval, seeds used and the replicates; None without pairs."""
        pairs = self._pairs(key, method, baseline, level)
        if not pairs:
            return None
        point = float(np.mean([a[0] - (0 if b is None else b[0]) for a, b in pairs.values()]))
        reps = self._replicates(key, pairs)
        lo, hi = ci(reps)
        return {"delta": point, "lo": lo, "hi": hi, "seeds": sorted(pairs), "replicates": reps}

    def accuracy(self, key, method: str, level: float) -> dict | None:
        return self.delta(key, method, None, level)
