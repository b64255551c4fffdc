"""How much each removable residual branch (`tfprune.core.depth`) matters; higher = keep.

- `kl` (data-aware): the mean KL divergence from the model's softmax to the softmax of the
  model without that one branch, over the scoring batches: what removing it changes in what
  the model says about the device's own images (no labels).
- `bn_gamma` (data-agnostic): the mean |gamma| of the branch's last layer when it is a
  BatchNorm (how loud the branch is), else the mean |w| of that layer's kernel.

`pick(scores, n)` names the (at most) `n` branches to remove: the lowest scores;
`ranked(scores)` orders them all, lowest first. `divergence(model, other, data)` is the same
KL between any two models with the same outputs (how far a pruned candidate is from its source).
"""
from __future__ import annotations

import numpy as np

from tfprune.core import depth, modelspec
from tfprune.scoring.registry import ScoringError

BRANCH_CRITERIA = ("kl", "bn_gamma")


def _batches(data, max_batches) -> list:
    if data is None:
        raise ScoringError("branch criterion 'kl' is data-aware: it needs the subset's images")
    return [np.asarray(x) for x, _ in (data.take(max_batches) if max_batches else data)]


def _mean_kl(batches, reference, other) -> float:
    """Mean KL from the softmax of `reference` (outputs per batch) to `other`'s."""
    from tfprune.training.distill import distill_loss_np
    # alpha 1, T 1, no labels: the KL term of the distillation loss alone
    return float(np.mean([distill_loss_np(np.full(len(x), -1),
                                          np.asarray(other(x, training=False)), t, 1.0, 1.0)
                          for x, t in zip(batches, reference)]))


def kl_scores(model, branches, data, max_batches=10) -> dict:
    batches = _batches(data, max_batches)
    ref = [np.asarray(model(x, training=False)) for x in batches]
    spec = modelspec.read_model(model)
    return {br.add: _mean_kl(batches, ref,
                             modelspec.write_model(depth.remove_spec(spec, [br.add])))
            for br in branches}


def divergence(model, other, data, max_batches=10) -> float:
    """Mean KL from `model`'s softmax to `other`'s over the scoring batches."""
    batches = _batches(data, max_batches)
    return _mean_kl(batches, [np.asarray(model(x, training=False)) for x in batches], other)


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


def ranked(scores: dict) -> list[str]:
    """Every branch, lowest score first; ties go to the earlier branch."""
    names = list(scores)
    return [names[i] for i in sorted(range(len(names)), key=lambda i: (scores[names[i]], i))]


def pick(scores: dict, n: int) -> list[str]:
    """The `n` lowest-scored branches (all of them when the model has fewer), in model
    order."""
    chosen = set(ranked(scores)[:n])
    return [name for name in scores if name in chosen]
