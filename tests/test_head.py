"""The subset head: the sliced classifier equals the original's restricted logits on real
images, a plan keeps its cut through JSON, relabelled splits, and clear refusals."""
import json

import keras
import numpy as np
import pytest

from tfprune import data
from tfprune import pruner
from tfprune.core import head, surgery
from tfprune.core import plan as plan_mod
from tfprune.models import loader, zoo


@pytest.fixture(scope="module")
def pretrained():
    return loader.load_model("pretrained:resnet20")


def _images(splits, n=64):
    return data.normalize_np(splits.test.x[:n])


def test_sliced_head_equals_restricted_logits(pretrained, sample_splits):
    classes = list(sample_splits.classes)
    cut = head.slice_head(pretrained, classes)
    x = _images(sample_splits)
    full = np.asarray(pretrained(x, training=False))
    assert cut.output_shape[-1] == len(classes)
    np.testing.assert_allclose(np.asarray(cut(x, training=False)), full[:, classes],
                               rtol=1e-5, atol=1e-5)
    # a class order other than sorted is kept too
    order = classes[::-1][:3]
    np.testing.assert_allclose(np.asarray(head.slice_head(pretrained, order)(x)),
                               full[:, order], rtol=1e-5, atol=1e-5)


def test_squeezenet_conv_classifier_slices(sample_splits):
    model = zoo.build("squeezenet")
    x = _images(sample_splits, 4)
    cut = head.slice_head(model, [3, 1, 7])
    np.testing.assert_allclose(np.asarray(cut(x)), np.asarray(model(x))[:, [3, 1, 7]],
                               rtol=1e-4, atol=1e-5)


def test_relabel_maps_subset_order(sample_splits):
    r = data.relabel(sample_splits)
    assert r.classes == tuple(range(10)) and r.source_classes == sample_splits.classes
    assert r.class_names == tuple(sample_splits.class_names[c] for c in sample_splits.classes)
    lookup = {c: i for i, c in enumerate(sample_splits.classes)}
    assert [lookup[int(y)] for y in sample_splits.test.y] == r.test.y.tolist()
    assert data.relabel(r) is r


def test_plan_round_trip_with_kept_classes(tmp_path, pretrained, sample_splits):
    splits = data.relabel(sample_splits)
    result = pruner.prune_model(pretrained, "l1", 0.5, head_classes=sample_splits.classes,
                                class_names=sample_splits.class_names)
    assert result.plan["head"]["classes"] == list(sample_splits.classes)
    assert result.plan["head"]["class_names"] == list(splits.class_names)
    plan_mod.save_plan(result.plan, tmp_path / "plan.json")
    loaded = plan_mod.load_plan(tmp_path / "plan.json")
    assert loaded == json.loads(json.dumps(result.plan))
    again = surgery.apply_plan(pretrained, loaded)
    assert again.output_shape[-1] == 10
    for a, b in zip(result.pruned.weights, again.weights):
        assert a.path == b.path and a.numpy().tobytes() == b.numpy().tobytes()
    # the pruned model equals the cut original with its dropped weights zeroed
    x = _images(sample_splits, 8)
    zeroed = surgery.zero_dropped(pretrained, loaded)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(zeroed(x)), rtol=1e-4, atol=2e-4)


def test_model_without_classifier_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(x))
    with pytest.raises(head.HeadError, match="no final classifier over classes.*'flat'"):
        head.slice_head(model, [0])


def test_class_the_model_does_not_have_refused(pretrained):
    with pytest.raises(head.HeadError, match="class 100 .*100 outputs"):
        head.slice_head(pretrained, [3, 100])
    with pytest.raises(head.HeadError, match="repeat"):
        head.slice_head(pretrained, [3, 3])


def test_plan_head_for_another_classifier_refused(pretrained):
    entry = head.head_entry(pretrained, [1, 2])
    cut = head.apply_entry(pretrained, entry)
    with pytest.raises(head.HeadError, match="'logits' with 100 outputs; the model's is "
                                             "'logits' with 2"):
        head.apply_entry(cut, entry)
