"""The defining test: a pruned model equals the original with every dropped weight zeroed.

All weights (BatchNorm statistics too) are randomised first. Each model runs a couple of
(level, target, allocation, round_to, criterion) settings; together they cover every level
band, both allocations, every target, round_to 1 and 8 and every data-agnostic criterion.
"""
import numpy as np
import pytest

import keras

from pruning_utils import check_equivalent, layer_zoo_model, randomize, real_images
from tfprune.core import flatten
from tfprune.core import graph as graph_mod
from tfprune.core import plan as plan_mod
from tfprune import scoring
from tfprune.core import surgery
from tfprune.models import zoo

L = keras.layers

SETTINGS = [  # level, target, allocation, round_to, criterion
    (0.5, "params", "global", 1, "l1"),
    (0.3, "flops", "uniform", 8, "random"),
    (0.7, "filters", "global", 8, "bn_gamma"),
    (0.2, "params", "uniform", 1, "l2"),
    (0.6, "flops", "global", 1, "random"),
    (0.4, "filters", "uniform", 8, "l1"),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_layer_zoo_equivalent(setting):
    model = randomize(layer_zoo_model())
    check_equivalent(model, (16, 16, 3), *setting)


ZOO_CASES = [("resnet20", (0, 1)), ("resnet56", (2,)), ("mobilenetv2", (4,)),
             ("squeezenet", (5,)), ("alexnet", (1, 3))]


@pytest.mark.parametrize("name,settings", ZOO_CASES, ids=[c[0] for c in ZOO_CASES])
def test_zoo_equivalent(name, settings):
    model = randomize(zoo.build(name))
    for i in settings:
        plan, _ = check_equivalent(model, zoo.INPUT_SHAPE, *SETTINGS[i])
        if SETTINGS[i][2] == "global" and SETTINGS[i][1] == "params":
            assert abs(plan["achieved"]["level"] - SETTINGS[i][0]) <= 0.02


APP_CASES = [("MobileNetV2", (32, 32, 3), (3,)), ("ResNet50", (32, 32, 3), (0,)),
             ("DenseNet121", (32, 32, 3), (4,)), ("EfficientNetB0", (32, 32, 3), (5,)),
             ("MobileNetV3Small", (32, 32, 3), (2,)), ("MobileNet", (32, 32, 3), (1,)),
             ("EfficientNetV2B0", (32, 32, 3), (0,)), ("ResNet50V2", (32, 32, 3), (5,))]


@pytest.mark.parametrize("name,shape,settings", APP_CASES, ids=[c[0] for c in APP_CASES])
def test_keras_applications_equivalent(name, shape, settings):
    build = getattr(keras.applications, name)
    model = randomize(build(weights=None, input_shape=shape, classes=10,
                            classifier_activation=None))
    for i in settings:
        check_equivalent(model, shape, *SETTINGS[i], images=real_images(shape))


def test_convnext_family_equivalent():
    """keras.applications' ConvNeXt at toy widths: nested Sequential stem and downsampling
    blocks (flattened), depthwise grouped Conv2D, LayerNormalization over channels (blocks
    the residual stream, with its reason), channel MLPs (Dense on 4-D tensors), LayerScale."""
    from keras.src.applications import convnext
    model = convnext.ConvNeXt(depths=[1, 1, 2, 1], projection_dims=[8, 16, 24, 32],
                              input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                              weights=None, name="toy")
    flat, info = flatten.flatten(model)
    assert info.submodels == ["toy_stem"] + [f"toy_downsampling_block_{i}" for i in range(3)]
    flat = randomize(flat)
    g = graph_mod.build_graph(flat)
    mlp = [grp for grp in g.prunable_groups() if grp.members[0].endswith("pointwise_conv_1")]
    assert len(g.prunable_groups()) == len(mlp) == 5
    assert g.group_of("toy_stem_conv").blocked_by == (("toy_stem_layernorm", "LayerNormalization: "
        "normalises over the channel axis (each output uses the mean and variance of every "
        "channel)"),)
    tied = g.group_of("toy_stage_0_block_0_pointwise_conv_2").blocked_by  # adds to the stream
    assert [reason for _, reason in tied] == ["tied to a channel that cannot be removed"]
    x = real_images((32, 32, 3), 3)
    for i in (0, 1):
        plan, pruned = check_equivalent(flat, (32, 32, 3), *SETTINGS[i], images=x)
    assert pruned.get_layer("toy_stage_2_block_1_pointwise_conv_1").units < 96


def test_grouped_depthwise_conv_and_layer_scale_pruned():
    """Channels of a prunable conv through a one-group-per-channel Conv2D and a per-channel
    LayerScale: both are sliced (groups, filters, projection_dim follow)."""
    from keras.src.applications.convnext import LayerScale
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.Conv2D(16, 3, padding="same", groups=8, name="dw_grouped")(x)
    x = LayerScale(0.5, 16, name="scale")(x)
    x = L.LayerNormalization(axis=[1, 2], name="ln_spatial")(x)
    x = L.Conv2D(6, 1, activation="relu", name="c2")(x)
    out = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    plan, pruned = check_equivalent(model, (12, 12, 3), 0.5, "params", "global", 1,
                                    images=real_images((12, 12, 3), 3))
    c1 = pruned.get_layer("c1").filters
    assert c1 < 8 and pruned.get_layer("dw_grouped").groups == c1
    assert pruned.get_layer("dw_grouped").filters == 2 * c1
    assert pruned.get_layer("scale").projection_dim == 2 * c1


def test_inception_resnet_blocks_equivalent():
    """InceptionResNetV2's own blocks: CustomScaleLayer (x + scale * residual) ties the
    residual branch's channels to the stream like an Add."""
    from keras.src.applications import inception_resnet_v2 as irv2
    inp = keras.Input((17, 17, 3))
    x = irv2.conv2d_bn(inp, 24, 3, name="stem")
    x = irv2.inception_resnet_block(x, 0.17, "block35", 1)
    x = irv2.inception_resnet_block(x, 0.17, "block35", 2)
    out = L.Dense(5, name="out")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    g = graph_mod.build_graph(model)
    assert {"stem", "block35_1_conv", "block35_2_conv"} <= set(g.group_of("stem").members)
    assert g.group_of("stem").prunable
    check_equivalent(model, (17, 17, 3), *SETTINGS[0], images=real_images((17, 17, 3), 3))


def test_blocked_layers_reported_and_rest_pruned():
    @keras.saving.register_keras_serializable(package="tfprune_test")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="to_lambda")(inp)
    a = L.Lambda(lambda t: t[..., ::-1], name="flip")(a)
    b = L.Conv2D(8, 3, padding="same", name="to_custom")(a)
    b = Scale(name="custom")(b)
    c = L.Conv2D(8, 3, padding="same", name="to_layernorm")(b)
    c = L.LayerNormalization(name="ln")(c)
    d = L.Conv2D(8, 3, padding="same", name="to_reshape")(c)
    d = L.Reshape((8, 64), name="moves_channels")(d)
    d = L.Reshape((8, 8, 8), name="back")(d)
    e = L.Conv2D(8, 3, padding="same", name="free")(d)
    e = L.BatchNormalization(name="free_bn")(e)
    out = L.Dense(4, name="head")(L.Flatten()(e))
    model = randomize(keras.Model(inp, out))
    g = graph_mod.build_graph(model)
    blocked = {b["members"][0]: b["blocked_by"][0] for b in g.describe_blocked()}
    assert blocked["to_lambda"]["layer"] == "flip"
    assert blocked["to_custom"]["layer"] == "custom"
    assert blocked["to_layernorm"]["layer"] == "ln"
    assert blocked["to_reshape"]["layer"] == "moves_channels"
    assert blocked["head"]["reason"] == "model output"
    assert [grp.members for grp in g.prunable_groups()] == [("free",)]
    plan, pruned = check_equivalent(model, (8, 8, 3), 0.3, "params", "global", 1)
    assert pruned.get_layer("free").filters < 8
    assert len(plan["blocked"]) == 5


def test_untouched_layers_bit_identical_and_names_kept():
    model = randomize(zoo.build("resnet20"))
    g = graph_mod.build_graph(model)
    scores = scoring.compute_scores("l1", model, g)
    kept = {grp.id: np.arange(grp.size) for grp in g.prunable_groups()}
    stage3 = g.group_of("s3b0_a_conv")
    kept[stage3.id] = np.arange(0, stage3.size, 2)
    pruned = surgery.prune(model, g, kept)
    assert [l.name for l in pruned.layers] == [l.name for l in model.layers]
    for layer in model.layers:
        new = pruned.get_layer(layer.name).get_weights()
        if layer.name in ("s3b0_a_conv", "s3b0_a_bn", "s3b0_b_conv"):
            assert new[0].shape != layer.get_weights()[0].shape
        elif layer.name.startswith(("s1", "s2", "stem", "s3b1", "s3b2", "logits")):
            for w_new, w_old in zip(new, layer.get_weights()):
                assert w_new.tobytes() == w_old.tobytes()
    assert scores  # the criterion ran on the same graph


def test_pruned_model_compiles_trains_saves_and_loads(tmp_path, mini_source):
    from tfprune import data
    from tfprune.training import fit as train
    model = zoo.build("resnet20")
    g = graph_mod.build_graph(model)
    plan = plan_mod.make_plan(g, scoring.compute_scores("l1", model, g), 0.5)
    pruned = surgery.apply_plan(model, plan, graph=g)
    import tensorflow as tf
    train.compile_sgd(pruned, 0.05, 5e-4)
    x, y = next(iter(data.as_dataset(mini_source.train.take(np.arange(32)), 32)))
    before = [w.numpy().copy() for w in pruned.trainable_weights]
    losses = []
    for _ in range(3):  # eager steps: the compiled model's loss and optimizer, no tracing
        with tf.GradientTape() as tape:
            loss = pruned.loss(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_weights)
        pruned.optimizer.apply_gradients(zip(grads, pruned.trainable_weights))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, pruned.trainable_weights))
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(pruned(x)))
    assert loaded.count_params() == pruned.count_params() < model.count_params()


def test_sequential_model_pruned_as_sequential():
    L = keras.layers
    model = randomize(keras.Sequential([
        keras.Input((12, 12, 3)), L.Conv2D(16, 3, activation="relu", name="c1"),
        L.BatchNormalization(name="bn"), L.MaxPooling2D(name="pool"),
        L.Conv2D(16, 3, activation="relu", name="c2"), L.Flatten(name="flat"),
        L.Dense(32, activation="relu", name="fc"), L.Dense(3, name="out")], name="seq"))
    plan, pruned = check_equivalent(model, (12, 12, 3), 0.5, "params", "global", 1)
    assert isinstance(pruned, keras.Sequential)
    assert pruned.get_layer("c2").filters < 16 and pruned.get_layer("fc").units < 32


def test_nested_model_refused():
    from tfprune.core.modelspec import ModelReadError
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="inner")
    inp = keras.Input((8, 8, 3))
    outer = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inner(inp))))
    with pytest.raises(ModelReadError, match="'inner' is a nested model"):
        graph_mod.build_graph(outer)
