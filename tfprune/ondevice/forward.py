"""A Keras model's forward pass rebuilt from its config over plain tensors.

`LayerGraph.from_model` reads a functional or Sequential Keras 3 model through its public
contract (`modelspec.read_model`: `get_config()`'s layers in call order with their inputs,
and each layer's weight paths), and `LayerGraph.run` evaluates it with the builtin-gradient
ops of `grads`, one rule per layer type (`RULES`). BatchNorm runs in inference mode (a
per-channel affine from its moving statistics) and Dropout is the identity: on-device
training keeps the graph deterministic and small batches would make batch statistics
unreliable. A layer configuration without a builtin rule falls back to the
plain TF op (whose gradient needs the Flex runtime); the graph records it in `flex_layers`.
"""
from __future__ import annotations

import dataclasses
import warnings

import keras
import tensorflow as tf

from tfprune.core import modelspec
from tfprune.errors import TfpruneError
from tfprune.ondevice import grads as G


class UnsupportedModelError(TfpruneError):
    """A model the on-device exporter cannot rebuild; the message names the layer."""


@dataclasses.dataclass
class Node:
    name: str
    kind: str
    config: dict
    inputs: list[str]
    weights: dict[str, str]          # role (kernel, bias, gamma, ...) -> variable path
    conv_impl: str = "conv"          # Conv2D lowering (grads.CONV_IMPLS)


def _activation(node: Node, x, flex: list):
    act = node.config.get("activation", "linear")
    act = act if isinstance(act, str) else act.get("config", {}).get("name", str(act))
    if act == "linear":
        return x
    if act == "relu":
        return G.relu(x)
    if act == "relu6":
        return G.relu(x, 6.0)
    flex.append(f"{node.name}: activation {act!r} uses TF autodiff")
    return keras.activations.get(act)(x)


def _conv(node, xs, p, flex):
    c = node.config
    if tuple(c.get("dilation_rate", (1, 1))) != (1, 1) or c.get("groups", 1) != 1:
        flex.append(f"{node.name}: dilated/grouped Conv2D uses TF autodiff")
        y = tf.nn.conv2d(xs[0], p["kernel"], list(c["strides"]), c["padding"].upper(),
                         dilations=list(c.get("dilation_rate", (1, 1))))
    else:
        y = G.conv2d(xs[0], p["kernel"], c["strides"], c["padding"], impl=node.conv_impl)
    if c.get("use_bias"):
        y = G.bias_add(y, p["bias"])
    return _activation(node, y, flex)


def _depthwise(node, xs, p, flex):
    c = node.config
    kernel = p["kernel"]
    if c.get("depth_multiplier", 1) != 1:
        flex.append(f"{node.name}: DepthwiseConv2D with depth_multiplier "
                    f"{c['depth_multiplier']} uses TF autodiff")
        y = tf.nn.depthwise_conv2d(xs[0], kernel, [1, *c["strides"], 1], c["padding"].upper())
    else:
        y = G.depthwise_conv2d(xs[0], kernel, c["strides"], c["padding"])
    if c.get("use_bias"):
        y = G.bias_add(y, p["bias"])
    return _activation(node, y, flex)


def _dense(node, xs, p, flex):
    y = G.dense(xs[0], p["kernel"])
    if node.config.get("use_bias"):
        y = G.bias_add(y, p["bias"])
    return _activation(node, y, flex)


def _batchnorm(node, xs, p, flex):
    eps = node.config["epsilon"]
    scale = tf.math.rsqrt(p["moving_variance"] + eps)
    if "gamma" in p:
        scale = scale * p["gamma"]
    shift = -p["moving_mean"] * scale
    if "beta" in p:
        shift = shift + p["beta"]
    return xs[0] * scale + shift


def _relu(node, xs, p, flex):
    c = node.config
    if c.get("negative_slope", 0.0) or c.get("threshold", 0.0):
        flex.append(f"{node.name}: leaky/thresholded ReLU uses TF autodiff")
        return keras.activations.relu(xs[0], negative_slope=c.get("negative_slope", 0.0),
                                      max_value=c.get("max_value"), threshold=c.get("threshold", 0.0))
    return G.relu(xs[0], c.get("max_value"))


def _maxpool(node, xs, p, flex):
    c = node.config
    pool, strides = tuple(c["pool_size"]), tuple(c.get("strides") or c["pool_size"])
    if pool != strides:
        flex.append(f"{node.name}: overlapping max pooling uses TF autodiff (MaxPoolGrad)")
        return tf.nn.max_pool2d(xs[0], pool, strides, c["padding"].upper())
    return G.max_pool(xs[0], pool, c["padding"])


def _gap(node, xs, p, flex):
    return G.global_avg_pool(xs[0], keepdims=node.config.get("keepdims", False))


def _flatten(node, xs, p, flex):
    return tf.reshape(xs[0], [xs[0].shape[0], -1])


def _identity(node, xs, p, flex):
    return xs[0]


RULES = {
    "Conv2D": _conv, "DepthwiseConv2D": _depthwise, "Dense": _dense,
    "BatchNormalization": _batchnorm, "ReLU": _relu, "Activation": lambda n, xs, p, f: _activation(n, xs[0], f),
    "MaxPooling2D": _maxpool, "GlobalAveragePooling2D": _gap, "Flatten": _flatten,
    "Dropout": _identity, "SpatialDropout2D": _identity,
    "Add": lambda n, xs, p, f: tf.add_n(xs) if len(xs) > 2 else xs[0] + xs[1],
    "Concatenate": lambda n, xs, p, f: tf.concat(xs, axis=n.config.get("axis", -1)),
}


@dataclasses.dataclass
class LayerGraph:
    """The model's layers in evaluation order, its input and output layer names."""

    name: str
    nodes: list[Node]
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    flex_layers: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_model(cls, model: keras.Model, conv_impl: str = "conv") -> "LayerGraph":
        """Read a functional or Sequential Keras 3 model (`modelspec.read_model`: configs,
        call graph, weight paths). `conv_impl`: how Conv2D layers lower (grads.CONV_IMPLS)."""
        G.check_conv_impl(conv_impl)
        try:
            spec = modelspec.read_model(model)
        except modelspec.ModelReadError as e:
            raise UnsupportedModelError(str(e)) from e
        if spec.flavor != "keras":
            raise UnsupportedModelError(f"model {spec.name!r} is a tf_keras (Keras 2) model; the "
                                        "on-device exporter reads Keras 3 models")
        if len(spec.inputs) != 1 or len(spec.outputs) != 1:
            raise UnsupportedModelError(f"model {spec.name!r} must have one input and one output")
        nodes = []
        for name, layer in spec.layers.items():
            if layer.class_name == "InputLayer":
                continue
            if layer.is_op:
                raise UnsupportedModelError(
                    f"layer {name!r} is a Keras op ({layer.module}.{layer.class_name}) called on a "
                    "tensor, not a layer; write it as a layer (e.g. keras.layers.Add, Rescaling)")
            if layer.class_name not in RULES:
                raise UnsupportedModelError(
                    f"layer {name!r} of type {layer.class_name} has no on-device rule; "
                    f"supported: {', '.join(sorted(RULES))}")
            weights = {path.rsplit("/", 1)[-1]: path for path in layer.weight_paths}
            nodes.append(Node(name, layer.class_name, layer.config,
                              [ref[0] for ref in layer.inputs], weights, conv_impl))
        input_name = spec.inputs[0][0]
        return cls(spec.name, nodes, input_name, tuple(spec.layers[input_name].output_shape[1:]),
                   spec.outputs[0][0])

    def run(self, x, params: dict, taps: tuple[str, ...] = ()):
        """Evaluate on `x` with `params` {variable path: tensor or variable}; returns
        (output, {tap layer name: its output})."""
        values, flex = {self.input_name: x}, []
        for node in self.nodes:
            p = {role: params[path] for role, path in node.weights.items()}
            values[node.name] = RULES[node.kind](node, [values[i] for i in node.inputs], p, flex)
        for message in flex:
            if message not in self.flex_layers:
                warnings.warn(f"on-device export: {message}; the model will need the Flex runtime")
                self.flex_layers.append(message)
        return values[self.output_name], {t: values[t] for t in taps}

    def layer_names(self) -> list[str]:
        return [n.name for n in self.nodes]
