"""Data-aware criteria through the core's registry: dead filters rank last, class-specific
filters follow the data they are scored on, scores equal numpy / GradientTape references and
do not depend on batching, scores round-trip as JSON, bad input gets a clear error."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import data, scoring
from tfprune.scoring import data_criteria as datascore
from tfprune.scoring import stats
from tfprune.models import zoo
from tfprune.core.graph import build_graph
from tfprune.ondevice.reference import float64_twin

DATA_AWARE = ("act_l1", "act_l2", "apoz", "taylor")
DOLPHIN, BEAVER = 30, 4      # CIFAR-100 classes in the bundled aquatic sample: sea-blue / brown
BLUE, RED = 6, 7             # the colour filters of `colour_model`


def ctx_for(images, batch_size, **options):
    return scoring.ScoringContext(data=data.as_dataset(images, batch_size),
                                  options={"progress": False, **options})


def randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n),
                               rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])
    return model


def kill(model, conv, filters, bn=None):
    """Zero response on any data: zero kernel, and a negative bias / BN shift before the ReLU."""
    weights = model.get_layer(conv).get_weights()
    weights[0][..., filters] = 0.0
    if len(weights) > 1:
        weights[1][filters] = -1.0
    model.get_layer(conv).set_weights(weights)
    if bn:
        gamma, beta, mean, var = model.get_layer(bn).get_weights()
        beta[filters], mean[filters] = -1.0, 0.0
        model.get_layer(bn).set_weights([gamma, beta, mean, var])


def plain_model():
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = keras.layers.ReLU(name="c1_relu")(keras.layers.BatchNormalization(name="c1_bn")(x))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = randomise_bn(keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)))
    kill(model, "c1", [2, 5], "c1_bn")
    kill(model, "c2", [1])
    return model, {"c1": [2, 5], "c2": [1]}


def assert_dead_rank_last(scores, dead):
    for layer, idx in dead.items():
        live = np.setdiff1d(np.arange(len(scores[layer])), idx)
        assert scores[layer][idx].max() < scores[layer][live].min(), (layer, scores[layer])


@pytest.fixture(scope="module")
def fixture_images():
    return data.load_source("npz:tests/fixtures/cifar100_mini.npz").train.take(np.arange(0, 500, 20))


@pytest.mark.parametrize("criterion", DATA_AWARE + ("finetune_l1",))
def test_dead_filters_rank_last_on_a_plain_cnn(criterion, fixture_images):
    model, dead = plain_model()
    ctx = ctx_for(fixture_images, 8, finetune_l1_epochs=1)
    result = scoring.score(criterion, model, build_graph(model), ctx)
    assert_dead_rank_last(result.scores, dead)
    if criterion == "finetune_l1":  # ranked on fine-tuned weights; the input model untouched
        tuned = result.tuned_model
        assert not np.allclose(tuned.get_layer("c2").get_weights()[0],
                               model.get_layer("c2").get_weights()[0])
        assert np.all(model.get_layer("c2").get_weights()[0][..., 1] == 0)


def test_dead_filters_rank_last_in_resnet20_and_its_residual_group(fixture_images):
    model = randomise_bn(zoo.build("resnet20"), 1)
    kill(model, "s2b1_a_conv", [3, 7, 11], "s2b1_a_bn")
    graph = build_graph(model)
    for criterion, scores in all_scores(model, graph, ctx_for(fixture_images, 16)).items():
        assert_dead_rank_last(scores, {"s2b1_a_conv": [3, 7, 11]})
        group = graph.group_of("s1b0_b_conv")  # stem + stage-1 residual branches, one group
        assert set(group.members) == {"stem_conv", "s1b0_b_conv", "s1b1_b_conv", "s1b2_b_conv"}
        assert len(scoring.group_scores(graph, scores)[group.id]) == 16


def all_scores(model, graph, ctx, with_stats=False):
    """Every data-aware criterion from one pass: taylor through the registry collecting every
    sum, the others from the statistics it returns (one pass instead of four)."""
    ctx.options["all_sums"] = True
    result = scoring.score("taylor", model, graph, ctx)
    out = {"taylor": result.scores}
    for criterion in DATA_AWARE[:-1]:
        out[criterion] = datascore.scores_from_stats(graph, result.channel_stats, criterion)
    return (out, result.channel_stats) if with_stats else out


def colour_model():
    """A 1x1 conv on the normalised image: filters 0-5 detect brightness above thresholds (any
    class), filter BLUE fires where blue exceeds red, RED where red exceeds blue; the head
    reads BLUE as evidence for dolphin and RED for beaver."""
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 1, name="c1")(x)
    x = keras.layers.ReLU(name="c1_relu")(keras.layers.BatchNormalization(name="c1_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(100, name="logits")(x))
    std, mean = np.float32(data.STD), np.float32(data.MEAN)  # raw = normalised * std + mean
    kernel, bias = np.zeros((1, 1, 3, 8), np.float32), np.zeros(8, np.float32)
    for i, threshold in enumerate((0.3, 0.4, 0.45, 0.5, 0.55, 0.6)):
        kernel[0, 0, :, i], bias[i] = std, 3 * (mean.mean() - threshold)
    kernel[0, 0, :, BLUE], bias[BLUE] = 6 * np.array([-std[0], 0, std[2]]), 6 * (mean[2] - mean[0] - 0.05)
    kernel[0, 0, :, RED], bias[RED] = -kernel[0, 0, :, BLUE], 6 * (mean[0] - mean[2] - 0.05)
    model.get_layer("c1").set_weights([kernel, bias])
    head = np.random.default_rng(0).normal(0, 0.1, (8, 100)).astype(np.float32)
    head[[BLUE, RED]] = 0
    head[BLUE, DOLPHIN] = head[RED, BEAVER] = 1
    model.get_layer("logits").set_weights([head, np.zeros(100, np.float32)])
    return model


@pytest.mark.parametrize("criterion", DATA_AWARE)
def test_class_specific_filters_follow_the_data_they_are_scored_on(criterion, sample_splits):
    model = colour_model()
    graph = build_graph(model)
    ranks = {}
    for cls in (DOLPHIN, BEAVER):
        images = sample_splits.train.take(np.flatnonzero(sample_splits.train.y == cls))
        score = scoring.compute_scores(criterion, model, graph, ctx_for(images, 20))["c1"]
        ranks[cls] = np.argsort(np.argsort(-score))  # 0 = most important of 8
    assert ranks[DOLPHIN][BLUE] <= 1 and ranks[BEAVER][BLUE] >= 6
    assert ranks[BEAVER][RED] <= 1 and ranks[DOLPHIN][RED] >= 6


def tape_taylor(model, names, x, y):
    """Per-image |sum of a * dL/da| averaged over images, by GradientTape on a probe model."""
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names] + model.outputs)
    taylor = {n: 0.0 for n in names}
    for i in range(len(x)):
        xi = tf.constant(x[i:i + 1], dtype=model.inputs[0].dtype)
        with tf.GradientTape() as tape:
            outs = probe(xi, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(y[i:i + 1], outs[-1], from_logits=True)
        for n, a, g in zip(names, outs[:-1], tape.gradient(loss, outs[:-1])):
            prod = np.asarray(a, np.float64) * np.asarray(g, np.float64)
            taylor[n] = taylor[n] + np.abs(prod.sum((0, 1, 2))) / len(x)
    return taylor, probe


def test_scores_equal_numpy_and_gradient_tape_references(fixture_images):
    """act_* and apoz equal NumPy on the probe's activations. taylor equals GradientTape exactly
    in float64 (the math), and in float32 is as accurate as TF's own float32 tape against that
    exact value: in a randomly initialised deep net a near-zero activation can cross a ReLU
    kink between a batched and a one-image conv (see tests/test_ondevice_grads.py)."""
    keras.utils.set_random_seed(int(os.environ.get("TFPRUNE_TEST_SEED", "0")))
    model = randomise_bn(zoo.build("resnet20"), 2)
    graph = build_graph(model)
    images = fixture_images.take(np.arange(6))
    x, y = data.normalize_np(images.x), images.y
    points = stats.measure_points(model, graph)
    names = sorted({p[0] for p in points.values()})
    tape32, probe = tape_taylor(model, names, x, y)
    twin = float64_twin(model)
    exact, _ = tape_taylor(twin, names, x.astype(np.float64), y)
    ds64 = data.as_dataset(images, 6).map(lambda a, b: (tf.cast(a, tf.float64), b))
    ours64 = scoring.score("taylor", twin, build_graph(twin),
                           scoring.ScoringContext(data=ds64, options={"progress": False})).scores
    acts = {n: np.asarray(a, np.float64) for n, a in zip(names, probe(x, training=False))}
    reference = {"act_l1": lambda a: np.abs(a).mean((0, 1, 2)),
                 "act_l2": lambda a: np.sqrt((a ** 2).mean((0, 1, 2))),
                 "apoz": lambda a: 1.0 - (a == 0).mean((0, 1, 2))}
    for criterion, scores in all_scores(model, graph, ctx_for(images, 6)).items():
        assert set(scores) == set(points)
        for producer, (point,) in points.items():
            if criterion == "taylor":
                scale = np.abs(exact[point]).max()
                np.testing.assert_allclose(ours64[producer], exact[point], atol=1e-10 * scale)
                bound = max(2e-4 * scale, 10 * np.abs(tape32[point] - exact[point]).max())
                assert np.abs(scores[producer] - exact[point]).max() <= bound, (producer, point)
            else:
                np.testing.assert_allclose(scores[producer], reference[criterion](acts[point]),
                                           rtol=2e-4, atol=1e-7,
                                           err_msg=f"{criterion} {producer}@{point}")


def test_one_batch_equals_many_and_scores_round_trip(fixture_images, tmp_path):
    model = randomise_bn(zoo.build("resnet20"), 3)
    graph = build_graph(model)
    ctx = ctx_for(fixture_images, 4)
    one_batch = all_scores(model, graph, ctx_for(fixture_images, 25))
    many_batches, channel_stats = all_scores(model, graph, ctx, with_stats=True)
    assert channel_stats.meta["batches"] == 7
    for criterion, one in one_batch.items():
        many = many_batches[criterion]
        for layer, score in one.items():
            # a conv over 4 or 25 images may round its float32 outputs differently
            np.testing.assert_allclose(many[layer], score, atol=1e-7 * np.abs(score).max(),
                                       rtol=1e-5 if criterion == "taylor" else 1e-6)
        path = tmp_path / f"{criterion}.json"
        datascore.save_scores(path, criterion, many, channel_stats, graph)
        name, loaded, loaded_stats = datascore.load_scores(path)
        assert name == criterion and set(loaded) == set(many)
        again = datascore.scores_from_stats(graph, loaded_stats, criterion)
        for layer, score in many.items():
            np.testing.assert_array_equal(loaded[layer], score)
            np.testing.assert_array_equal(again[layer], score)


def test_bad_input_gets_a_clear_error(fixture_images):
    model, _ = plain_model()
    graph = build_graph(model)
    for criterion in DATA_AWARE + ("finetune_l1",):
        assert scoring.get(criterion).needs_data
        with pytest.raises(scoring.ScoringError, match="needs data"):
            scoring.compute_scores(criterion, model, graph, scoring.ScoringContext())
    assert scoring.get("taylor").needs_labels
    unlabelled = scoring.ScoringContext(data=data.as_dataset(fixture_images, 8).map(lambda x, y: x))
    with pytest.raises(scoring.ScoringError, match="taylor.*needs labels"):
        scoring.compute_scores("taylor", model, graph, unlabelled)
    small = scoring.ScoringContext(data=tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 24, 24, 3), np.float32), np.zeros(4, np.int32))).batch(2))
    with pytest.raises(scoring.ScoringError, match=r"\(24, 24, 3\) do not fit"):
        scoring.compute_scores("act_l2", model, graph, small)
    empty = scoring.ScoringContext(data=data.as_dataset(fixture_images, 8).take(0))
    with pytest.raises(scoring.ScoringError, match="zero usable batches"):
        scoring.compute_scores("apoz", model, graph, empty)
    without_labels = stats.collect(model, unlabelled.data, progress=False)  # e.g. from a phone
    with pytest.raises(scoring.ScoringError, match="no taylor sums"):
        datascore.scores_from_stats(graph, without_labels, "taylor")


def test_prune_app_saves_scores_and_the_statistics_behind_them(tmp_path):
    import json
    import subprocess
    import sys
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipelines.prune", "--model=resnet20", "--criterion=act_l2",
           "--data=npz:tests/fixtures/cifar100_mini.npz", "--subset=aquatic", "--level=0.3",
           "--calibration_batches=2", "--batch_size=8", f"--output={out}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads((out / "plan.json").read_text())
    criterion, saved, with_scores = datascore.load_scores(out / "scores.json")
    channel_stats = stats.ChannelStats.load(out / "stats.json")
    assert plan["criterion"] == criterion == "act_l2" and channel_stats.meta["samples"] == 16
    assert with_scores.to_json() == channel_stats.to_json()
    model = zoo.build("resnet20")  # same architecture: the graph fixes the measure points
    again = datascore.scores_from_stats(build_graph(model), channel_stats, "act_l2")
    assert set(again) == set(saved)
    for layer, score in again.items():
        np.testing.assert_array_equal(np.asarray(saved[layer]), score)
