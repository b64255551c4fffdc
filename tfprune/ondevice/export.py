"""The on-device training module (its signatures) and its conversion to one .tflite file.

Signatures (batch size B fixed at export, images (B, H, W, C) float32 normalised):
  train(x, y int32[B])          -> loss, correct    one optimiser step; rows with y == -1 are
                                                     padding (a final partial batch) and carry
                                                     no loss; loss = mean over the other rows
  infer(x)                      -> logits, probabilities
  filter_stats(x, valid f32[B]) -> <layer>__sum_abs / __sum_sq / __zeros [C], <layer>__count,
                                   samples           per-channel sums over rows with valid == 1;
                                                     every output name is its own tensor
  save(unused f32)              -> state f32[S]      every trained variable, optimiser slot,
                                                     the step count and the learning rate
                                                     (`unused` is ignored: Android's
                                                     Interpreter.runSignature refuses a call
                                                     without inputs)
  restore(state f32[S])         -> iterations        assigns them back, bit for bit
  set_learning_rate(learning_rate f32) -> learning_rate
save/restore exchange one flat tensor rather than a file path: TF's file-writing ops
(Save/Restore, WriteFile) exist in TFLite only as Flex ops, so the app writes the tensor
(the runtime driver: an .npz with the manifest's fingerprint). The manifest's `state_layout`
says which slice holds what.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from tfprune.core import flatten, modelspec
from tfprune.errors import TfpruneError
from tfprune.ondevice import grads as G
from tfprune.ondevice.forward import LayerGraph, UnsupportedModelError
from tfprune.ondevice.optim import Optimizer
from tfprune.ondevice.runtime import MANIFEST_NAME, TFLITE_NAME

FORMAT = "tfprune.trainable/1"
SIGNATURES = ("train", "infer", "filter_stats", "save", "restore", "set_learning_rate")


def trainable_layers(graph: LayerGraph, trainable) -> list[str]:
    """Layer names whose weights train: `all`, `head` (the last layer with weights), `last:N`
    or an integer N (the last N layers with weights)."""
    with_weights = [n.name for n in graph.nodes if n.weights]
    spec = str(trainable)
    if spec == "all":
        return with_weights
    if spec == "head":
        return with_weights[-1:]
    count = spec.partition(":")[2] if spec.startswith("last:") else spec
    if not count.isdigit() or int(count) < 1:
        raise TfpruneError(f"trainable={trainable!r}: use all, head, last:N or a positive integer")
    return with_weights[-int(count):]


def default_stats_layers(model) -> list[str]:
    """tfprune.scoring.stats' measure points (where each filter's channel is consumed); none
    when the model has no prunable group."""
    from tfprune.scoring import stats
    return stats.measured_layers(stats.measure_points(model), model)


class TrainingModule(tf.Module):
    """Holds a copy of the model's weights as tf.Variables and the training signatures."""

    def __init__(self, model: keras.Model, batch_size: int = 32, trainable="all",
                 optimizer: str = "sgd", learning_rate: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 5e-4, stats_layers=None, conv_impl: str = G.DEFAULT_CONV_IMPL, **adam):
        super().__init__(name="ondevice")
        if batch_size < 1:
            raise TfpruneError(f"batch_size must be positive, got {batch_size}")
        try:
            model, self.flatten_info = flatten.flatten(model)
        except modelspec.ModelReadError as e:
            raise UnsupportedModelError(str(e)) from e
        self.graph = LayerGraph.from_model(model, conv_impl)
        self.conv_impl = conv_impl
        self.batch_size, self.num_classes = int(batch_size), int(model.output_shape[-1])
        train_layers = set(trainable_layers(self.graph, trainable))
        self.trainable_spec = str(trainable)
        self.paths, self.variables_, trained = [], [], []
        owner = {path: node.name for node in self.graph.nodes for path in node.weights.values()}
        for w in model.weights:
            layer = owner.get(w.path)
            v = tf.Variable(keras.ops.convert_to_numpy(w), name=w.path.replace("/", "__"),
                            trainable=bool(w.trainable and layer in train_layers))
            self.paths.append(w.path)
            self.variables_.append(v)
            if v.trainable:
                trained.append((w.path, v))
        self.trained_paths = [p for p, _ in trained]
        self.trained = [v for _, v in trained]
        self.optimizer = Optimizer(optimizer, self.trained, learning_rate, momentum,
                                   weight_decay, **adam)
        names = self.graph.layer_names()
        self.stats_layers = list(stats_layers if stats_layers is not None
                                 else default_stats_layers(model))
        unknown = [s for s in self.stats_layers if s not in names]
        if unknown:
            raise TfpruneError(f"stats_layers {unknown} are not layers of model {model.name!r}")
        self.x_spec = tf.TensorSpec([self.batch_size, *self.graph.input_shape], tf.float32, "x")

    def _params(self):
        return dict(zip(self.paths, self.variables_))

    # ------------------------------------------------------------ state layout
    def state_variables(self) -> list[tuple[str, tf.Variable]]:
        out = list(zip(self.trained_paths, self.trained))
        out += [(f"{self.trained_paths[i]}#{slot}", v)
                for slot, i, v in self.optimizer.slot_variables()]
        return out + [("#iterations", self.optimizer.iterations),
                      ("#learning_rate", self.optimizer.learning_rate)]

    def state_layout(self) -> list[dict]:
        layout, offset = [], 0
        for name, v in self.state_variables():
            size = int(v.shape.num_elements())
            layout.append({"name": name, "shape": [int(d) for d in v.shape], "offset": offset,
                           "size": size})
            offset += size
        return layout

    def state_size(self) -> int:
        return sum(e["size"] for e in self.state_layout())

    # ------------------------------------------------------------ signatures
    def concrete_signatures(self) -> dict:
        b = self.batch_size
        return {
            "train": tf.function(self.train, input_signature=[
                self.x_spec, tf.TensorSpec([b], tf.int32, "y")]).get_concrete_function(),
            "infer": tf.function(self.infer, input_signature=[self.x_spec]).get_concrete_function(),
            "filter_stats": tf.function(self.filter_stats, input_signature=[
                self.x_spec, tf.TensorSpec([b], tf.float32, "valid")]).get_concrete_function(),
            "save": tf.function(self.save, input_signature=[
                tf.TensorSpec([], tf.float32, "unused")]).get_concrete_function(),
            "restore": tf.function(self.restore, input_signature=[tf.TensorSpec(
                [self.state_size()], tf.float32, "state")]).get_concrete_function(),
            "set_learning_rate": tf.function(self.set_learning_rate, input_signature=[
                tf.TensorSpec([], tf.float32, "learning_rate")]).get_concrete_function(),
        }

    def loss_and_grads(self, x, y):
        with tf.GradientTape() as tape:
            logits, _ = self.graph.run(x, self._params())
            loss, count = G.softmax_cross_entropy(logits, y)
        return loss, logits, tape.gradient(loss, self.trained)

    def train(self, x, y):
        loss, logits, grads = self.loss_and_grads(x, y)
        self.optimizer.apply(grads, self.trained)
        hit = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
        return {"loss": loss, "correct": tf.reduce_sum(tf.cast(hit, tf.float32))}

    def infer(self, x):
        logits, _ = self.graph.run(x, self._params())
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    def filter_stats(self, x, valid):
        _, taps = self.graph.run(x, self._params(), tuple(self.stats_layers))
        out = {"samples": tf.reduce_sum(valid)}
        for name in self.stats_layers:
            a = taps[name]
            axes = list(range(a.shape.rank - 1))
            w = tf.reshape(valid, [-1] + [1] * (a.shape.rank - 1))
            out[f"{name}__sum_abs"] = tf.reduce_sum(tf.abs(a) * w, axis=axes)
            out[f"{name}__sum_sq"] = tf.reduce_sum(tf.square(a) * w, axis=axes)
            out[f"{name}__zeros"] = tf.reduce_sum(tf.cast(tf.equal(a, 0.0), tf.float32) * w, axis=axes)
            # counted from the layer's own activations (its non-NaN values; all of them for a
            # finite model): `reduce_sum(valid) * pixels` would be one tensor for every layer
            # of a resolution, and Android's runSignature fills only one name per tensor
            out[f"{name}__count"] = tf.reduce_sum(
                tf.cast(tf.equal(a[..., 0], a[..., 0]), tf.float32) * w[..., 0])
        return out

    def save(self, unused=None):
        del unused
        return {"state": tf.concat([tf.reshape(v, [-1]) for _, v in self.state_variables()], 0)}

    def restore(self, state):
        for entry, (_, v) in zip(self.state_layout(), self.state_variables()):
            v.assign(tf.reshape(state[entry["offset"]:entry["offset"] + entry["size"]], entry["shape"]))
        return {"iterations": self.optimizer.iterations.read_value()}

    def set_learning_rate(self, learning_rate):
        self.optimizer.learning_rate.assign(learning_rate)
        return {"learning_rate": self.optimizer.learning_rate.read_value()}

    def fingerprint(self) -> str:
        ident = {"model": self.graph.name, "layout": self.state_layout(), "batch": self.batch_size,
                 "input": list(self.graph.input_shape), "classes": self.num_classes}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def convert(module: TrainingModule, allow_flex: bool = True) -> tuple[bytes, bool]:
    """(.tflite bytes, whether Flex ops were allowed). Builtins only unless a layer had no
    builtin rule or builtin conversion fails; then, with `allow_flex`, SELECT_TF_OPS and a
    warning, else an UnsupportedModelError naming the layers."""

    signatures = module.concrete_signatures()
    if module.graph.flex_layers and not allow_flex:
        raise UnsupportedModelError(f"{module.graph.name} needs Flex ops (allow_flex=False): "
                                    f"{'; '.join(module.graph.flex_layers)}")
    attempts = [True] if module.graph.flex_layers else [False, True] if allow_flex else [False]
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        for flex in attempts:
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
            converter.experimental_enable_resource_variables = True
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
                [tf.lite.OpsSet.SELECT_TF_OPS] if flex else [])
            try:
                return converter.convert(), flex
            except Exception as err:  # the converter raises ConverterError and others
                if flex or len(attempts) == 1:
                    raise UnsupportedModelError(
                        f"LiteRT conversion of {module.graph.name}'s training signatures failed "
                        f"({'with' if flex else 'without'} Flex ops): "
                        f"{str(err).splitlines()[0]}") from err
                warnings.warn(f"builtin-only conversion of {module.graph.name} failed, "
                              f"retrying with Flex ops: {str(err).splitlines()[0]}")


def export_trainable(model, output_dir, batch_size: int = 32, trainable="all",
                     optimizer: str = "sgd", learning_rate: float = 0.01, momentum: float = 0.9,
                     weight_decay: float = 5e-4, stats_layers=None, allow_flex: bool = True,
                     conv_impl: str = G.DEFAULT_CONV_IMPL, **adam) -> dict:
    """Write `output_dir/trainable.tflite` and `trainable.json` (the manifest); return the
    manifest. `model` is a Keras model or a model spec (`.keras` path, pretrained:, zoo name);
    nested models are flattened into one functional model first (`tfprune.core.flatten`: the
    manifest's variable paths are the flat model's, its `flattened` entry says so).
    `conv_impl`: Conv2D lowering (grads.CONV_IMPLS); `matmul` suits the XNNPACK delegate."""
    from tfprune import litert
    from tfprune.fileio import atomic_write_text

    if isinstance(model, (str, os.PathLike)):
        from tfprune.models.loader import load_model
        model = load_model(os.fspath(model))
    module = TrainingModule(model, batch_size, trainable, optimizer, learning_rate, momentum,
                            weight_decay, stats_layers, conv_impl, **adam)
    tflite, _ = convert(module, allow_flex)
    info = litert.inspect(tflite)
    flex = info.flex_ops()
    manifest = {
        "format": FORMAT, "model": model.name, "fingerprint": module.fingerprint(),
        "batch_size": module.batch_size, "input_shape": list(module.graph.input_shape),
        "num_classes": module.num_classes, "trainable": module.trainable_spec,
        "trainable_variables": module.trained_paths,
        "optimizer": {"kind": optimizer, "learning_rate": learning_rate, "momentum": momentum,
                      "weight_decay": weight_decay, **adam},
        "batchnorm": "inference mode, moving statistics frozen (gamma/beta train)",
        "dropout": "disabled (identity) in every signature",
        "conv_impl": conv_impl,
        "partial_batch": "pad to batch_size; label -1 (train) / valid 0 (filter_stats) marks padding",
        "stats_layers": module.stats_layers,
        "state_layout": module.state_layout(),
        "state_size": module.state_size(),
        "signatures": info.signatures if flex else litert.signature_details(tflite),
        "ops": info.op_counts(), "flex_ops": flex, "flex_required": bool(flex),
        "flex_layers": list(module.graph.flex_layers), "size_bytes": len(tflite),
    }
    if module.flatten_info:
        manifest["flattened"] = module.flatten_info.describe()
    from tfprune.litert.convert import write_tflite

    out = Path(output_dir)
    write_tflite(tflite, out / TFLITE_NAME)
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1))
    return manifest
