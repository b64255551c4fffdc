"""Model cards: the JSON that travels beside a trained `.keras` file."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def versions() -> dict:
    """Versions of the libraries that shaped a result."""
    import keras
    import numpy
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__}


def card_path(model_path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_card(model_path) -> dict:
    path = card_path(model_path)
    return json.loads(path.read_text()) if path.exists() else {}
