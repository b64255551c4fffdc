"""A model cut into timed blocks, and one block rebuilt alone at chosen channel counts.

A block is a layer with the single-consumer BatchNorm/activation layers after it: LiteRT
folds those into the layer's op, so they are timed with it. Reshapes, dropout and input layers are free (no block). A block's cost depends on
`cin` (kept channels of its first input) and `cout` (kept channels of its output); each is a
mix of fixed channels and prunable groups (`Dims`: counts follow the groups' kept counts).
Blocks whose channels never change are constant: the whole-model calibration carries them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

FREE = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
        "Flatten", "Reshape", "Identity"}


FUSED = {"BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU",
         "ThresholdedReLU"}


def _chain(graph, name) -> list:
    """`name` and the BatchNorm/activation layers LiteRT fuses into it: the start of the
    graph's `channel_path`, up to the first merge or channel-mixing layer."""
    chain = [name]
    for layer in graph.channel_path(name):
        spec = graph.spec.layers[layer]
        if spec.class_name not in FUSED or spec.config.get("activation") == "softmax":
            break
        chain.append(layer)
    return chain


@dataclasses.dataclass
class Dims:
    """Kept channels of one tensor: `fixed` + sum of share[g] * kept[g] / size[g]."""
    full: int
    fixed: int
    share: dict                      # group id -> channels of the tensor in that group

    def kept(self, counts: dict, sizes: dict) -> float:
        return self.fixed + sum(n * counts.get(g, sizes[g]) / sizes[g]
                                for g, n in self.share.items())

    @property
    def varies(self) -> bool:
        return bool(self.share)


@dataclasses.dataclass
class Block:
    head: str
    layers: tuple                    # head first, then the fused BatchNorm/activations
    cin: Dims
    cout: Dims
    tied: bool                       # cin and cout are the same channels (depthwise, merges)
    signature: dict                  # what is timed: layer types, configs, shapes

    @property
    def varies(self) -> bool:
        return self.cin.varies or self.cout.varies


def _dims(graph, prov) -> Dims:
    prov = np.asarray(prov)
    groups = graph.atom_group[prov]
    prunable = {g.id for g in graph.prunable_groups()}
    share = {}
    for gid in np.unique(groups[groups >= 0]).tolist():
        if gid in prunable:
            share[int(gid)] = int((groups == gid).sum())
    fixed = len(prov) - sum(share.values())
    return Dims(len(prov), fixed, share)


def _config(layer) -> dict:
    return {k: v for k, v in layer.config.items() if k not in ("name", "trainable", "dtype")}


def decompose(graph) -> list:
    spec = graph.spec
    absorbed, blocks = set(), []
    for name, layer in spec.layers.items():
        if name in absorbed or layer.class_name in FREE or not layer.inputs:
            continue
        if isinstance(graph.prov.get(name), np.ndarray) and name in getattr(graph, "_multi", {}):
            continue
        chain = _chain(graph, name)
        end = chain[-1]
        absorbed.update(chain)
        cin = _dims(graph, graph.input_provs(name)[0])
        cout = _dims(graph, graph.prov[end])
        tied = cin.share == cout.share and cin.fixed == 0 and cout.fixed == 0 and \
            cin.full == cout.full
        sig = {"layers": [[spec.layers[n].class_name, _config(spec.layers[n])] for n in chain],
               "input_shapes": [list(s) for s in layer.input_shapes],
               "output_shape": list(spec.layers[end].output_shape)}
        blocks.append(Block(name, tuple(chain), cin, cout, tied, sig))
    return blocks


def block_model(graph, block: Block, cin: int, cout: int):
    """A Keras model of `block` alone with `cin` input and `cout` output channels (other
    inputs scaled like the first; weights random: latency does not depend on them)."""
    import keras

    spec = graph.spec
    head = spec.layers[block.head]
    inputs = []
    for shape in head.input_shapes:
        c = shape[-1]
        if block.cin.varies and c is not None:
            c = max(1, int(round(c * cin / block.cin.full)))
        inputs.append(keras.Input(tuple(shape[1:-1]) + (c,), batch_size=1))
    x = inputs if len(inputs) > 1 else inputs[0]
    for i, name in enumerate(block.layers):
        layer = spec.layers[name]
        if layer.is_op:
            x = _op(layer, x)
            continue
        config = dict(layer.config)
        if i == 0 and graph.rules[name].producer:
            config = graph.rules[name].edit(config, layer, int(cout))
        obj = {"class_name": layer.class_name, "config": config,
               "module": layer.module or "keras.layers", "registered_name": None}
        x = keras.saving.deserialize_keras_object(obj)(x)
    return keras.Model(inputs, x)


def _op(layer, x):
    """A Keras backend op node (e.g. `x + 3.0` in MobileNetV3) applied to the block's tensors:
    the same keras.ops function, with a constant operand where the model had one."""
    import re

    import keras

    fn = getattr(keras.ops, re.sub(r"(?<!^)(?=[A-Z])", "_", layer.class_name).lower(), None)
    if fn is None:
        raise ValueError(f"no keras.ops function for op {layer.class_name}")
    xs = x if isinstance(x, list) else [x]
    try:
        return fn(*xs)
    except TypeError:
        return fn(*xs, 1.0)
