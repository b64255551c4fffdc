"""Feature distillation's taps: the feature maps where a pruned student is compared with its
unpruned teacher, and the loss that compares them.

A pruned layer keeps a subset of the teacher's channels (the plan's `out` indices), so its
map matches the teacher's map at those channels with no learned adapter. The taps are the
residual streams, which carry every block's result: each merge (`Add`, or the activation
right after it); a model without merges is compared at its last feature map instead (the
input of the global pooling or flattening before the classifier).
"""
from __future__ import annotations

import numpy as np
from keras import ops

from tfprune.core import modelspec

ACTIVATIONS = ("ReLU", "Activation", "LeakyReLU", "PReLU", "ELU")
POOLING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")


def feature_taps(model, plan: dict) -> list[tuple[str, list[int]]]:
    """[(layer name, the teacher's channels the student kept there)] for `model`, pruned by
    `plan` (tfprune.core.plan dict); a layer the plan left whole keeps every channel."""
    spec = modelspec.read_model(model)
    consumers = spec.consumers()
    names = []
    for layer in spec.layers.values():
        if layer.class_name != "Add":
            continue
        after = consumers.get(layer.name, [])
        single = len(after) == 1 and spec.layers[after[0]].class_name in ACTIVATIONS
        names.append(after[0] if single else layer.name)
    if not names:
        pooled = [layer for layer in spec.layers.values() if layer.class_name in POOLING]
        names = [pooled[-1].inputs[0][0]] if pooled else []
    changed = plan.get("layers", {})
    return [(name, [int(i) for i in changed[name]["out"]] if name in changed
             else list(range(int(spec.layers[name].output_shape[-1])))) for name in names]


def compose(before, after):
    """The taps of a student pruned again: `after` (feature_taps of the second prune) names
    channels of the once-pruned student, which `before` (the first prune's taps) maps to
    the teacher's. `before` None: `after` unchanged."""
    if before is None:
        return after
    first = dict(before)
    return [(name, [first[name][i] for i in chans]) for name, chans in after]


def feature_loss(student_maps, teacher_maps):
    """Mean over taps of mean((s - t)^2) / mean(t^2): every tap in scale-free units, so deep
    and shallow maps weigh alike. `teacher_maps` are already cut to the student's channels."""
    terms = [ops.mean(ops.square(s - t)) / (ops.mean(ops.square(t)) + 1e-6)
             for s, t in zip(student_maps, teacher_maps)]
    return ops.mean(ops.stack(terms))


def feature_loss_np(student_maps, teacher_maps) -> float:
    """The same loss in float64 NumPy (the reference of the tests)."""
    terms = [np.mean((np.float64(s) - np.float64(t)) ** 2) / (np.mean(np.float64(t) ** 2) + 1e-6)
             for s, t in zip(student_maps, teacher_maps)]
    return float(np.mean(terms))
