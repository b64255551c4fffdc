"""Data: image sources, class subsets with their splits, and tf.data pipelines."""
from tfprune.data.pipeline import MEAN, STD, as_dataset, augment, normalize, normalize_np
from tfprune.data.sources import SAMPLE_PATH, DataError, Images, Source, load_source
from tfprune.data.subsets import PRESETS, Splits, resolve_classes, split


def load_subset(data: str, subset: str, seed: int = 0, data_dir: str | None = None) -> Splits:
    """`split(load_source(data), subset, seed)`: the one call most pipelines need."""
    return split(load_source(data, data_dir), subset, seed)


__all__ = ["MEAN", "STD", "PRESETS", "SAMPLE_PATH", "DataError", "Images", "Source", "Splits",
           "as_dataset", "augment", "load_source", "load_subset", "normalize", "normalize_np",
           "resolve_classes", "split"]
