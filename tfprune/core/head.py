"""The subset head: a classifier cut down to a subset of its classes.

`find_classifier(spec)` names the layer whose output units are the model's classes: the
Dense (or 1x1-style Conv) that reaches the model's single output through per-channel layers
only (global pooling, Activation/Softmax, Dropout, identity ReLU-like layers). `slice_spec`
keeps the units of the given classes in the given order (kernel columns and bias entries,
edited through the layer's rule like any other pruning); `slice_head(model, classes)` builds
the model, whose logits are exactly the original's restricted to `classes` (logit j of the
new model = logit classes[j] of the old). A plan records the cut as `plan["head"]`
(`head_entry`), applied by `tfprune.core.surgery.apply_plan` before the channel plan.
"""
from __future__ import annotations

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.core import modelspec
from tfprune.core import rules

CLASSIFIERS = ("Dense", "Conv2D", "Conv1D")
# layers between the classifier and the output that act on each class channel on its own
PER_CLASS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
             "GlobalMaxPooling1D", "Activation", "Softmax", "Dropout", "Identity")


class HeadError(TfpruneError):
    """A model or class list the subset head cannot take; the message says why."""


def find_classifier(spec) -> str:
    """The name of `spec`'s final classifier layer, or HeadError saying what is in the way."""
    if len(spec.outputs) != 1:
        raise HeadError(f"model {spec.name!r} has {len(spec.outputs)} outputs; --head=subset "
                        "needs one output of class logits")
    name = spec.outputs[0][0]
    path = []
    while True:
        layer = spec.layers[name]
        if layer.class_name in CLASSIFIERS:
            break
        if layer.class_name not in PER_CLASS or len(layer.inputs) != 1:
            raise HeadError(
                f"model {spec.name!r} has no final classifier over classes: its output comes "
                f"from {layer.class_name} layer {name!r}"
                + (f" (after {', '.join(path)})" if path else "")
                + f"; --head=subset needs a {' or '.join(CLASSIFIERS)} layer reaching the output "
                "through per-class layers only (use --head=full)")
        path.append(name)
        name = layer.inputs[0][0]
    units = layer.output_shape[-1]
    if len(layer.weights) not in (1, 2) or layer.weights[0].shape[-1] != units:
        raise HeadError(f"classifier {name!r} of model {spec.name!r} has weights "
                        f"{[w.shape for w in layer.weights]} that are not kernel (..., {units}) "
                        "and bias")
    return name


def check_classes(classes, units: int, layer: str, class_names=None) -> list[int]:
    """`classes` as a list of distinct ints in [0, units), or HeadError naming the bad one."""
    classes = [int(c) for c in classes]
    if not classes:
        raise HeadError("the subset head needs at least one class")
    for c in classes:
        if not 0 <= c < units:
            what = f"class {c}" + (f" ({class_names[c]})" if class_names and c < len(class_names)
                                   else "")
            raise HeadError(f"{what} is not a class of the model: classifier {layer!r} has "
                            f"{units} outputs")
    if len(set(classes)) != len(classes):
        raise HeadError(f"subset head classes repeat: {classes}")
    return classes


def slice_spec(spec, classes, layer: str | None = None, class_names=None):
    """A copy of `spec` whose classifier keeps only `classes` (in that order)."""
    name = layer or find_classifier(spec)
    spec = spec.copy()
    head = spec.layers[name]
    classes = check_classes(classes, head.output_shape[-1], name, class_names)
    head.weights = [np.take(w, classes, axis=-1) for w in head.weights]
    head.config = rules.rule_for(head).edit(head.config, head, len(classes))
    return spec


def slice_head(model, classes, custom_objects=None, class_names=None):
    """A new model whose logits are `model`'s logits of `classes`, in that order
    (`class_names`: the data's names, for the error naming a class the model lacks)."""
    spec = slice_spec(modelspec.read_model(model), classes, class_names=class_names)
    return modelspec.write_model(spec, None, custom_objects)


def head_entry(model_or_spec, classes, class_names=None) -> dict:
    """The plan's record of a head cut: the classifier layer, its units and the kept classes."""
    spec = model_or_spec if isinstance(model_or_spec, modelspec.ModelSpec) \
        else modelspec.read_model(model_or_spec)
    name = find_classifier(spec)
    units = spec.layers[name].output_shape[-1]
    classes = check_classes(classes, units, name, class_names)
    entry = {"layer": name, "units": int(units), "classes": classes}
    if class_names:
        entry["class_names"] = [class_names[c] for c in classes]
    return entry


def apply_entry(model, entry: dict, custom_objects=None):
    """`model` with the head cut `entry` (from `head_entry`) applied; HeadError when the
    model's classifier is not the one the entry was made for."""
    spec = modelspec.read_model(model)
    name = find_classifier(spec)
    units = spec.layers[name].output_shape[-1]
    if name != entry.get("layer") or units != entry.get("units"):
        raise HeadError(f"the plan's head cut is for classifier {entry.get('layer')!r} with "
                        f"{entry.get('units')} outputs; the model's is {name!r} with {units}")
    return modelspec.write_model(slice_spec(spec, entry["classes"], name), None, custom_objects)
