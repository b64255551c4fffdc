"""How per-filter scores become one score per group channel, the planner's input.

Each member's scores are normalised per member (`normalizer="mean"`: divided by that member's
mean score, the default; "max": by its max; "none": raw), then the scores of all member
filters tied into a group channel are averaged. With "mean" every group's channel scores
average to 1, so groups compare on the same footing in `global` allocation.
"""
from __future__ import annotations

import numpy as np

from tfprune.errors import TfpruneError

NORMALIZERS = ("mean", "max", "none")


class GroupScoreError(TfpruneError):
    """Scores that leave a prunable group unscored; the message names its members."""


def group_scores(graph, scores: dict, normalizer: str = "mean") -> dict:
    """{group id: score per group channel} for every prunable group of `graph`."""
    result = {}
    for g in graph.prunable_groups():
        total, count = np.zeros(g.size), np.zeros(g.size)
        for member in g.members:
            if member not in scores:
                continue
            s = np.abs(np.asarray(scores[member], dtype=np.float64))
            scale = {"mean": s.mean(), "max": s.max(), "none": 1.0}[normalizer] if len(s) else 1
            s = s / scale if scale > 0 else s
            total += np.bincount(g.member_channels[member], weights=s, minlength=g.size)
            count += np.bincount(g.member_channels[member], minlength=g.size)
        if not count.any():
            raise GroupScoreError(f"no scores for group {g.id} (members {', '.join(g.members)})")
        result[g.id] = total / np.maximum(count, 1)
    return result
