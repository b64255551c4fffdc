"""Channel dependency graph: coupled groups, channel mappings, blockers, the model reader."""
import numpy as np
import pytest

import keras

from pruning_utils import layer_zoo_model
from tfprune.core import graph as graph_mod
from tfprune.core import modelspec
from tfprune.models import zoo

L = keras.layers


@pytest.fixture(scope="module")
def resnet20_graph():
    return graph_mod.build_graph(zoo.build("resnet20"))


def test_resnet_residual_adds_couple_each_stage(resnet20_graph):
    g = resnet20_graph
    stage1 = g.group_of("stem_conv")
    assert set(stage1.members) == {"stem_conv", "s1b0_b_conv", "s1b1_b_conv", "s1b2_b_conv"}
    stage2 = g.group_of("s2b0_proj_conv")
    assert set(stage2.members) == {"s2b0_proj_conv", "s2b0_b_conv", "s2b1_b_conv", "s2b2_b_conv"}
    assert stage2.size == 32
    for m in stage2.members:  # index-wise coupling: filter c of every member is channel c
        np.testing.assert_array_equal(stage2.member_channels[m], np.arange(32))
    assert {"s2b0_add", "s2b0_out", "s2b2_add", "s2b2_out"} <= set(stage2.flow)
    assert "pool" in g.group_of("s3b0_proj_conv").flow
    assert "s3b0_a_conv" in stage2.consumers and "s3b0_proj_conv" in stage2.consumers
    inner = g.group_of("s1b0_a_conv")
    assert inner.members == ("s1b0_a_conv",) and inner.prunable
    assert len(g.prunable_groups()) == 3 + 9  # 3 stage groups + 9 inner convs
    assert not g.group_of("logits").prunable
    assert g.group_of("logits").blocked_by == (("logits", "model output"),)


def test_measure_points(resnet20_graph):
    g = resnet20_graph
    assert g.channel_path("s1b0_a_conv") == ["s1b0_a_bn", "s1b0_a_relu"]
    assert g.measure_point("s1b0_a_conv") == "s1b0_a_relu"
    assert g.channel_path("s1b0_b_conv") == ["s1b0_b_bn", "s1b0_add", "s1b0_out"]  # through the Add
    assert g.measure_point("s1b0_b_conv") == "s1b0_out"
    assert g.measure_point("stem_conv") == "stem_relu"
    alex = graph_mod.build_graph(zoo.build("alexnet"))
    assert alex.measure_point("conv1") == "conv1"  # fused ReLU; MaxPooling is not followed


def test_concatenate_maps_channels_to_offsets():
    g = graph_mod.build_graph(zoo.build("squeezenet"))
    e1, e3 = g.producers["fire2_expand1_conv"], g.producers["fire2_expand3_conv"]
    prov = g.prov["fire2_concat"]
    np.testing.assert_array_equal(prov[:64], np.arange(e1[0], e1[0] + 64))
    np.testing.assert_array_equal(prov[64:], np.arange(e3[0], e3[0] + 64))
    assert g.group_of("fire2_expand1_conv") is not g.group_of("fire2_expand3_conv")


def test_depthwise_multiplier_and_flatten_mappings():
    g = graph_mod.build_graph(layer_zoo_model())
    x = g.prov["add"]
    np.testing.assert_array_equal(g.prov["dw"], np.repeat(x, 2))  # c -> 2c, 2c+1
    feat, flat = g.prov["elu"], g.prov["flat"]  # (4, 4, 12) -> 192, channels-last
    assert len(flat) == 16 * len(feat)
    np.testing.assert_array_equal(flat, np.tile(feat, 16))
    alex = graph_mod.build_graph(zoo.build("alexnet"))
    conv5 = alex.prov["pool5"]
    flat = alex.prov["flatten"]
    assert len(flat) == 4 * 4 * 256
    np.testing.assert_array_equal(flat[:256], conv5)
    np.testing.assert_array_equal(flat[256 * 7: 256 * 8], conv5)


def test_merges_squeeze_excite_and_grouped_conv():
    g = graph_mod.build_graph(layer_zoo_model())
    tied = g.group_of("pw")
    assert set(tied.members) == {"pw", "side", "c_avg", "c_max", "c_min", "se_expand"}
    assert set(g.group_of("c1").members) == {"c1", "sep"}  # Add of conv and separable
    grouped = g.group_of("grouped")
    assert grouped.blocks == 2 and grouped.prunable
    assert ("grouped", "Conv2D: input of a grouped convolution") in tied.blocked_by


def test_ignore_protects_a_layer_and_unknown_names_are_refused():
    model = zoo.build("resnet20")
    g = graph_mod.build_graph(model, ignore=["s1b0_a_conv", "s3b0_b_bn"])
    assert not g.group_of("s1b0_a_conv").prunable
    assert ("s3b0_b_bn", "ignored (--ignore)") in g.group_of("s3b0_b_conv").blocked_by
    with pytest.raises(ValueError, match="no_such_layer"):
        graph_mod.build_graph(model, ignore=["no_such_layer"])


def test_counts_equal_count_params(resnet20_graph):
    assert resnet20_graph.counts()["params"] == zoo.build("resnet20").count_params()
    for name in ("squeezenet", "alexnet"):
        model = zoo.build(name)
        assert graph_mod.build_graph(model).counts()["params"] == model.count_params(), name


def test_macs_by_hand_on_a_tiny_model():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inp)               # 8*8 * 3*3*3*4
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)  # 4*4 * 3*3*4
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)         # 4*4 * (3*3*4 + 4*6)
    x = L.Conv2DTranspose(2, 2, strides=2, name="tconv")(x)            # 4*4 * 2*2*2*6
    x = L.Flatten()(x)
    out = L.Dense(5, name="fc")(x)                                      # 8*8*2 * 5
    model = keras.Model(inp, out)
    c = graph_mod.build_graph(model).counts(per_layer=True)
    expected = {"conv": 64 * 108, "dw": 16 * 36, "sep": 16 * (36 + 24), "tconv": 16 * 48,
                "fc": 128 * 5}
    assert {k: c["layers"][k]["macs"] for k in expected} == expected
    assert c["macs"] == sum(expected.values())
    assert c["params"] == model.count_params() and c["bytes"] == 4 * model.count_params()


def test_reader_writer_round_trip_is_bit_identical():
    model = zoo.build("squeezenet")
    spec = modelspec.read_model(model)
    assert spec.kind == "functional" and spec.flavor == "keras"
    rebuilt = modelspec.write_model(spec)
    for a, b in zip(model.weights, rebuilt.weights):
        assert a.path == b.path and a.numpy().tobytes() == b.numpy().tobytes()


def test_shared_layer_refused():
    dense = L.Dense(4, name="shared")
    inp = keras.Input((3,))
    model = keras.Model(inp, dense(dense(L.Dense(4)(inp))))
    with pytest.raises(modelspec.ModelReadError, match="'shared' is called 2 times"):
        graph_mod.build_graph(model)


def test_multi_output_op_blocks_its_inputs_only():
    from pruning_utils import check_equivalent, randomize
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="before_split")(inp)
    a, b = keras.ops.split(x, 2, axis=-1)
    y = L.Conv2D(6, 3, padding="same", name="after_split")(a)
    y = L.Conv2D(6, 1, name="next")(L.ReLU()(y))
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.Concatenate()([y, b])))
    model = randomize(keras.Model(inp, out))
    g = graph_mod.build_graph(model)
    assert not g.group_of("before_split").prunable
    assert "several outputs" in g.group_of("before_split").blocked_by[0][1]
    assert g.group_of("after_split").prunable
    check_equivalent(model, (8, 8, 3), 0.4, "params", "global", 1)
