"""Nested models flattened into one functional model (`tfprune.core.flatten`): the flat model
computes what the nested one computes on real images, keeps every weight and layer name
(clashing inner names prefixed), prunes equivalently; what cannot be flattened is refused
naming the layer."""
import numpy as np
import pytest

import keras

from pruning_utils import check_equivalent, randomize, real_images
from tfprune.core import flatten
from tfprune.core import graph as graph_mod
from tfprune.core.modelspec import ModelReadError

L = keras.layers


def transfer_model():
    """The usual transfer-learning model: a keras.applications base called with
    training=False inside a functional model with a new head."""
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                          input_shape=(32, 32, 3))
    inp = keras.Input((32, 32, 3), name="image")
    x = base(inp, training=False)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, L.Dense(10, name="head")(x), name="transfer")


def three_levels():
    """A lazy Sequential inside a Functional inside a Functional; three layers named `conv`."""
    inner = keras.Sequential([L.Conv2D(6, 3, padding="same", name="conv"),
                              L.BatchNormalization(name="bn"), L.ReLU(name="relu")],
                             name="inner")
    x_in = keras.Input((16, 16, 6))
    y = L.Add(name="add")([x_in, inner(x_in)])
    mid = keras.Model(x_in, L.Conv2D(8, 1, name="conv")(y), name="mid")
    inp = keras.Input((16, 16, 3), name="image")
    x = mid(L.Conv2D(6, 3, padding="same", name="conv")(inp))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, L.Dense(5, name="logits")(x), name="outer")


def assert_same_outputs(a, b, x):
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a(x, training=True)), np.asarray(b(x, training=True)),
                               rtol=1e-5, atol=1e-5)


def test_transfer_model_flattened_then_pruned_equivalently():
    model = randomize(transfer_model())
    base = model.get_layer("mobilenetv2_0.35_32")
    flat, info = flatten.flatten(model)
    assert info.submodels == ["mobilenetv2_0.35_32"] and not info.renamed
    assert not flatten.is_nested(flat) and flat.name == "transfer"
    assert len(flat.layers) == len(base.layers) + 2  # the base's input layer is replaced
    x = real_images((32, 32, 3), 4)
    assert_same_outputs(flat, model, x)
    for layer in base.layers[1:]:
        for w_flat, w in zip(flat.get_layer(layer.name).get_weights(), layer.get_weights()):
            assert w_flat.tobytes() == w.tobytes()
    # training=False of the nested call reaches the inner BatchNorms
    assert flat.get_layer("bn_Conv1")._inbound_nodes[0].arguments.kwargs["training"] is False
    plan, pruned = check_equivalent(flat, (32, 32, 3), 0.5, "params", "global", 1, images=x)
    assert plan["achieved"]["params_level"] > 0.4 and not flatten.is_nested(pruned)


def test_three_levels_names_prefixed_where_they_clash():
    model = randomize(three_levels())
    flat, info = flatten.flatten(model)
    assert info.submodels == ["mid", "mid/inner"]
    assert info.renamed == {"mid/inner/conv": "inner_conv", "mid/conv": "mid_conv"}
    assert [l.name for l in flat.layers] == ["image", "conv", "inner_conv", "bn", "relu", "add",
                                             "mid_conv", "pool", "logits"]
    inner = model.get_layer("mid").get_layer("inner")
    assert flat.get_layer("inner_conv").get_weights()[0].tobytes() == \
        inner.get_layer("conv").get_weights()[0].tobytes()
    assert "mid/inner/conv -> inner_conv" in info.describe()
    x = real_images((16, 16, 3), 4)
    assert_same_outputs(flat, model, x)
    g = graph_mod.build_graph(flat)
    assert {"conv", "inner_conv"} <= set(g.group_of("conv").members)  # tied by the Add
    check_equivalent(flat, (16, 16, 3), 0.4, "params", "global", 1, images=x)


def test_sequential_holding_a_functional_model():
    x_in = keras.Input((16, 16, 3))
    body = keras.Model(x_in, L.ReLU()(L.Conv2D(8, 3, name="c1")(x_in)), name="body")
    model = randomize(keras.Sequential([keras.Input((16, 16, 3)), body,
                                        L.Conv2D(8, 3, name="c2"), L.Flatten(name="flat"),
                                        L.Dense(4, name="out")], name="seq"))
    flat, info = flatten.flatten(model)
    assert info.submodels == ["body"] and type(flat).__name__ == "Functional"
    x = real_images((16, 16, 3), 3)
    assert_same_outputs(flat, model, x)
    plan, pruned = check_equivalent(flat, (16, 16, 3), 0.5, "params", "global", 1, images=x)
    assert pruned.get_layer("c1").filters < 8


def test_flat_model_returned_unchanged():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3)])
    assert flatten.flatten(model) == (model, None)


def test_what_cannot_be_flattened_is_refused_naming_the_layer():
    inp = keras.Input((8, 8, 4))
    twice = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same")],
                             name="twice")
    called_twice = keras.Model(inp, twice(twice(inp)))
    with pytest.raises(ModelReadError, match="nested model 'twice' is called 2 times"):
        flatten.flatten(called_twice)
    conv = L.Conv2D(4, 3, padding="same", name="shared_conv")
    a = keras.Sequential([keras.Input((8, 8, 4)), conv], name="a")
    b = keras.Sequential([keras.Input((8, 8, 4)), conv], name="b")
    shared = keras.Model(inp, L.Add()([a(inp), b(inp)]))
    with pytest.raises(ModelReadError, match="layer 'b/shared_conv' is used in two places "
                                             r"\(also as 'a/shared_conv'\)"):
        flatten.flatten(shared)
