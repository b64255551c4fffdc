"""Image sources: one flag value each (`npz:PATH`, `tfds:NAME`, `folder:PATH`, `sample`).

A source is a pool of labelled training images and a pool of test images, with the class
names that give the labels their meaning. Labels are indices into the model's class space
(CIFAR-100's 100 fine classes for every bundled source).
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError

SAMPLE_PATH = Path(__file__).resolve().parent / "samples" / "cifar100_aquatic_sample.npz"
NPZ_KEYS = ("x_train", "y_train_fine", "x_test", "y_test_fine", "fine_label_names")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class DataError(TfpruneError):
    """Bad data input: the message names the file, flag value or class at fault."""


@dataclasses.dataclass(frozen=True)
class Images:
    """Images (N, H, W, 3) uint8 with their integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> "Images":
        return Images(self.x[index], self.y[index])

    def without(self, *others: "Images") -> "Images":
        """These images less every one byte-identical to an image of `others`."""
        seen = {img.tobytes() for o in others for img in o.x}
        return self.take(np.flatnonzero([img.tobytes() not in seen for img in self.x]))


@dataclasses.dataclass(frozen=True)
class Source:
    """A train pool and a test pool, and what their labels mean."""

    name: str
    train: Images
    test: Images
    class_names: tuple[str, ...]
    superclass_names: tuple[str, ...] = ()
    fine_to_coarse: tuple[int, ...] = ()


def load_source(spec: str, data_dir: str | None = None) -> Source:
    """Load `npz:PATH`, `tfds:NAME`, `folder:PATH` or `sample` (the bundled aquatic sample)."""
    kind, _, arg = spec.partition(":")
    if kind == "sample" and not arg:
        return load_npz(str(SAMPLE_PATH), name="sample")
    if kind == "npz" and arg:
        return load_npz(arg)
    if kind == "tfds" and arg:
        return load_tfds(arg, data_dir)
    if kind == "folder" and arg:
        return load_folder(arg)
    raise DataError(
        f"data source {spec!r} is not one of npz:PATH, tfds:NAME, folder:PATH or sample")


def load_npz(path: str, name: str | None = None) -> Source:
    """Read a file in the layout of CIFAR-100's npz (see shared/data/README.md)."""
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise DataError(f"data file {path} is not an .npz archive (not a zip file): truncated, "
                        "corrupt or another format")
    try:
        with np.load(path, allow_pickle=False) as npz:  # read all, then close the file
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # np.load raises several types for a non-npz file
        raise DataError(f"data file {path} is not a readable .npz file: {err}") from err
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"data file {path} lacks arrays {missing}; expected {list(NPZ_KEYS)}")
    train = Images(arrays["x_train"], arrays["y_train_fine"].astype(np.int64))
    test = Images(arrays["x_test"], arrays["y_test_fine"].astype(np.int64))
    for split, images in (("x_train", train), ("x_test", test)):
        if images.x.ndim != 4 or images.x.shape[-1] != 3 or images.x.dtype != np.uint8:
            raise DataError(f"data file {path}: {split} must be (N, H, W, 3) uint8, "
                            f"got {images.x.shape} {images.x.dtype}")
        if len(images.x) != len(images.y):
            raise DataError(f"data file {path}: {split} and its labels differ in length")
    has_coarse = "coarse_label_names" in arrays and "fine_to_coarse" in arrays
    return Source(
        name=name or f"npz:{path}",
        train=train,
        test=test,
        class_names=tuple(str(n) for n in arrays["fine_label_names"]),
        superclass_names=tuple(str(n) for n in arrays["coarse_label_names"]) if has_coarse else (),
        fine_to_coarse=tuple(int(c) for c in arrays["fine_to_coarse"]) if has_coarse else (),
    )


def load_tfds(name: str, data_dir: str | None = None) -> Source:
    """Read a TFDS image-classification dataset (e.g. `cifar100`) into memory.

    `data_dir` defaults to $TFDS_DATA_DIR, read here rather than at tfds import time. A
    dataset not prepared there is refused at once when its download host cannot be resolved
    (offline), instead of after minutes of download retries.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends
        raise DataError(f"tfds:{name} could not be loaded: not a TFDS dataset ({err})") from err
    if not builder.is_prepared() and not _reachable(builder.info.homepage):
        raise DataError(
            f"tfds:{name} is not prepared in {builder.data_dir} and its download host is "
            "unreachable (offline?): point --data_dir (or $TFDS_DATA_DIR) at a prepared TFDS "
            "directory, or use local files with --data=npz:PATH or --data=folder:PATH")
    try:
        splits, info = tfds.load(name, split=["train", "test"], data_dir=data_dir,
                                 batch_size=-1, as_supervised=False, with_info=True)
    except Exception as err:
        raise DataError(f"tfds:{name} could not be loaded from data_dir={data_dir}: {err}") from err
    label = info.features["label"]
    arrays = [tfds.as_numpy(s) for s in splits]
    pools = [Images(a["image"], a["label"].astype(np.int64)) for a in arrays]
    superclasses, fine_to_coarse = (), ()
    if "coarse_label" in info.features:
        superclasses = tuple(info.features["coarse_label"].names)
        mapping = dict(zip(arrays[0]["label"].tolist(), arrays[0]["coarse_label"].tolist()))
        fine_to_coarse = tuple(mapping[i] for i in range(label.num_classes))
    return Source(f"tfds:{name}", pools[0], pools[1], tuple(label.names),
                  superclasses, fine_to_coarse)


def _reachable(url: str | None) -> bool:
    """Whether the host of `url` resolves (a fast offline check; no connection is made)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(url or "").hostname or "storage.googleapis.com"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_folder(path: str) -> Source:
    """Read `PATH/<class>/<image>` (or `PATH/train/<class>/...` and `PATH/test/<class>/...`).

    When every folder is named after a CIFAR-100 class, labels index CIFAR-100's classes (so a
    CIFAR-trained model's head still fits, and superclasses and presets work); otherwise they
    index the sorted folder names. Without a `test` folder the test pool is empty and the
    subset's val split stands in for it.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {path} does not exist")
    parts = {"train": root / "train", "test": root / "test"}
    if not parts["train"].is_dir():
        parts["train"] = root
    if not parts["test"].is_dir():
        parts["test"] = None
    folders = sorted(p.name for p in parts["train"].iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"image folder {parts['train']} has no class sub-folders")
    cifar = load_npz(str(SAMPLE_PATH))
    known = set(folders) <= set(cifar.class_names)
    names = cifar.class_names if known else tuple(folders)
    pools = {k: _read_class_folders(d, names) if d else None for k, d in parts.items()}
    empty = Images(np.zeros((0,) + pools["train"].x.shape[1:], np.uint8), np.zeros(0, np.int64))
    return Source(f"folder:{path}", pools["train"], pools["test"] or empty, names,
                  cifar.superclass_names if known else (), cifar.fine_to_coarse if known else ())


def _read_class_folders(root: Path, names: tuple[str, ...]) -> Images:
    import tensorflow as tf

    xs, ys = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name not in names:
            raise DataError(f"class folder {class_dir} is not among the known classes")
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                image = tf.io.decode_image(tf.io.read_file(str(f)), channels=3,
                                           expand_animations=False).numpy()
            except Exception as err:
                raise DataError(f"image file {f} could not be decoded: {err}") from err
            if xs and image.shape != xs[0].shape:
                raise DataError(f"image file {f} is {image.shape}, others are {xs[0].shape}")
            xs.append(image)
            ys.append(names.index(class_dir.name))
    if not xs:
        raise DataError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return Images(np.stack(xs), np.asarray(ys, np.int64))

