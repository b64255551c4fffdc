"""Layer rules: how channels pass through each layer type, and how to slice it.

Every tensor's last axis carries a *provenance*: an int array, one entry per channel, holding
the id of the filter ("atom") that channel comes from, or -1 for channels nothing may remove
(model inputs, outputs of blocked layers). A rule, one per layer type, says:

- `propagate(layer, ins, b)`: the output provenance from the input provenances. Producers ask
  the builder `b` for fresh atoms (`b.new_atoms`); merges tie channels together
  (`b.union`); anything not channel-wise calls `b.block(prov, layer, reason)`.
- `weight_axes(layer)`: per weight, which axes are input channels ("in"), input channels
  repeated by a depth multiplier ("in_rep") or output channels ("out"). This one table slices
  output channels and input channels alike (the rule pair of the design), counts parameters
  after pruning, and tells scoring where a filter lives.
- `edit(config, layer, n_out)`: the config of the narrower layer (`filters`, `units`, ...).
- `mac_weights` and `positions(layer)`: MACs = positions x sizes of those weights.

Adding a layer type means adding one entry to `RULES`; a rule whose behaviour depends on the
layer's config may hand a variant for that layer from `specialise(layer)` (a Conv2D with one
group per input channel is a depthwise convolution). Unknown types block.
"""
from __future__ import annotations

import numpy as np


def channels(shape) -> int:
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def spatial(shape) -> int:
    return int(np.prod([d for d in shape[1:-1]], dtype=np.int64)) if len(shape) > 2 else 1


class Rule:
    producer = False
    mac_weights: tuple = ()

    def propagate(self, layer, ins, b):
        return ins[0] if ins else b.fixed(channels(layer.output_shape))

    def weight_axes(self, layer):
        return [{} for _ in layer.weights]

    def edit(self, config, layer, n_out):
        return config

    def positions(self, layer):
        return spatial(layer.output_shape)

    def specialise(self, layer) -> "Rule":
        """The rule of this particular layer (a variant of the type's rule, or itself)."""
        return self


class PassThrough(Rule):
    """Channel c in -> channel c out; per-channel weights (BatchNorm, PReLU) sliced on 'out'."""

    def weight_axes(self, layer):
        c = channels(layer.output_shape)
        return [{w.ndim - 1: "out"} if w.ndim and w.shape[-1] == c and c > 1 else {}
                for w in layer.weights]


class BatchNorm(PassThrough):
    def propagate(self, layer, ins, b):
        axis = layer.config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if axis not in (-1, len(layer.output_shape) - 1):
            return Blocker(f"normalises axis {axis}, not the channel axis").propagate(layer, ins, b)
        return ins[0]


class Activation(PassThrough):
    CHANNEL_MIXING = {"softmax", "log_softmax"}

    def propagate(self, layer, ins, b):
        act = layer.config.get("activation")
        name = act if isinstance(act, str) else (act or {}).get("class_name", "?")
        if name in self.CHANNEL_MIXING or not isinstance(act, str):
            return Blocker(f"activation {name} mixes channels").propagate(layer, ins, b)
        return ins[0]


class Rescaling(PassThrough):
    def propagate(self, layer, ins, b):
        if np.ndim(layer.config.get("scale", 1.0)) or np.ndim(layer.config.get("offset", 0.0)):
            return Blocker("per-channel rescaling").propagate(layer, ins, b)
        return ins[0]


class Blocker(Rule):
    """Not channel-wise: the channels reaching it stay; its outputs are fixed."""

    def __init__(self, reason="not channel-wise"):
        self.reason = reason

    def propagate(self, layer, ins, b):
        for prov in ins:
            b.block(prov, layer.name, f"{layer.class_name}: {self.reason}")
        return b.fixed(channels(layer.output_shape))


class MultiOutputBlocker(Blocker):
    """A layer with several outputs: its inputs stay, each output is fixed."""

    def propagate(self, layer, ins, b):
        for prov in ins:
            b.block(prov, layer.name, f"{layer.class_name}: {self.reason}")
        return [b.fixed(channels(shape)) for shape in layer.output_shape]


class Producer(Rule):
    """Conv-like and Dense layers: new output channels; kernel axes (in, out) at (-2, -1)."""

    producer = True
    mac_weights = (0,)
    size_key = "filters"

    def specialise(self, layer):
        groups = int(layer.config.get("groups", 1))
        if groups > 1 and layer.input_shapes and groups == channels(layer.input_shapes[0]):
            return GROUPED_DEPTHWISE
        return self

    def propagate(self, layer, ins, b):
        groups = int(layer.config.get("groups", 1))
        if groups != 1:  # inputs stay; outputs go in equal numbers from each conv group
            for prov in ins:
                b.block(prov, layer.name, f"{layer.class_name}: input of a grouped convolution")
        return b.new_atoms(layer.name, channels(layer.output_shape), blocks=groups)

    def weight_axes(self, layer):
        nd = layer.weights[0].ndim
        axes = {nd - 1: "out"} if layer.config.get("groups", 1) != 1 else {nd - 2: "in", nd - 1: "out"}
        return [axes] + [{0: "out"} for _ in layer.weights[1:]]

    def edit(self, config, layer, n_out):
        config[self.size_key] = n_out
        return config


class Dense(Producer):
    size_key = "units"


class ConvTranspose(Producer):
    def weight_axes(self, layer):
        nd = layer.weights[0].ndim
        return [{nd - 2: "out", nd - 1: "in"}] + [{0: "out"} for _ in layer.weights[1:]]

    def positions(self, layer):
        return spatial(layer.input_shapes[0])


class Separable(Producer):
    mac_weights = (0, 1)

    def weight_axes(self, layer):
        nd = layer.weights[0].ndim
        return [{nd - 2: "in"}, {nd - 2: "in_rep", nd - 1: "out"}] + [
            {0: "out"} for _ in layer.weights[2:]]


class Depthwise(Rule):
    """Input channel c -> output channels c*m .. c*m+m-1 (m = depth_multiplier)."""

    mac_weights = (0,)

    def propagate(self, layer, ins, b):
        return np.repeat(ins[0], int(layer.config.get("depth_multiplier", 1)))

    def weight_axes(self, layer):
        return [{layer.weights[0].ndim - 2: "in"}] + [{0: "out"} for _ in layer.weights[1:]]


class GroupedDepthwise(Depthwise):
    """A convolution with one group per input channel (ConvNeXt's depthwise Conv2D):
    input channel c -> output channels c*m .. c*m+m-1 (m = filters / groups), like
    DepthwiseConv2D; the kernel (h, w, 1, filters) and bias are sliced on the output axis."""

    def propagate(self, layer, ins, b):
        return np.repeat(ins[0], int(layer.config["filters"]) // int(layer.config["groups"]))

    def weight_axes(self, layer):
        return [{layer.weights[0].ndim - 1: "out"}] + [{0: "out"} for _ in layer.weights[1:]]

    def edit(self, config, layer, n_out):
        config["groups"] = n_out // (int(config["filters"]) // int(config["groups"]))
        config["filters"] = n_out
        return config


class LayerNorm(Rule):
    """LayerNormalization: over the channel axis every output channel depends on the mean and
    variance of all channels, so no channel reaching it can be removed exactly (its inputs
    are blocked); over other axes only it is channel-wise (gamma/beta span those axes)."""

    def propagate(self, layer, ins, b):
        rank = len(layer.output_shape)
        axis = layer.config.get("axis", -1)
        axes = {a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])}
        if rank - 1 in axes:
            return Blocker("normalises over the channel axis (each output uses the mean and "
                           "variance of every channel)").propagate(layer, ins, b)
        return ins[0]


class ChannelScale(PassThrough):
    """x * gamma with one gamma per channel (ConvNeXt's LayerScale): gamma is sliced and
    `projection_dim` follows the channel count."""

    def edit(self, config, layer, n_out):
        config["projection_dim"] = n_out
        return config


class Merge(Rule):
    """Add, Multiply, ...: channel c of every input is one channel. An input with one channel
    broadcast over many (a spatial gate) is blocked, not tied."""

    def propagate(self, layer, ins, b):
        out_c = channels(layer.output_shape)
        tensors = [p for p in ins if len(p) == out_c]
        for prov in ins:
            if len(prov) != out_c:
                b.block(prov, layer.name, f"{layer.class_name}: broadcast over channels")
        if not tensors:
            return b.fixed(out_c)
        for prov in tensors[1:]:
            b.union(tensors[0], prov)
        return tensors[0]


class Concatenate(Merge):
    """On the channel axis each input's channels land at an offset; on another axis the
    inputs' channels are tied like a merge."""

    def propagate(self, layer, ins, b):
        axis = layer.config.get("axis", -1)
        if axis in (-1, len(layer.output_shape) - 1):
            return np.concatenate(ins)
        return super().propagate(layer, ins, b)


class Flatten(Rule):
    """(.., H, W, C) -> H*W*C features, channels-last order: feature f is channel f % C."""

    def propagate(self, layer, ins, b):
        if layer.config.get("data_format", "channels_last") == "channels_first":
            return Blocker("channels_first flatten").propagate(layer, ins, b)
        return np.tile(ins[0], spatial(layer.input_shapes[0]))


class Reshape(Rule):
    """Keeps the channel axis ((1, C) -> (1, 1, C)) or flattens in channels-last order; any
    other reshape moves channels and blocks."""

    def propagate(self, layer, ins, b):
        target = list(layer.config["target_shape"])
        in_shape = layer.input_shapes[0]
        if target and target[-1] == in_shape[-1] and len(in_shape) >= 2:
            return ins[0]
        if len(target) == 1 and target[0] in (-1, spatial(in_shape) * in_shape[-1]):
            return np.tile(ins[0], spatial(in_shape))
        return Blocker("reshape moves the channel axis").propagate(layer, ins, b)

    def edit(self, config, layer, n_out):
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = n_out
        config["target_shape"] = target
        return config


class Input(Rule):
    def propagate(self, layer, ins, b):
        return b.fixed(channels(layer.output_shape))


PASS = PassThrough()
_PASS_NAMES = (
    "ReLU LeakyReLU ELU PReLU ThresholdedReLU Dropout SpatialDropout1D SpatialDropout2D "
    "SpatialDropout3D GaussianNoise GaussianDropout AlphaDropout ActivityRegularization "
    "MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D "
    "MaxPool2D AvgPool2D GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D "
    "GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GlobalAvgPool2D GlobalMaxPool2D "
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D UpSampling1D "
    "UpSampling2D UpSampling3D Identity Masking").split()
MERGE = Merge()
RULES: dict[str, Rule] = {name: PASS for name in _PASS_NAMES}
RULES.update({
    "InputLayer": Input(), "BatchNormalization": BatchNorm(), "Activation": Activation(),
    "Rescaling": Rescaling(), "Conv1D": Producer(), "Conv2D": Producer(), "Conv3D": Producer(),
    "Convolution2D": Producer(), "Dense": Dense(), "Conv2DTranspose": ConvTranspose(),
    "Conv1DTranspose": ConvTranspose(), "SeparableConv2D": Separable(),
    "SeparableConv1D": Separable(), "DepthwiseConv2D": Depthwise(),
    "DepthwiseConv1D": Depthwise(), "Concatenate": Concatenate(), "Flatten": Flatten(),
    "Reshape": Reshape(),
    **{name: MERGE for name in "Add Subtract Multiply Average Maximum Minimum".split()},
})
# keras.applications' own layers and the layer families they use.
GROUPED_DEPTHWISE = GroupedDepthwise()
RULES.update({
    "LayerNormalization": LayerNorm(),   # ConvNeXt (over channels: blocks)
    "LayerScale": ChannelScale(),        # ConvNeXt: per-channel scale
    "StochasticDepth": PASS,             # ConvNeXt with drop_path_rate > 0: drops whole samples
    "CustomScaleLayer": MERGE,           # InceptionResNetV2: inputs[0] + inputs[1] * scale
})
# Keras 3 backend ops inside functional graphs (e.g. `x + 3.0` in MobileNetV3's hard sigmoid):
# element-wise ones merge their tensor arguments; constants pass through.
OP_RULES: dict[str, Rule] = {name: MERGE for name in (
    "Add Subtract Multiply Divide TrueDivide Maximum Minimum Relu Relu6 Sigmoid HardSigmoid "
    "Silu HardSilu Tanh Abs Negative Square Sqrt Exp Log Clip Where Power").split()}


def rule_for(layer) -> Rule:
    """The rule of `layer` (a `modelspec.LayerSpec`); a `Blocker` for anything unknown."""
    if layer.output_shape and isinstance(layer.output_shape[0], tuple):
        return MultiOutputBlocker(f"{layer.class_name} has several outputs")
    if layer.is_op:
        return OP_RULES.get(layer.class_name) or Blocker(f"backend op {layer.class_name}")
    if layer.config.get("data_format") == "channels_first":
        return Blocker("channels_first layout")
    rule = RULES.get(layer.class_name)
    return rule.specialise(layer) if rule else Blocker("unknown layer type")
