"""Depth pruning: residual branches removed whole, with the ops they cost.

Channel pruning leaves every op in place, and LiteRT pays a fixed cost per op, so its
speed-up falls behind its FLOPs cut. Removing a residual branch removes its ops too.

A *branch* is what an Add with two inputs adds to its shortcut `x`: the layers between `x`
and the Add's other input, none used outside the branch, ending in a layer whose output is
exactly 0 once its weights are (Conv or Dense with no activation or one that keeps 0 at 0,
BatchNorm with a scale). With the branch gone the Add gives `x`; an activation right after
the Add goes too when it is the identity on `x` (ReLU after a ReLU-made `x`, as in ResNet
v1), and otherwise stays and takes `x`. So the model without the branch equals the model with every
weight of the branch zeroed (`zero_branches`, the equivalence test's reference).

`find_branches(spec)` lists the removable branches (named by their Add), `remove_spec` /
`remove_branches` rebuild the model without some of them through the config; a plan records
the cut as `plan["depth"]` (`depth_entry`), applied after the subset head and before the
channel plan (`tfprune.core.surgery.apply_plan`).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from tfprune.core import modelspec
from tfprune.errors import TfpruneError

ZERO_WHEN_ZEROED = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
                    "Dense", "BatchNormalization")


class DepthError(TfpruneError):
    """A branch that cannot be removed, or a plan's depth cut that does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Branch:
    add: str            # the Add layer (the branch's name)
    shortcut: tuple     # tensor ref (layer, node, tensor) the block's output becomes
    layers: tuple       # the branch's layers, in model order
    after: str | None   # the identity activation after the Add, removed with it

    @property
    def removed(self) -> tuple:
        return self.layers + (self.add,) + ((self.after,) if self.after else ())

    @property
    def output(self) -> str:
        return self.after or self.add


def _zero_when_zeroed(layer) -> bool:
    """Whether `layer` outputs exactly 0 once its weights are 0 (whatever its input)."""
    cfg = layer.config
    if layer.class_name not in ZERO_WHEN_ZEROED:
        return False
    if layer.class_name == "BatchNormalization":
        return cfg.get("scale", True)  # gamma 0 and beta 0 give 0; without gamma they do not
    act = cfg.get("activation")
    act = act.get("config", {}).get("name", act) if isinstance(act, dict) else act
    return act in (None, "linear", "relu", "relu6", "tanh")


def _relu(layer, bounded_ok: bool) -> bool:
    """A ReLU that is 0 below 0 and the identity above (up to its cap when `bounded_ok`)."""
    cfg = layer.config
    if layer.class_name == "ReLU":
        plain = not cfg.get("negative_slope") and not cfg.get("threshold")
        return plain and (bounded_ok or cfg.get("max_value") is None)
    if layer.class_name == "Activation":
        return cfg.get("activation") == "relu" or (bounded_ok and cfg.get("activation") == "relu6")
    return False


def _branch_layers(spec, start: str, shortcut: tuple):
    """The layers from `shortcut` to `start` (walking up), or None if any path leaves them."""
    seen, stack = set(), [start]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        layer = spec.layers[name]
        if not layer.inputs or layer.class_name == "InputLayer":
            return None
        seen.add(name)
        for ref in layer.inputs:
            if tuple(ref) != tuple(shortcut):
                stack.append(ref[0])
    return seen


def _branch(spec, add: str, shortcut: tuple, other: tuple, consumers: dict, kept: set):
    """The branch `other` adds to `shortcut` at `add`, or None; `kept`: layers that stay."""
    if other[0] == shortcut[0] or not _zero_when_zeroed(spec.layers[other[0]]):
        return None
    layers = _branch_layers(spec, other[0], shortcut)
    if not layers or layers & kept:
        return None
    if any(c not in layers and c != add for n in layers for c in consumers[n]):
        return None
    nxt = consumers[add]
    after = nxt[0] if len(nxt) == 1 and nxt[0] not in kept else None
    if after and not (_relu(spec.layers[after], False) and _relu(spec.layers[shortcut[0]], True)):
        after = None  # not the identity on the shortcut: it stays, and takes the shortcut
    order = [n for n in spec.layers if n in layers]
    return Branch(add, tuple(shortcut), tuple(order), after)


def find_branches(spec, ignore=()) -> list[Branch]:
    """`spec`'s removable residual branches, in model order (`ignore`d layers stay)."""
    consumers = spec.consumers()
    kept = {ref[0] for ref in spec.outputs} | set(ignore)
    found = []
    for name, layer in spec.layers.items():
        if layer.class_name != "Add" or layer.is_op or len(layer.inputs) != 2 or name in kept:
            continue
        a, b = (tuple(r) for r in layer.inputs)
        for shortcut, other in ((a, b), (b, a)):
            br = _branch(spec, name, shortcut, other, consumers, kept)
            if br is not None:
                found.append(br)
                break
    return found


def _rewire(obj, old: str, new: tuple):
    """`obj` (a serialized call structure) with refs to layer `old` pointing at `new`."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = obj["config"]["keras_history"]
            if hist[0] == old:
                obj["config"]["keras_history"] = list(new)
            return obj
        return {k: _rewire(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and obj[0] == old and isinstance(obj[1], int) and isinstance(obj[2], int):
            return list(new) + list(obj[3:])
        return type(obj)(_rewire(v, old, new) for v in obj)
    return obj


def remove_spec(spec, names, ignore=()):
    """A copy of `spec` without the branches of the Add layers `names`."""
    by_add = {b.add: b for b in find_branches(spec, ignore)}
    for name in names:
        if name not in by_add:
            why = ("no layer of the model" if name not in spec.layers else
                   "not an Add whose residual branch can be removed whole")
            raise DepthError(f"depth cut {name!r}: {why}")
    spec = spec.copy()
    raw = copy.deepcopy(spec.raw)
    moved = {}  # a removed block's output -> the tensor that replaces it
    for br in (b for b in by_add.values() if b.add in set(names)):
        shortcut = tuple(br.shortcut)
        while shortcut[0] in moved:
            shortcut = moved[shortcut[0]]
        moved[br.output] = shortcut
        gone = set(br.removed)
        raw["layers"] = [e for e in raw["layers"] if (e.get("name") or e["config"]["name"])
                         not in gone]
        for entry in raw["layers"]:
            entry["inbound_nodes"] = _rewire(entry.get("inbound_nodes", []), br.output,
                                             shortcut)
        for n in gone:
            del spec.layers[n]
        for layer in spec.layers.values():
            layer.inputs = [shortcut if r[0] == br.output else r for r in layer.inputs]
    spec.raw = raw
    return spec


def remove_branches(model, names, custom_objects=None, ignore=()):
    """A new model: `model` without the residual branches of the Add layers `names`."""
    spec = remove_spec(modelspec.read_model(model), names, ignore)
    return modelspec.write_model(spec, None, custom_objects)


def zero_branches(model, names, ignore=()):
    """`model` itself with every weight of the branches `names` set to 0 (same shapes)."""
    by_add = {b.add: b for b in find_branches(modelspec.read_model(model), ignore)}
    for name in names:
        for layer in by_add[name].layers:
            lay = model.get_layer(layer)
            lay.set_weights([np.zeros_like(w) for w in lay.get_weights()])
    return model


def channel_level(level: float, before: float, after: float) -> float:
    """The level the channels must cut so that a model measuring `before` (params or
    milliseconds) loses `level` of it, once its removed branches left `after`; below 0 when
    the branches alone cut more."""
    return 1.0 - (1.0 - level) * before / after


def parse_blocks(value) -> int | str | list:
    """A --blocks value: a count of branches (>= 0) or "auto" (`tfprune.pruner`); a list or
    tuple (the branches to remove, by Add) comes back as a list."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise DepthError(f"blocks must be a count of residual branches (0 or more) or auto, "
                         f"got {value!r}")
    return count


def blocks_ok(value) -> bool:
    """Whether `value` is a --blocks value (the apps' flag validator)."""
    try:
        parse_blocks(value)
    except DepthError:
        return False
    return True


def depth_entry(spec, names, scores=None, criterion=None) -> dict:
    """The plan's record of a depth cut: the removed branches (by Add) and their scores."""
    found = [b.add for b in find_branches(spec)]
    entry = {"removed": [n for n in found if n in set(names)], "removable": found}
    if criterion:
        entry["criterion"] = criterion
    if scores is not None:
        entry["scores"] = {k: float(v) for k, v in scores.items()}
    return entry


def apply_entry(model, entry: dict, custom_objects=None):
    """`model` with the depth cut `entry` applied (DepthError naming a branch it lacks)."""
    if not entry or not entry.get("removed"):
        return model
    return remove_branches(model, entry["removed"], custom_objects)
