"""Load a model named by a flag value: a `.keras` file, `pretrained:NAME`, or a zoo name."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from tfprune.errors import TfpruneError

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class ModelSpecError(TfpruneError):
    """A model flag value that names nothing loadable; the message says what and why."""


def pretrained_path(name: str) -> Path:
    return PRETRAINED_DIR / f"{name}.keras"


def load_model(spec: str, compile: bool = False):
    """`path/to/model.keras` -> that model; `pretrained:resnet20` -> the shipped trained
    weights; `resnet20` (any zoo name) -> a freshly initialised zoo model."""
    import keras

    from tfprune.models import zoo

    if spec.startswith("pretrained:"):
        name = spec.partition(":")[2]
        path = pretrained_path(name)
        if not path.exists():
            shipped = sorted(p.stem for p in PRETRAINED_DIR.glob("*.keras"))
            raise ModelSpecError(f"no pretrained model {name!r}; shipped: {', '.join(shipped) or '-'}")
        return keras.models.load_model(path, compile=compile)
    if spec in zoo.MODELS:
        return zoo.build(spec)
    if spec.endswith((".keras", ".h5")):
        if not os.path.isfile(spec):
            raise ModelSpecError(f"model file {spec} does not exist")
        if spec.endswith(".keras") and not zipfile.is_zipfile(spec):
            raise ModelSpecError(f"model file {spec} is not a .keras archive (not a zip file): "
                                 "truncated, corrupt or another format")
        try:
            return keras.models.load_model(spec, compile=compile)
        except Exception as err:
            raise ModelSpecError(f"model file {spec} could not be loaded: {err}") from err
    raise ModelSpecError(f"model {spec!r} is neither a .keras file, pretrained:NAME, nor a zoo "
                         f"name ({', '.join(zoo.MODELS)})")
