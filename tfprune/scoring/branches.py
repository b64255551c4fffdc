"""How much each removable residual branch (`tfprune.core.depth`) matters; higher = keep.

- `kl` (data-aware): the mean KL divergence from the model's softmax to the softmax of the
  model without that one branch, over the scoring batches: what removing it changes in what
  the model says about the device's own images (no labels).
- `bn_gamma` (data-agnostic): the mean |gamma| of the branch's last layer when it is a
  BatchNorm (how loud the branch is), else the mean |w| of that layer's kernel.

`pick(scores, n)` names the (at most) `n` branches to remove: the lowest scores.
"""
from __future__ import annotations

import numpy as np

from tfprune.core import depth, modelspec
from tfprune.scoring.registry import ScoringError

BRANCH_CRITERIA = ("kl", "bn_gamma")


def kl_scores(model, branches, data, max_batches=10) -> dict:
    if data is None:
        raise ScoringError("branch criterion 'kl' is data-aware: it needs the subset's images")
    from tfprune.training.distill import distill_loss_np
    batches = [np.asarray(x) for x, _ in (data.take(max_batches) if max_batches else data)]
    ref = [np.asarray(model(x, training=False)) for x in batches]
    unlabelled = [np.full(len(x), -1) for x in batches]
    spec = modelspec.read_model(model)
    scores = {}
    for br in branches:
        cut = modelspec.write_model(depth.remove_spec(spec, [br.add]))
        # alpha 1, T 1, no labels: the mean KL from the model's softmax to the cut model's
        scores[br.add] = float(np.mean([
            distill_loss_np(y, np.asarray(cut(x, training=False)), t, 1.0, 1.0)
            for y, t, x in zip(unlabelled, ref, batches)]))
    return scores


def bn_gamma_scores(model, branches) -> dict:
    scores = {}
    for br in branches:
        last = model.get_layer(br.layers[-1])
        if type(last).__name__ == "BatchNormalization" and last.scale:
            scores[br.add] = float(np.mean(np.abs(last.gamma.numpy())))
        else:
            scores[br.add] = float(np.mean(np.abs(last.get_weights()[0])))
    return scores


def score_branches(model, criterion: str, data=None, max_batches=10, ignore=()) -> dict:
    """{Add name: score} for every removable branch of `model`."""
    if criterion not in BRANCH_CRITERIA:
        raise ScoringError(f"unknown branch criterion {criterion!r}; known: "
                           f"{', '.join(BRANCH_CRITERIA)}")
    branches = depth.find_branches(modelspec.read_model(model), ignore)
    if criterion == "kl":
        return kl_scores(model, branches, data, max_batches)
    return bn_gamma_scores(model, branches)


def pick(scores: dict, n: int) -> list[str]:
    """The `n` lowest-scored branches (all of them when the model has fewer), in model
    order; ties go to the earlier branch."""
    names = list(scores)
    order = sorted(range(len(names)), key=lambda i: (scores[names[i]], i))
    return [names[i] for i in sorted(order[:n])]
