"""tfprune.scoring.stats: measure points, streamed per-channel sums against numpy and GradientTape
references, batching invariance, JSON/merge/filter_stats round trips, and bad input."""
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import data
from tfprune.scoring import stats
from tfprune.models import zoo

FIXTURE = "npz:tests/fixtures/cifar100_mini.npz"


@pytest.fixture(scope="module")
def images():
    return data.load_source(FIXTURE).train.take(np.arange(40))


def tiny_model(seed=0):
    """conv-BN-ReLU, a conv with fused ReLU, a residual add, a Dense head; BN statistics and
    all weights randomised so no channel is trivially zero or unit."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.ReLU(name="c1_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    y = keras.layers.Conv2D(8, 1, name="c3")(y)
    y = keras.layers.BatchNormalization(name="c3_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ReLU(name="out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(100, name="logits")(x), name="tiny")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.3, 8),
                               rng.normal(0, 0.3, 8), rng.uniform(0.5, 2, 8)])
    return model


def layer_outputs(model, names, x):
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    return [np.asarray(a, np.float64) for a in probe(x, training=False)]


def test_measure_points_follow_bn_activation_and_merge_chains():
    points = stats.measure_points(tiny_model())
    assert points == {"c1": ["c1_relu"], "c2": ["c2"], "c3": ["out"]}
    resnet = stats.measure_points(zoo.build("resnet20"))
    assert resnet["s1b0_a_conv"] == ["s1b0_a_relu"] and resnet["s2b0_proj_conv"] == ["s2b0_out"]
    assert resnet["s3b2_b_conv"] == ["s3b2_out"] and "logits" not in resnet
    mbv2 = stats.measure_points(zoo.build("mobilenetv2"))
    assert mbv2["block1_expand_conv"] == ["block1_expand_relu"]
    assert mbv2["block2_project_conv"] == ["block2_add"]  # linear bottleneck: no activation


def test_activation_sums_equal_numpy(images):
    model = tiny_model()
    names = ["c1_relu", "c2", "out"]
    got = stats.collect(model, data.as_dataset(images, 16), names, progress=False)
    x = data.normalize_np(images.x)
    for name, a in zip(names, layer_outputs(model, names, x)):
        flat = a.reshape(-1, a.shape[-1])
        layer = got.layers[name]
        assert layer.count == flat.shape[0] and layer.samples == len(images)
        np.testing.assert_allclose(layer.sum_abs, np.abs(flat).sum(0), rtol=1e-5)
        np.testing.assert_allclose(layer.sum_sq, (flat ** 2).sum(0), rtol=1e-5)
        np.testing.assert_array_equal(layer.zeros, (flat == 0).sum(0))
        np.testing.assert_allclose(got.scores("act_l2")[name], np.sqrt((flat ** 2).mean(0)),
                                   rtol=1e-5)
    assert got.layers["out"].zeros.sum() > 0  # the ReLU points really have exact zeros


def test_taylor_sums_equal_gradient_tape_reference(images):
    model = tiny_model(1)
    names = ["c1_relu", "c2", "out"]
    got = stats.collect(model, data.as_dataset(images, 16), names, taylor=True, progress=False)
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names] + model.outputs)
    x, expected = data.normalize_np(images.x), [0.0] * len(names)
    for i in range(len(images)):  # one image at a time, eager
        with tf.GradientTape() as tape:
            outs = probe(x[i:i + 1], training=False)
            loss = keras.losses.sparse_categorical_crossentropy(
                images.y[i:i + 1], outs[-1], from_logits=True)
        grads = tape.gradient(loss, outs[:-1])
        for k, (a, g) in enumerate(zip(outs[:-1], grads)):
            expected[k] = expected[k] + np.abs((np.asarray(a) * np.asarray(g)).sum((0, 1, 2)))
    for k, name in enumerate(names):
        np.testing.assert_allclose(got.layers[name].taylor, expected[k], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(got.scores("taylor")[name], expected[k] / len(images),
                                   rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("head", ["Softmax layer", "softmax activation"])
def test_taylor_reads_a_softmax_head_as_probabilities(images, head):
    logits_model = tiny_model(1)
    if head == "Softmax layer":
        probs = keras.layers.Softmax(name="probs")(logits_model.outputs[0])
    else:
        dense = logits_model.get_layer("logits")
        probs = keras.layers.Dense(100, activation="softmax", name="probs")(
            logits_model.get_layer("pool").output)
    softmax_model = keras.Model(logits_model.inputs, probs)
    if head == "softmax activation":
        softmax_model.get_layer("probs").set_weights(dense.get_weights())
    names, ds = ["c1_relu", "out"], data.as_dataset(images, 16)
    want = stats.collect(logits_model, ds, names, taylor=True, progress=False)
    with warnings.catch_warnings(record=True) as caught:  # Keras warns, then undoes softmax,
        warnings.simplefilter("always")  # when probabilities are passed as logits
        got = stats.collect(softmax_model, ds, names, taylor=True, progress=False)
    assert not [w for w in caught if "does not represent logits" in str(w.message)]
    for name in names:
        np.testing.assert_allclose(got.layers[name].taylor, want.layers[name].taylor,
                                   rtol=1e-4, atol=1e-7)


def test_one_batch_equals_many_batches(images):
    model = tiny_model(2)
    one = stats.collect(model, data.as_dataset(images, 40), taylor=True, progress=False)
    many = stats.collect(model, data.as_dataset(images, 7), taylor=True, progress=False)
    assert one.meta["batches"] == 1 and many.meta["batches"] == 6
    for criterion in stats.CRITERIA:
        for name, score in one.scores(criterion).items():
            other = many.scores(criterion)[name]
            if criterion == "taylor":  # backward kernels may block a batch differently
                np.testing.assert_allclose(score, other, rtol=1e-6, atol=1e-12)
            else:  # per-image sums added in image order: the very same float64 numbers
                np.testing.assert_array_equal(score, other)
            np.testing.assert_array_equal(np.argsort(-score, kind="stable"),
                                          np.argsort(-other, kind="stable"))


def test_json_merge_and_filter_stats_round_trip(images, tmp_path):
    model = tiny_model(3)
    first = stats.collect(model, data.as_dataset(images.take(np.arange(24)), 8), taylor=True,
                          progress=False)
    second = stats.collect(model, data.as_dataset(images.take(np.arange(24, 40)), 8),
                           taylor=True, progress=False)
    whole = stats.collect(model, data.as_dataset(images, 8), taylor=True, progress=False)
    merged = first.merge(second)
    for name, layer in whole.layers.items():
        np.testing.assert_allclose(merged.layers[name].sum_sq, layer.sum_sq, rtol=1e-12)
        np.testing.assert_array_equal(merged.layers[name].zeros, layer.zeros)
        assert merged.layers[name].count == layer.count
    path = tmp_path / "stats.json"
    whole.save(path)
    loaded = stats.ChannelStats.load(path)
    assert json.loads(path.read_text())["format"] == stats.FORMAT
    for criterion in stats.CRITERIA:
        for name, score in whole.scores(criterion).items():
            np.testing.assert_array_equal(loaded.scores(criterion)[name], score)
    # What a phone's filter_stats signature returns: float32 sums, per-channel counts.
    phone = {name: {"sum_abs": layer.sum_abs.astype(np.float32),
                    "sum_sq": layer.sum_sq.astype(np.float32),
                    "zeros": layer.zeros.astype(np.float32),
                    "count": np.full(layer.channels, layer.count, np.float32)}
             for name, layer in whole.layers.items()}
    remote = stats.ChannelStats.from_filter_stats(phone, samples=40)
    for criterion in ("act_l1", "act_l2", "apoz"):
        for name, score in whole.scores(criterion).items():
            np.testing.assert_allclose(remote.scores(criterion)[name], score, rtol=1e-6)
    with pytest.raises(stats.StatsError, match="no taylor sums"):
        remote.scores("taylor")


def test_collecting_fewer_sums_gives_the_same_scores(images):
    model = tiny_model(4)
    full = stats.collect(model, data.as_dataset(images, 16), progress=False)
    only = stats.collect(model, data.as_dataset(images, 16), fields=("sum_sq",), progress=False)
    for name, score in full.scores("act_l2").items():
        np.testing.assert_array_equal(only.scores("act_l2")[name], score)
    with pytest.raises(stats.StatsError, match="no zeros sums, which apoz needs"):
        only.scores("apoz")
    with pytest.raises(stats.StatsError, match="cannot merge sums"):
        full.merge(only)
    assert set(stats.ChannelStats.from_json(only.to_json()).layers["out"].to_json()) == {
        "channels", "count", "samples", "sum_sq"}


def test_group_score_is_mean_over_points_and_folds_depthwise_copies():
    a = stats.LayerStats([4.0, 8.0], [16.0, 64.0], [0, 2], 4, 1)
    b = stats.LayerStats([0.0, 4.0, 8.0, 8.0], [0.0] * 4, [0] * 4, 4, 1)
    s = stats.ChannelStats({"a": a, "b": b})
    np.testing.assert_allclose(stats.group_score(s, ["a"], "act_l1", 2), [1.0, 2.0])
    np.testing.assert_allclose(stats.group_score(s, ["b"], "act_l1", 2), [0.5, 2.0])
    np.testing.assert_allclose(stats.group_score(s, ["a", "b"], "act_l1", 2), [0.75, 2.0])
    np.testing.assert_allclose(stats.group_score(s, ["a"], "apoz", 2), [1.0, 0.5])


def test_bad_input_is_refused_with_a_clear_message(images):
    model = tiny_model()
    small = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 16, 16, 3), np.float32), np.zeros(4, np.int32))).batch(2)
    with pytest.raises(stats.StatsError, match=r"\(16, 16, 3\) do not fit .*\(32, 32, 3\)"):
        stats.collect(model, small, progress=False)
    unlabelled = data.as_dataset(images, 8).map(lambda x, y: x)
    with pytest.raises(stats.StatsError, match="taylor criterion needs labels"):
        stats.collect(model, unlabelled, taylor=True, progress=False)
    assert stats.collect(model, unlabelled, batches=1, progress=False).meta["samples"] == 8
    with pytest.raises(stats.StatsError, match="zero usable batches"):
        stats.collect(model, data.as_dataset(images, 8).take(0), progress=False)
    with pytest.raises(stats.StatsError, match="no layer"):
        stats.collect(model, data.as_dataset(images, 8), ["nope"], progress=False)
    with pytest.raises(stats.StatsError, match="format"):
        stats.ChannelStats.from_json({"layers": {}})
