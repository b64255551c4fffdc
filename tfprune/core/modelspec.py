"""Model reader/writer: a Keras model <-> a neutral `ModelSpec` (configs, wiring, weights).

`read_model(model)` reads a built Keras 3 or tf_keras (Keras 2) model through its public
contract only: `model.get_config()` (layer configs and the call graph), each layer's
`get_weights()` and weight paths, and the static shape of each layer output. Functional and
Sequential models are read; a nested model (a Model used as a layer) is refused with the
layer's name (`tfprune.core.flatten` turns it into one functional model first), and so is a
layer called more than once (shared layers).

`write_model(spec, keras_module=None, custom_objects=None)` rebuilds a model from a (possibly
edited) spec with `keras_module.Model.from_config` / `Sequential.from_config` and sets every
layer's weights by name. `keras_module` defaults to the flavour the spec was read from; pass
the `tf_keras` module to turn a Keras 3 model into a tf_keras model (what tfmot needs): the
writer then translates the Keras 3 config into tf_keras's legacy layout (inbound nodes as
`[layer, node, tensor, kwargs]` lists, dtype policies as plain dtype names, no `build_config`,
only constructor arguments the tf_keras class accepts, `batch_shape` -> `batch_input_shape`).
Keras 3 backend-op nodes (e.g. `x + 3.0` inside MobileNetV3) have no tf_keras layer and are
refused by name in that direction. Import tf_keras in a separate process from tfmot users.

Edits happen on the spec: replace `spec.layers[name].config` and `.weights`; layers left
alone are written back with their exact weight arrays (bit-identical).
"""
from __future__ import annotations

import copy
import dataclasses
import inspect

from tfprune.errors import TfpruneError

OP_MODULE_PREFIX = "keras.src.ops"


class ModelReadError(TfpruneError):
    """A model the reader cannot represent; the message names the layer and why."""


@dataclasses.dataclass
class LayerSpec:
    """One layer (or Keras 3 backend op) of a model, called exactly once."""

    name: str
    class_name: str
    config: dict                  # the layer's own get_config() (not the model wrapper)
    inputs: list                  # tensor refs (layer, node, tensor) in call order, flattened
    input_shapes: list            # static shapes of `inputs`, batch axis included
    output_shape: tuple
    weights: list                 # numpy arrays in get_weights() order
    weight_paths: list
    module: str | None = None     # Keras 3 'module' key (backend ops: keras.src.ops.*)

    @property
    def is_op(self) -> bool:
        return bool(self.module) and self.module.startswith(OP_MODULE_PREFIX)


@dataclasses.dataclass
class ModelSpec:
    name: str
    kind: str                     # "functional" | "sequential"
    flavor: str                   # "keras" (Keras 3) | "tf_keras"
    layers: dict                  # name -> LayerSpec, in topological (config) order
    inputs: list                  # tensor refs of model inputs
    outputs: list                 # tensor refs of model outputs
    raw: dict                     # the model config as read (layer configs not kept in sync)

    def consumers(self) -> dict:
        """{layer name: the names of the layers that take its output}, every layer a key."""
        out = {name: [] for name in self.layers}
        for name, layer in self.layers.items():
            for ref in layer.inputs:
                out[ref[0]].append(name)
        return out

    def copy(self) -> "ModelSpec":
        """Layer configs deep-copied; weight arrays and `raw` shared (replace, don't mutate)."""
        layers = {n: dataclasses.replace(l, config=copy.deepcopy(l.config),
                                         weights=list(l.weights)) for n, l in self.layers.items()}
        return dataclasses.replace(self, layers=layers)


def _flavor(model) -> str:
    return "tf_keras" if type(model).__module__.startswith(("tf_keras", "keras.src.engine",
                                                             "tensorflow.python.keras")) else "keras"


def _operations(model) -> dict:
    ops = getattr(model, "operations", None)
    return {op.name: op for op in (ops if ops is not None else model.layers)}


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _keras3_refs(obj, out):
    """Collect keras_history refs from a Keras 3 serialized call-argument structure."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(tuple(obj["config"]["keras_history"]))
        else:
            for v in obj.values():
                _keras3_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _keras3_refs(v, out)
    return out


def _inbound_refs(entry: dict, flavor: str) -> list:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ModelReadError(f"layer {entry['name']!r} is called {len(nodes)} times; shared "
                             "layers are not supported")
    if not nodes:
        return []
    if flavor == "keras":
        return _keras3_refs(nodes[0], [])
    return [tuple(ref[:3]) for ref in nodes[0]]


def read_model(model) -> ModelSpec:
    """The neutral spec of a built Keras 3 / tf_keras functional or Sequential model."""
    flavor = _flavor(model)
    config = model.get_config()
    sequential = type(model).__name__ == "Sequential"
    ops = _operations(model)
    entries = config["layers"]
    layers = {}
    previous = None
    if sequential and entries and entries[0]["class_name"] != "InputLayer":
        shape = tuple(model.inputs[0].shape)
        name = model.inputs[0].name.split(":")[0]
        layers[name] = LayerSpec(name, "InputLayer", {"batch_shape": list(shape), "name": name},
                                 [], [], shape, [], [])
        previous = (name, 0, 0)
    for entry in entries:
        name = entry.get("name") or entry["config"]["name"]
        cls = entry["class_name"]
        if cls in ("Functional", "Sequential", "Model") or "layers" in entry["config"]:
            raise ModelReadError(f"layer {name!r} is a nested model ({cls}); flatten it into "
                                 "one functional model first (tfprune.core.flatten)")
        if sequential:
            refs = [] if cls == "InputLayer" else [previous]
        else:
            refs = _inbound_refs(entry, flavor)
        op = ops.get(name)
        if op is None and cls == "InputLayer" and sequential:
            shape = _shape(model.inputs[0])
            layers[name] = LayerSpec(name, cls, entry["config"], [], [], shape, [], [],
                                     entry.get("module"))
            previous = (name, 0, 0)
            continue
        if op is None:
            raise ModelReadError(f"layer {name!r} of the config is not in the model")
        out = op.output
        out_shape = _shape(out[0] if isinstance(out, (list, tuple)) else out)
        if isinstance(out, (list, tuple)) and len(out) > 1:
            out_shape = tuple(_shape(t) for t in out)
        weights = op.get_weights() if hasattr(op, "get_weights") else []
        paths = [getattr(w, "path", None) or w.name for w in getattr(op, "weights", [])]
        layers[name] = LayerSpec(name, cls, entry["config"], refs, [], out_shape, weights, paths,
                                 entry.get("module"))
        previous = (name, 0, 0)
    for spec in layers.values():
        spec.input_shapes = [_ref_shape(layers, ref) for ref in spec.inputs]
    if sequential:
        last = list(layers)[-1]
        inputs, outputs = [(list(layers)[0], 0, 0)], [(last, 0, 0)]
    else:
        inputs = _io_refs(config["input_layers"])
        outputs = _io_refs(config["output_layers"])
    return ModelSpec(config.get("name", model.name), "sequential" if sequential else "functional",
                     flavor, layers, inputs, outputs, config)


def _io_refs(value) -> list:
    if value and isinstance(value[0], str):
        value = [value]
    return [tuple(v[:3]) for v in value]


def _ref_shape(layers: dict, ref) -> tuple:
    shape = layers[ref[0]].output_shape
    if shape and isinstance(shape[0], tuple):
        return shape[ref[2]]
    return shape


def _keras_module(flavor: str):
    if flavor == "tf_keras":
        import tf_keras
        return tf_keras
    import keras
    return keras


def write_model(spec: ModelSpec, keras_module=None, custom_objects=None):
    """Rebuild the model described by `spec` with `keras_module` (default: its own flavour)."""
    module = keras_module or _keras_module(spec.flavor)
    target = "tf_keras" if module.__name__.startswith("tf_keras") else "keras"
    config = _model_config(spec, target, module)
    if target == "keras":
        # The config comes from a model already in this process (not an untrusted file), so
        # its Lambda layers may be rebuilt: safe_mode=False.
        model_class = "Sequential" if spec.kind == "sequential" else "Functional"
        model = module.saving.deserialize_keras_object(
            {"module": f"keras.src.models.{model_class.lower()}", "class_name": model_class,
             "config": config, "registered_name": model_class},
            custom_objects=custom_objects, safe_mode=False)
    else:
        with module.utils.custom_object_scope(custom_objects or {}):
            cls = module.Sequential if spec.kind == "sequential" else module.Model
            model = cls.from_config(config)
    by_name = _operations(model)
    for name, layer in spec.layers.items():
        if layer.weights:
            by_name[name].set_weights(layer.weights)
    return model


def _model_config(spec: ModelSpec, target: str, module) -> dict:
    config = {k: v for k, v in spec.raw.items() if k != "layers"}
    entries = []
    for entry in spec.raw["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        layer = spec.layers[name]
        entry = dict(entry, config=copy.deepcopy(layer.config))
        entry.pop("build_config", None)
        if target != spec.flavor:
            entry = _translate_entry(entry, layer, spec, target, module)
        entries.append(entry)
    config["layers"] = entries
    if target != spec.flavor:
        for key in ("input_layers", "output_layers"):
            if key in config:
                config[key] = [list(r) for r in (spec.inputs if key == "input_layers"
                                                 else spec.outputs)]
        if spec.kind == "sequential":
            config.pop("build_input_shape", None)
    return config


def _translate_entry(entry: dict, layer: LayerSpec, spec: ModelSpec, target: str, module) -> dict:
    if target != "tf_keras":
        raise ModelReadError("only Keras 3 -> tf_keras translation is supported")
    if layer.is_op:
        raise ModelReadError(f"layer {layer.name!r} is a Keras 3 backend op "
                             f"({layer.module}.{layer.class_name}); tf_keras has no layer for it")
    cls = getattr(module.layers, layer.class_name, None)
    if cls is None:
        raise ModelReadError(f"layer {layer.name!r}: tf_keras has no layer {layer.class_name}")
    cfg = _plain(entry["config"], module)
    if layer.class_name == "InputLayer":
        cfg["batch_input_shape"] = cfg.pop("batch_shape", None) or cfg.get("batch_input_shape")
        cfg = {k: cfg[k] for k in ("batch_input_shape", "dtype", "sparse", "ragged", "name")
               if k in cfg}
    else:
        cfg = _accepted(cls, cfg, ("name", "trainable", "dtype"))
    out = {"class_name": layer.class_name, "config": cfg, "name": layer.name}
    if spec.kind == "functional":
        out["inbound_nodes"] = [[[r[0], r[1], r[2], {}] for r in layer.inputs]] if layer.inputs else []
    return out


def _accepted(cls, config: dict, extra=()) -> dict:
    """The entries of `config` that `cls.__init__` names (plus `extra`)."""
    names = set(inspect.signature(cls.__init__).parameters) | set(extra)
    return {k: v for k, v in config.items() if k in names}


def _plain(value, module):
    """Keras 3 serialized objects -> tf_keras's {'class_name', 'config'} form, keeping only
    the arguments the tf_keras class takes; dtype policies -> their dtype name."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy":
            return value["config"]["name"]
        if "class_name" in value and "config" in value:
            config = _plain(value["config"], module)
            for kind in ("initializers", "regularizers", "constraints"):
                cls = getattr(getattr(module, kind), value["class_name"], None)
                if isinstance(cls, type) and isinstance(config, dict):
                    config = _accepted(cls, config)
                    break
            return {"class_name": value["class_name"], "config": config}
        return {k: _plain(v, module) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, module) for v in value]
    return value

