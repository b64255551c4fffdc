"""Data: image sources, class subsets with their splits, and tf.data pipelines.

The tf.data pipeline (`as_dataset`, `augment`, `normalize`) loads TensorFlow on first use;
sources, subsets and `normalize_np` do not, so the simulated device runs without TF."""
from tfprune.data.arrays import MEAN, STD, augment_np, normalize_np
from tfprune.data.sources import SAMPLE_PATH, DataError, Images, Source, load_source
from tfprune.data.subsets import PRESETS, Splits, relabel, resolve_classes, split


def load_subset(data: str, subset: str, seed: int = 0, data_dir: str | None = None) -> Splits:
    """`split(load_source(data), subset, seed)`: the one call most pipelines need."""
    return split(load_source(data, data_dir), subset, seed)


def transfer_images(data: str, splits: Splits, n: int, seed) -> tuple[Images, int]:
    """Up to `n` (0: all) of `data`'s training images that are none of `splits`' own, drawn by
    `numpy.random.default_rng(seed)` and kept in source order, and how many of the source's
    training images were left out as the splits' own. They join a distillation fine-tune
    without labels (`tfprune.training.fit.finetune`'s `transfer_images`)."""
    import numpy as np
    whole = load_source(data).train
    pool = whole.without(splits.train, splits.val, splits.test)
    n = min(len(pool), n or len(pool))
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), n, False))
    return pool.take(pick), len(whole) - len(pool)


_PIPELINE = ("as_dataset", "augment", "normalize")


def __getattr__(name):
    if name in _PIPELINE:
        from tfprune.data import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'tfprune.data' has no attribute {name!r}")


__all__ = ["MEAN", "STD", "PRESETS", "SAMPLE_PATH", "DataError", "Images", "Source", "Splits",
           "augment_np",
           "as_dataset", "augment", "load_source", "load_subset", "normalize", "normalize_np",
           "relabel", "resolve_classes", "split", "transfer_images"]
