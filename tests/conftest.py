"""Shared test fixtures: committed real CIFAR-100 cut-outs, never ../shared."""
import os
from pathlib import Path

import pytest

from tfprune.console import prepare_environment

prepare_environment()  # TF log level and Keras backend, before TF loads

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MINI_NPZ = FIXTURES / "cifar100_mini.npz"  # every class: 5 train + 2 test images


@pytest.fixture(scope="session", autouse=True)
def latency_cache(tmp_path_factory):
    """Latency tables measured by the tests (and the apps they start) go to a fresh file,
    never the user's ~/.cache/tfprune/latency.json."""
    path = tmp_path_factory.mktemp("latency_cache") / "latency.json"
    os.environ["TFPRUNE_LATENCY_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def mini_source():
    from tfprune import data

    return data.load_source(f"npz:{MINI_NPZ}")


@pytest.fixture(scope="session")
def sample_splits():
    """The bundled `aquatic` sample (50 train + 30 test images per class)."""
    from tfprune import data

    return data.load_subset("sample", "aquatic")
