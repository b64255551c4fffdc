"""Least-squares reconstruction of a pruned model (tfprune.core.reconstruct), on real images:
it brings each refit layer's output and the model's logits closer to the unpruned model's,
leaves a layer that lost nothing as it was, and skips what it does not refit."""
import keras
import numpy as np
import pytest

from tfprune import data, pruner
from tfprune.core import reconstruct
from tfprune.models import loader


@pytest.fixture(scope="module")
def setup(sample_splits):
    keras.utils.set_random_seed(0)
    model = loader.load_model("pretrained:resnet20")
    splits = data.relabel(sample_splits)
    result = pruner.prune_model(model, "act_l2", 0.5, splits=splits, calibration_batches=2,
                                head_classes=sample_splits.classes,
                                class_names=sample_splits.class_names)
    return result, data.normalize_np(sample_splits.train.x[::4]), \
        data.normalize_np(sample_splits.test.x[:120])


def test_every_refit_layer_and_the_logits_get_closer_to_the_source(setup):
    result, fit_images, held_out = setup
    before = result.pruned.predict(held_out, verbose=0)
    pruned = keras.models.clone_model(result.pruned)
    pruned.set_weights(result.pruned.get_weights())
    report = reconstruct.reconstruct(result.source, pruned, result.plan, fit_images)
    refit = [r for r in report if "skipped" not in r]
    assert len(refit) == 22  # 21 Conv2D and the classifier of ResNet-20
    for row in refit:
        assert row["mse_after"] <= row["mse_before"] * (1 + 1e-6) + 1e-9, row
    assert sum(r["mse_after"] < 0.8 * r["mse_before"] for r in refit) >= 15
    target = result.source.predict(held_out, verbose=0)
    after = pruned.predict(held_out, verbose=0)  # images the fit never saw
    assert np.mean((after - target) ** 2) < 0.7 * np.mean((before - target) ** 2)


def test_a_model_that_lost_nothing_keeps_its_weights(setup):
    result, fit_images, _ = setup
    source = result.source
    copy = keras.models.clone_model(source)
    copy.set_weights(source.get_weights())
    report = reconstruct.reconstruct(source, copy, {"layers": {}}, fit_images[:20])
    assert all(r["mse_before"] < 1e-8 for r in report)
    for a, b in zip(copy.get_weights(), source.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)


def test_depthwise_layers_are_reported_as_skipped():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(x))
    images = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    report = reconstruct.reconstruct(model, model, {"layers": {}}, images)
    assert [r["layer"] for r in report] == ["c", "dw", "d"]
    assert "skipped" in report[1] and "skipped" not in report[0]


def test_the_pruner_reconstructs_before_batchnorm_reestimation(setup, sample_splits):
    result, _, _ = setup
    splits = data.relabel(sample_splits)
    keras.utils.set_random_seed(0)
    done = pruner.prune_model(loader.load_model("pretrained:resnet20"), "act_l2", 0.5,
                              splits=splits, calibration_batches=2, bn_batches=2,
                              head_classes=sample_splits.classes,
                              class_names=sample_splits.class_names, reconstruct_images=60)
    assert done.reconstruction and done.bn_batches == 2
    assert done.plan["layers"] == result.plan["layers"]
