"""Class subsets (the paper's presets, superclass or class names) and their seeded splits.

`train` and `val` are an 80/20 split of the train pool, drawn per class with a seed that
depends only on (seed, class), so a class splits the same way in every subset; `test` is the
test pool's images of the subset's classes (the val split stands in for a source without a
test pool). Labels keep the full class space; `relabel` gives the subset head's splits,
labelled 0..k-1 in subset order. A split without images is refused, naming its classes; a
class of the subset without images in the source is warned about.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tfprune.data.sources import DataError, Images, Source

PRESETS: dict[str, tuple[str, ...]] = {
    "aquatic": ("aquatic_mammals", "fish"),
    "indoor": ("food_containers", "household_electrical_devices", "household_furniture"),
    "outdoor": ("large_man-made_outdoor_things", "large_natural_outdoor_scenes", "vehicles_1",
                "vehicles_2", "trees", "small_mammals", "people"),
    "natural": ("flowers", "fruit_and_vegetables", "insects", "large_omnivores_and_herbivores",
                "medium_mammals", "non-insect_invertebrates", "small_mammals", "reptiles"),
    # 13 superclasses drawn once: sorted(np.random.default_rng(2020).choice(20, 13, False)).
    "random": ("aquatic_mammals", "flowers", "fruit_and_vegetables",
               "household_electrical_devices", "insects", "large_carnivores",
               "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "reptiles",
               "small_mammals", "trees", "vehicles_1", "vehicles_2"),
}
VAL_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Splits:
    """A subset's classes and its train / val / test images. `class_names` is the source's
    whole class space (label index -> name), which a model's logits follow."""

    name: str
    classes: tuple[int, ...]
    train: Images
    val: Images
    test: Images
    class_names: tuple[str, ...] = ()
    source_classes: tuple[int, ...] = ()  # relabelled splits: the classes' original indices


def relabel(splits: Splits) -> Splits:
    """The splits of a subset head: labels 0..k-1 in the order of `splits.classes` (sorted
    class indices), `class_names` the k names, `source_classes` the original indices."""
    if splits.source_classes:
        return splits
    lookup = np.full(max(len(splits.class_names), max(splits.classes) + 1), -1, np.int64)
    lookup[list(splits.classes)] = np.arange(len(splits.classes))

    def remap(images: Images) -> Images:
        return Images(images.x, lookup[images.y].astype(images.y.dtype))

    names = tuple(splits.class_names[c] if c < len(splits.class_names) else str(c)
                  for c in splits.classes)
    return dataclasses.replace(
        splits, classes=tuple(range(len(splits.classes))), train=remap(splits.train),
        val=remap(splits.val), test=remap(splits.test), class_names=names,
        source_classes=tuple(splits.classes))


def resolve_classes(spec: str, source: Source) -> tuple[int, ...]:
    """Class indices named by `spec`: `all`, or comma-separated presets, superclasses, classes."""
    if spec == "all":
        return tuple(range(len(source.class_names)))
    chosen: set[int] = set()
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token in PRESETS:
            chosen |= _superclass_members(PRESETS[token], source, f"preset {token!r}")
        elif token in source.superclass_names:
            chosen |= _superclass_members((token,), source, token)
        elif token in source.class_names:
            chosen.add(source.class_names.index(token))
        else:
            raise DataError(
                f"unknown class or superclass {token!r} in subset {spec!r}. Presets: "
                f"{', '.join(PRESETS)}. Superclasses: {', '.join(source.superclass_names) or '-'}. "
                f"Classes: {', '.join(source.class_names)}")
    if not chosen:
        raise DataError(f"subset {spec!r} names no classes")
    return tuple(sorted(chosen))


def _superclass_members(names, source: Source, what: str) -> set[int]:
    if not source.superclass_names:
        raise DataError(f"{what} needs superclass labels, which {source.name} does not have")
    wanted = {source.superclass_names.index(n) for n in names}
    return {f for f, c in enumerate(source.fine_to_coarse) if c in wanted}


def _check_images(spec, source: Source, classes, n_train: int, n_val: int, n_test: int) -> None:
    names = lambda cs: ", ".join(source.class_names[c] if c < len(source.class_names) else str(c)
                                 for c in cs[:10]) + (", ..." if len(cs) > 10 else "")
    no_train = [c for c in classes if not np.any(source.train.y == c)]
    no_test = [c for c in classes if not np.any(source.test.y == c)] if len(source.test) else []
    if n_train == 0:
        raise DataError(f"subset {spec!r} has no training images in {source.name} (classes "
                        f"without any: {names(no_train)})")
    if n_val == 0:
        raise DataError(f"subset {spec!r} has no val images in {source.name}: every class has "
                        "fewer than 3 training images to split 80/20")
    if len(source.test) and n_test == 0:
        raise DataError(f"subset {spec!r} has no test images in {source.name} (classes "
                        f"without any: {names(no_test)})")
    for split_name, missing in (("training", no_train), ("test", no_test)):
        if missing:
            logging.getLogger("tfprune").warning(
                "subset %r: %d of its %d classes have no %s images in %s: %s", spec,
                len(missing), len(classes), split_name, source.name, names(missing))


def split(source: Source, spec: str, seed: int = 0) -> Splits:
    """The subset named by `spec` with its per-class seeded 80/20 train/val split and test set."""
    classes = resolve_classes(spec, source)
    train_idx, val_idx = [], []
    for c in classes:
        members = np.flatnonzero(source.train.y == c)
        order = np.random.default_rng([seed, c]).permutation(members)
        n_val = int(round(len(order) * VAL_FRACTION))
        val_idx.append(order[:n_val])
        train_idx.append(order[n_val:])
    train_idx, val_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
    test_idx = np.flatnonzero(np.isin(source.test.y, classes))
    _check_images(spec, source, classes, len(train_idx), len(val_idx), len(test_idx))
    val = source.train.take(val_idx)
    test = source.test.take(test_idx) if len(test_idx) else val
    return Splits(spec, classes, source.train.take(train_idx), val, test, source.class_names)
