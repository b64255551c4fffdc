"""tfprune.data on real CIFAR-100 cut-outs: sources, presets, splits, pipelines, errors."""
import numpy as np
import pytest
from PIL import Image

from tfprune import data
from tests.conftest import MINI_NPZ

# The mini fixture has 5 train and 2 test images per class: 4 train / 1 val / 2 test.
PRESET_CLASSES = {"aquatic": 10, "indoor": 15, "outdoor": 35, "natural": 40, "random": 65}


@pytest.mark.parametrize("preset,n_classes", PRESET_CLASSES.items())
def test_preset_sizes_and_labels(mini_source, preset, n_classes):
    splits = data.split(mini_source, preset)
    assert len(splits.classes) == n_classes
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4 * n_classes, n_classes,
                                                                     2 * n_classes)
    wanted = {mini_source.superclass_names.index(s) for s in data.PRESETS[preset]}
    assert {mini_source.fine_to_coarse[c] for c in splits.classes} == wanted
    for part in (splits.train, splits.val, splits.test):
        assert set(np.unique(part.y)) == set(splits.classes)  # full 100-class label space
        assert part.x.dtype == np.uint8 and part.x.shape[1:] == (32, 32, 3)


def test_split_is_disjoint_seeded_and_per_class(mini_source):
    a = data.split(mini_source, "aquatic", seed=0)
    again = data.split(mini_source, "aquatic", seed=0)
    other = data.split(mini_source, "aquatic", seed=1)
    fish = data.split(mini_source, "fish", seed=0)
    key = lambda images: {im.tobytes() for im in images.x}
    assert not key(a.train) & key(a.val)
    assert key(a.train) == key(again.train) and key(a.train) != key(other.train)
    # a class splits the same way whichever subset it is in
    assert key(fish.val) <= key(a.val) and key(fish.train) <= key(a.train)


def test_mixed_names_and_all(mini_source):
    classes = data.resolve_classes("fish, apple,aquatic_mammals", mini_source)
    assert len(classes) == 11 and mini_source.class_names.index("apple") in classes
    assert data.resolve_classes("all", mini_source) == tuple(range(100))


def test_a_transfer_pool_loses_the_runs_own_images(mini_source):
    """`without` drops exactly the images byte-identical to the run's splits, so a transfer
    pool drawn from the whole train pool never holds the run's val (or train/test) images."""
    splits = data.split(mini_source, "aquatic", seed=1)
    pool = mini_source.train.without(splits.train, splits.val, splits.test)
    assert len(pool) == len(mini_source.train) - len(splits.train) - len(splits.val)
    ours = {img.tobytes() for part in (splits.train, splits.val) for img in part.x}
    assert not ours & {img.tobytes() for img in pool.x}
    assert len(mini_source.train.without()) == len(mini_source.train)


def test_bundled_sample_is_real_aquatic_cifar(sample_splits):
    assert len(sample_splits.classes) == 10
    assert (len(sample_splits.train), len(sample_splits.val), len(sample_splits.test)) == (400, 100, 300)
    mean = sample_splits.train.x.reshape(-1, 3).mean(0) / 255
    assert 0.3 < mean.mean() < 0.6 and sample_splits.train.x.std() > 40  # natural images


def test_unknown_name_lists_valid_names(mini_source):
    with pytest.raises(data.DataError, match="unknown class or superclass 'dolphins'.*aquatic.*"
                                             "aquatic_mammals.*dolphin"):
        data.resolve_classes("dolphins", mini_source)
    with pytest.raises(data.DataError, match="names no classes"):
        data.resolve_classes(" , ", mini_source)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_source(f"npz:{tmp_path}/nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="junk.npz is not an .npz archive"):
        data.load_source(f"npz:{junk}")
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(data.DataError, match="partial.npz lacks arrays"):
        data.load_source(f"npz:{partial}")
    with pytest.raises(data.DataError, match="not one of"):
        data.load_source("csv:foo")


def test_folder_source_maps_cifar_names(tmp_path, mini_source):
    fish = data.split(mini_source, "fish")
    for x, y in zip(fish.train.x, fish.train.y):
        folder = tmp_path / "train" / mini_source.class_names[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / f"{len(list(folder.iterdir()))}.png")
    source = data.load_source(f"folder:{tmp_path}")
    assert source.class_names == mini_source.class_names
    assert sorted(source.train.y.tolist()) == sorted(fish.train.y.tolist())
    assert {im.tobytes() for im in source.train.x} == {im.tobytes() for im in fish.train.x}
    splits = data.split(source, "all")
    assert len(source.test) == 0 and splits.test is splits.val  # no test folder: evaluate on val
    assert len(data.split(source, "fish").train) == 15  # CIFAR names bring superclasses


def test_folder_with_own_class_names(tmp_path, mini_source):
    for name, image in (("cat", mini_source.train.x[0]), ("dog", mini_source.train.x[1])):
        (tmp_path / name).mkdir()
        Image.fromarray(image).save(tmp_path / name / "a.jpg", quality=95)
    source = data.load_source(f"folder:{tmp_path}")
    assert source.class_names == ("cat", "dog") and source.train.y.tolist() == [0, 1]
    with pytest.raises(data.DataError, match="preset 'aquatic' needs superclass labels"):
        data.split(source, "aquatic")


def test_folder_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_source(f"folder:{tmp_path}/missing")
    with pytest.raises(data.DataError, match="no class sub-folders"):
        data.load_source(f"folder:{tmp_path}")
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"nope")
    with pytest.raises(data.DataError, match="broken.png could not be decoded"):
        data.load_source(f"folder:{tmp_path}")


def test_tfds_source_reads_a_prepared_data_dir(tmp_path):
    """The real tfds.load path, offline, on a data dir prepared from the fixture with the
    features of TFDS's cifar100 (id, image, label, coarse_label)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.dataset_builders import adhoc_builder

    arrays = np.load(MINI_NPZ)
    fine = [str(n) for n in arrays["fine_label_names"]]
    coarse = [str(n) for n in arrays["coarse_label_names"]]
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "image": tfds.features.Image(shape=(32, 32, 3)),
        "label": tfds.features.ClassLabel(names=fine),
        "coarse_label": tfds.features.ClassLabel(names=coarse)})

    def examples(split):
        rows = zip(arrays[f"x_{split}"], arrays[f"y_{split}_fine"], arrays[f"y_{split}_coarse"])
        return [(i, {"id": f"{split}_{i}", "image": x, "label": int(y), "coarse_label": int(c)})
                for i, (x, y, c) in enumerate(rows)]

    adhoc_builder.store_as_tfds_dataset(
        name="cifar100", version="3.0.2", features=features, data_dir=str(tmp_path),
        split_datasets={"train": examples("train"), "test": examples("test")},
        disable_shuffling=True)
    source = data.load_source("tfds:cifar100", data_dir=str(tmp_path))
    assert np.array_equal(source.train.x, arrays["x_train"])
    assert np.array_equal(source.test.y, arrays["y_test_fine"])
    assert source.fine_to_coarse == tuple(int(c) for c in arrays["fine_to_coarse"])
    assert len(data.split(source, "aquatic").test) == 20
    with pytest.raises(data.DataError, match="tfds:no_such_dataset could not be loaded"):
        data.load_source("tfds:no_such_dataset", data_dir=str(tmp_path))


def test_pipeline_normalises_and_augments(sample_splits):
    images = sample_splits.train.take(np.arange(64))
    x, y = next(iter(data.as_dataset(images, 64)))
    assert x.shape == (64, 32, 32, 3) and x.dtype.name == "float32"
    np.testing.assert_allclose(x.numpy(), data.normalize_np(images.x), atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), images.y)
    aug1 = next(iter(data.as_dataset(images, 64, training=True, seed=3)))[0].numpy()
    aug2 = next(iter(data.as_dataset(images, 64, training=True, seed=3)))[0].numpy()
    np.testing.assert_array_equal(aug1, aug2)  # deterministic for a seed
    assert aug1.shape == (64, 32, 32, 3) and not np.allclose(aug1, x.numpy())
    zero = data.normalize_np(np.zeros((1, 1, 1, 3), np.uint8)).ravel()
    # every augmented pixel is an image pixel or zero padding
    lo = np.minimum(x.numpy().min(axis=(0, 1, 2)), zero) - 1e-5
    assert (aug1 >= lo).all() and (aug1 <= x.numpy().max() + 1e-5).all()


def test_augment_crops_a_shifted_window():
    import tensorflow as tf

    image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    out = data.augment(tf.constant(image), tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    found = [(i, j, f) for i in range(9) for j in range(9) for f in (False, True)
             if np.array_equal(out, (padded[i:i + 32, j:j + 32, :][:, ::-1] if f
                                     else padded[i:i + 32, j:j + 32, :]))]
    assert len(found) == 1
