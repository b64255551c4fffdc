"""Helpers of the pruning tests: randomised weights, real images, the equivalence check, a
layer zoo."""
from pathlib import Path

import numpy as np

from tfprune.core import graph as graph_mod
from tfprune.core import plan as plan_mod
from tfprune import scoring
from tfprune.core import surgery


def randomize(model, seed=0):
    """Every weight random (BatchNorm variances positive), so no channel is trivially zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w, v in zip(weights, layer.weights):
            if "variance" in v.path:
                new.append(rng.uniform(0.5, 2.0, w.shape))
            elif w.ndim == 1:
                new.append(rng.normal(0.0, 0.5, w.shape))
            else:
                fan_in = max(1, int(np.prod(w.shape[:-1])))
                new.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), w.shape))
        layer.set_weights([n.astype(w.dtype) for n, w in zip(new, weights)])
    return model


MINI_NPZ = Path(__file__).resolve().parent / "fixtures" / "cifar100_mini.npz"


def real_images(input_shape, n=2, offset=0):
    """`n` real CIFAR-100 test images (the committed fixture) resized to `input_shape`,
    scaled to [-1, 1], float32."""
    import tensorflow as tf
    with np.load(MINI_NPZ) as f:
        x = f["x_test"][offset:offset + n].astype("float32")
    x = tf.image.resize(x, input_shape[:2]).numpy() if x.shape[1:3] != tuple(input_shape[:2]) else x
    return x / 127.5 - 1.0


def check_equivalent(model, input_shape, level, target, allocation, round_to, criterion="l1",
                     seed=0, ignore=(), atol=2e-4, images=None):
    """Prune `model`; its outputs must equal those of `model` with the dropped weights
    zeroed, on `images` (default: random normal inputs). Returns (plan, pruned model)."""
    g = graph_mod.build_graph(model, ignore=ignore)
    scores = scoring.compute_scores(criterion, model, g, scoring.ScoringContext(seed=seed))
    try:
        plan = plan_mod.make_plan(g, scores, level, target, allocation, round_to=round_to,
                                  criterion=criterion)
    except plan_mod.UnreachableLevel as err:  # then the most the plan can remove
        plan = plan_mod.make_plan(g, scores, err.highest, target, allocation,
                                  round_to=round_to, criterion=criterion)
    pruned = surgery.apply_plan(model, plan, graph=g)
    x = images if images is not None else \
        np.random.default_rng(seed + 1).normal(size=(2,) + tuple(input_shape)).astype("float32")
    a = np.asarray(pruned(x))
    original = {layer.name: layer.get_weights() for layer in model.layers}
    try:
        b = np.asarray(surgery.zero_dropped(model, plan, graph=g, in_place=True)(x))
    finally:
        for layer in model.layers:
            layer.set_weights(original[layer.name])
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= atol * scale, (np.abs(a - b).max(), scale)
    assert pruned.count_params() == plan["achieved"]["params"]
    assert pruned.count_params() < model.count_params() or level == 0 or \
        plan["achieved"]["params_level"] == 0
    for entry in plan["groups"]:
        kept = len(entry["kept"])
        assert kept == entry["channels"] or kept % round_to == 0
        assert kept >= min(2, entry["channels"])
    return plan, pruned


def layer_zoo_model():
    """A small functional model with one of nearly every supported layer type and merge."""
    import keras
    from keras import layers as L

    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(12, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    a = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="sep")(x)
    a = L.LeakyReLU(name="leaky")(a)
    x = L.Add(name="add")([x, a])
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    d = L.ReLU(6.0, name="relu6")(d)
    d = L.Conv2D(10, 1, name="pw")(d)
    e = L.Conv2D(10, 1, name="side")(x)
    x = L.Subtract(name="sub")([d, e])
    y = L.Conv2D(10, 1, name="c_avg")(x)
    x = L.Average(name="avg")([x, y])
    x = L.Maximum(name="max")([x, L.Conv2D(10, 1, name="c_max")(x)])
    x = L.Minimum(name="min")([x, L.Conv2D(10, 1, name="c_min")(x)])
    se = L.GlobalAveragePooling2D(name="se_pool")(x)
    se = L.Reshape((1, 1, 10), name="se_reshape")(se)
    se = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(10, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply(name="se_mul")([x, se])
    t = L.Conv2DTranspose(8, 3, strides=2, padding="same", name="tconv")(x)
    t = L.MaxPooling2D(2, name="tpool")(t)
    g = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.Concatenate(name="cat")([t, g, x])
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Cropping2D(1, name="crop")(x)
    x = L.SpatialDropout2D(0.1, name="sdrop")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = L.UpSampling2D(2, name="up")(x)
    x = L.AveragePooling2D(4, name="apool")(x)
    x = L.Dense(12, name="dense4d")(x)
    x = L.Activation("elu", name="elu")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.Dense(20, activation="relu", name="fc")(x)
    out = L.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name="layer_zoo")
