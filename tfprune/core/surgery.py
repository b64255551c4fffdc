"""Surgery: apply a prune plan, building a physically smaller model.

`apply_plan(model, plan, custom_objects=None) -> keras.Model` checks the plan against the
model (`tfprune.core.plan.check_plan`: same architecture fingerprint, same groups), reads the model
(`tfprune.core.modelspec`), and for every layer whose input or output channels shrink edits its
config through its rule (`filters`, `units`, Reshape targets; `build_config` dropped) and
keeps the kept slices of every weight (kernels on both channel axes, biases, BatchNorm
gamma/beta/moving statistics, depthwise and separable kernels, PReLU alpha, Dense rows after
Flatten). It then rebuilds the model with `from_config`. Layer names are unchanged; layers
that lose nothing keep their exact weight arrays.

A plan with a subset head (`plan["head"]`, see `tfprune.core.head`) first cuts the
classifier down to the kept classes, and one with a depth cut (`plan["depth"]`, see
`tfprune.core.depth`) then removes residual branches whole; the channel plan was made on
that cut model.

`prune(model, graph, kept)` does the same from {group id: kept indices}; `zero_dropped(model,
plan)` returns a same-shaped copy of the model with every dropped weight element set to zero
(the reference of the equivalence test).
"""
from __future__ import annotations

import numpy as np

from tfprune.core import graph as graph_mod
from tfprune.core import modelspec
from tfprune.core import plan as plan_mod
from tfprune.core.head import slice_head  # noqa: F401  (the subset head, with the plan's cuts)


def _layer_masks(graph, keep, name):
    return (graph.tensor_mask(graph.prov[name], keep),
            [graph.tensor_mask(p, keep) for p in graph.input_provs(name)])


def _axis_index(kind, out_mask, in_masks, layer):
    if kind == "out":
        return np.flatnonzero(out_mask)
    if kind == "in":
        return np.flatnonzero(in_masks[0])
    m = int(layer.config.get("depth_multiplier", 1))
    return np.flatnonzero(np.repeat(in_masks[0], m))


def _edited_spec(graph, keep, zero=False):
    spec = graph.spec.copy()
    for name, layer in spec.layers.items():
        out_mask, in_masks = _layer_masks(graph, keep, name)
        if out_mask.all() and all(m.all() for m in in_masks):
            continue
        rule = graph.rules[name]
        new = []
        for w, axes in zip(layer.weights, rule.weight_axes(layer)):
            for axis, kind in axes.items():
                idx = _axis_index(kind, out_mask, in_masks, layer)
                if zero:
                    drop = np.ones(w.shape[axis], dtype=bool)
                    drop[idx] = False
                    w = np.array(w, copy=True)
                    w[(slice(None),) * axis + (drop,)] = 0
                else:
                    w = np.take(w, idx, axis=axis)
            new.append(w)
        layer.weights = new
        if not zero:
            layer.config = rule.edit(layer.config, layer, int(out_mask.sum()))
    return spec


def prune(model, graph, kept: dict, custom_objects=None, keras_module=None):
    """The pruned model keeping channels `kept` ({group id: indices}) of `graph`'s groups."""
    spec = _edited_spec(graph, graph.keep_mask(kept))
    return modelspec.write_model(spec, keras_module, custom_objects)


def _pre_cuts(model, plan, custom_objects, graph):
    """`model` with the plan's subset head and then its depth cut applied first (then
    `graph` no longer fits it)."""
    if not plan.get("head") and not plan.get("depth"):
        return model, graph
    from tfprune.core import depth, head
    if plan.get("head"):
        model = head.apply_entry(model, plan["head"], custom_objects)
    return depth.apply_entry(model, plan.get("depth"), custom_objects), None


def apply_plan(model, plan: dict, custom_objects=None, graph=None):
    """A new, smaller model: `plan` (a dict from `tfprune.core.plan.make_plan` or its JSON) applied
    to `model`: its subset head cut (`plan["head"]`, tfprune.core.head) when it has one, its
    residual branches removed (`plan["depth"]`, tfprune.core.depth), then its channels.
    Refuses a plan made for another architecture."""
    model, graph = _pre_cuts(model, plan, custom_objects, graph)
    graph = graph or graph_mod.build_graph(model, ignore=plan.get("ignore", ()))
    kept = plan_mod.check_plan(plan, graph)
    return prune(model, graph, kept, custom_objects)


def zero_dropped(model, plan: dict, custom_objects=None, graph=None, in_place=False):
    """A copy of `model` (same shapes) with every weight element the plan drops set to 0;
    `in_place=True` zeroes them in `model` itself (faster; the caller restores weights).
    A plan with a subset head or a depth cut gives a copy with those already applied."""
    if plan.get("head") or plan.get("depth"):
        model, graph, in_place = *_pre_cuts(model, plan, custom_objects, graph), False
    graph = graph or graph_mod.build_graph(model, ignore=plan.get("ignore", ()))
    kept = plan_mod.check_plan(plan, graph)
    spec = _edited_spec(graph, graph.keep_mask(kept), zero=True)
    if not in_place:
        return modelspec.write_model(spec, None, custom_objects)
    for layer in model.layers:
        if layer.name in spec.layers and spec.layers[layer.name].weights:
            layer.set_weights(spec.layers[layer.name].weights)
    return model
