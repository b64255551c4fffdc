"""Flatten nested Keras 3 models (a Functional or Sequential model used as a layer, to any
depth) into one functional model with the same layers, weights and outputs.

    flat, info = flatten(model)   # `model` itself (info None) when nothing is nested

The usual transfer-learning model, `head(base(inputs))` with `base` a keras.applications
model, and ConvNeXt's nested Sequential stem are models inside a model; the channel graph
(`tfprune.core.graph`), the surgery and the on-device exporter read one flat functional
model. The flattener works on configs only (`get_config()` of every level): each nested
model's input layers are replaced by the tensors it was called on, each reference to a
nested model's output by the inner tensor it returns, every other layer entry is kept as it
is (its call arguments re-pointed), and the flat config is rebuilt with `from_config`
through `tfprune.core.modelspec` (`ModelSpec` -> `write_model`), every layer's weights set by
name from the original layer objects. Layer names stay; an inner layer whose name another
layer already has is prefixed with its sub-model's name (`base_conv1`), and `info.renamed`
lists those. A nested call's `training=False` is carried to the inner layers that take a
`training` argument, so the flat model runs as the nested one did.

Refused with `modelspec.ModelReadError` naming the layer: a sub-model called more than once,
a layer object used in two places, a sub-model called with tensor keyword arguments or on a
different number of tensors than it has inputs, nested tf_keras models.
"""
from __future__ import annotations

import copy
import dataclasses

from tfprune.core import modelspec
from tfprune.core.modelspec import LayerSpec, ModelReadError, ModelSpec


@dataclasses.dataclass
class FlattenInfo:
    submodels: list               # flattened sub-model paths ("outer/inner"), outermost first
    renamed: dict                 # "submodel/layer" path -> its name in the flat model
    layers: int                   # layers (and input layers) of the flat model

    def describe(self) -> str:
        text = (f"nested model{'s' if len(self.submodels) > 1 else ''} "
                f"{', '.join(self.submodels)} flattened into one functional model "
                f"({self.layers} layers)")
        if self.renamed:
            text += "; renamed: " + ", ".join(f"{k} -> {v}" for k, v in self.renamed.items())
        return text


def _is_model(op) -> bool:
    """A Functional or Sequential model (a subclassed Model has no layer graph to flatten)."""
    import keras
    from keras.src.models.functional import Functional
    return isinstance(op, (Functional, keras.Sequential))


def is_nested(model) -> bool:
    """Whether any layer of `model` is itself a Functional or Sequential model."""
    return any(_is_model(layer) for layer in model.layers)


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry["config"]["name"]


def _tensor(ref, shape=None, dtype="float32") -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": dtype, "keras_history": list(ref)}}


def _repoint(obj, resolve):
    """A copy of a serialized call-argument structure with every keras_history resolved."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            cfg = dict(obj["config"], keras_history=list(resolve(obj["config"]["keras_history"])))
            return dict(obj, config=cfg)
        return {k: _repoint(v, resolve) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_repoint(v, resolve) for v in obj]
    return obj


class _Flattener:
    def __init__(self, top, config):
        self.entries, self.specs = [], {}
        ops = _operations(top)
        self.used = {_entry_name(e) for e in config["layers"]
                     if not _is_model(ops.get(_entry_name(e)))}
        self.seen, self.submodels, self.renamed = {}, [], {}

    def new_name(self, name: str, path: tuple) -> str:
        if name not in self.used or not path:
            self.used.add(name)
            return name
        for k in range(1, len(path) + 1):
            candidate = "_".join(path[-k:] + (name,))
            if candidate not in self.used:
                break
        else:
            i = 1
            while f"{candidate}_{i}" in self.used:
                i += 1
            candidate = f"{candidate}_{i}"
        self.used.add(candidate)
        self.renamed["/".join(path + (name,))] = candidate
        return candidate

    def model(self, model, path: tuple, feeds=None, call_kwargs=None, config=None) -> list:
        """Append `model`'s layers; returns its output refs in the flat model. `feeds`: the
        flat refs its inputs take (None at the top level: its input layers are kept)."""
        config = config or model.get_config()
        ops = _operations(model)
        sequential = type(model).__name__ == "Sequential" or "input_layers" not in config
        entries = config["layers"]
        where = {}                                       # inner name -> resolver of a ref

        def resolve(ref):
            name, _, index = ref
            if name not in where:
                raise ModelReadError(f"layer {'/'.join(path + (name,))!r} is not in the model")
            return where[name](int(index))

        if sequential:
            input_names = [_entry_name(e) for e in entries[:1] if e["class_name"] == "InputLayer"]
            if not input_names:  # a Sequential built without keras.Input: its input layer
                input_names = [model.inputs[0].name.split(":")[0]]
                entries = [{"module": "keras.layers", "class_name": "InputLayer",
                            "config": {"batch_shape": list(model.inputs[0].shape),
                                       "dtype": model.inputs[0].dtype, "name": input_names[0]},
                            "registered_name": None}] + entries
            inputs = [(input_names[0], 0, 0)]
        else:
            inputs = modelspec._io_refs(config["input_layers"])
        if feeds is not None and len(feeds) != len(inputs):
            raise ModelReadError(f"layer {'/'.join(path)!r} is a nested model with "
                                 f"{len(inputs)} inputs called on {len(feeds)} tensors; it "
                                 "cannot be flattened")
        previous = shape = None
        for entry in entries:
            name = _entry_name(entry)
            op = ops.get(name)
            nodes = entry.get("inbound_nodes")
            if sequential:
                nodes = [] if entry["class_name"] == "InputLayer" else [
                    {"args": [_tensor(previous, shape)], "kwargs": {}}]
            if len(nodes or []) > 1:
                kind = "nested model" if _is_model(op) else "layer"
                raise ModelReadError(f"{kind} {'/'.join(path + (name,))!r} is called "
                                     f"{len(nodes)} times; a {kind} used more than once "
                                     "cannot be flattened")
            if entry["class_name"] == "InputLayer" and feeds is not None:
                feed = feeds[[r[0] for r in inputs].index(name)]
                where[name] = lambda i, feed=feed: feed
            elif _is_model(op):
                node = _repoint(nodes[0], resolve) if nodes else {"args": [], "kwargs": {}}
                outs = self.submodel(op, path + (name,), node, call_kwargs, entry["config"])
                where[name] = lambda i, outs=outs: outs[i]
            else:
                flat = self.layer(entry, op, path, nodes, resolve, call_kwargs)
                where[name] = lambda i, flat=flat: (flat, 0, i)
            previous, shape = (name, 0, 0), _output_shape(entry, op)
        if sequential:
            return [resolve(previous)]
        return [resolve(ref) for ref in modelspec._io_refs(config["output_layers"])]

    def submodel(self, op, path, node, call_kwargs, config) -> list:
        if modelspec._flavor(op) != "keras":
            raise ModelReadError(f"layer {'/'.join(path)!r} is a nested tf_keras model; only "
                                 "Keras 3 models are flattened")
        if id(op) in self.seen:
            raise ModelReadError(f"nested model {'/'.join(path)!r} is used twice (also as "
                                 f"{self.seen[id(op)]!r}); it cannot be flattened")
        self.seen[id(op)] = "/".join(path)
        feeds = modelspec._keras3_refs(node.get("args", []), [])
        kwargs = dict(node.get("kwargs") or {})
        tensors = modelspec._keras3_refs(kwargs, [])
        if tensors or set(kwargs) - {"training", "mask"} or kwargs.get("mask") is not None:
            raise ModelReadError(f"nested model {'/'.join(path)!r} is called with keyword "
                                 f"arguments {sorted(kwargs)}; it cannot be flattened")
        if kwargs.get("training") is not None:
            call_kwargs = dict(call_kwargs or {}, training=kwargs["training"])
        self.submodels.append("/".join(path))
        return self.model(op, path, feeds, call_kwargs, config)

    def layer(self, entry, op, path, nodes, resolve, call_kwargs) -> str:
        name = _entry_name(entry)
        if op is not None and id(op) in self.seen:
            raise ModelReadError(f"layer {'/'.join(path + (name,))!r} is used in two places "
                                 f"(also as {self.seen[id(op)]!r}); it cannot be flattened")
        if op is None and entry["class_name"] != "InputLayer":
            raise ModelReadError(f"layer {'/'.join(path + (name,))!r} of the config is not in "
                                 "the model")
        if op is not None:
            self.seen[id(op)] = "/".join(path + (name,))
        new = self.new_name(name, path)
        node_list = [_repoint(n, resolve) for n in nodes or []]
        if node_list and call_kwargs and getattr(op, "_call_has_training_arg", False):
            kwargs = node_list[0].setdefault("kwargs", {})
            for key, value in call_kwargs.items():
                kwargs.setdefault(key, value)
        config = copy.deepcopy(entry["config"])
        if "name" in config:
            config["name"] = new
        flat = {k: v for k, v in entry.items() if k not in ("build_config", "compile_config")}
        flat.update(config=config, name=new, inbound_nodes=node_list)
        flat.setdefault("module", "keras.layers")
        flat.setdefault("registered_name", None)
        self.entries.append(flat)
        weights = op.get_weights() if op is not None and hasattr(op, "get_weights") else []
        self.specs[new] = LayerSpec(new, entry["class_name"], config, [], [], (), weights, [],
                                    entry.get("module"))
        return new


def _output_shape(entry, op) -> list:
    """The static output shape of a Sequential's layer (only a placeholder of the call
    argument: from_config re-derives every shape)."""
    if entry["class_name"] == "InputLayer":
        return list(entry["config"].get("batch_shape") or [None])
    try:
        return list(op.output.shape)
    except (AttributeError, ValueError):
        return [None]


def _operations(model) -> dict:
    if type(model).__name__ == "Sequential" or not hasattr(model, "operations"):
        return {layer.name: layer for layer in model.layers}
    return {op.name: op for op in model.operations}


def _io_config(refs) -> list:
    """One ref as Keras writes a single input/output (a plain call, no list); several as a list."""
    return list(refs[0]) if len(refs) == 1 else [list(r) for r in refs]


def flatten_spec(model) -> ModelSpec:
    """The flat functional `ModelSpec` of `model` (configs and weights; the shapes are read
    back by `tfprune.core.modelspec.read_model` once written)."""
    config = model.get_config()
    f = _Flattener(model, config)
    outputs = f.model(model, (), config=config)
    inputs = [(e["name"], 0, 0) for e in f.entries if e["class_name"] == "InputLayer"]
    raw = {"name": model.name, "trainable": model.trainable, "layers": f.entries,
           "input_layers": _io_config(inputs), "output_layers": _io_config(outputs)}
    spec = ModelSpec(model.name, "functional", "keras", f.specs, inputs, outputs, raw)
    spec.flatten_info = FlattenInfo(f.submodels, f.renamed, len(f.entries))
    return spec


def flatten(model, custom_objects=None):
    """(flat functional model, FlattenInfo), or (`model`, None) when no layer is a model."""
    if not is_nested(model):
        return model, None
    if modelspec._flavor(model) != "keras":
        raise ModelReadError(f"model {model.name!r} is a tf_keras model with nested models; only "
                             "Keras 3 models are flattened")
    spec = flatten_spec(model)
    flat = modelspec.write_model(spec, custom_objects=custom_objects)
    return flat, spec.flatten_info


def flatten_model(model, custom_objects=None):
    """`model` as one functional model (itself when nothing is nested)."""
    return flatten(model, custom_objects)[0]
