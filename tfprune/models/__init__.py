"""Models: the CIFAR zoo, the shipped pretrained weights with their cards, and loading a model
named by a flag value (`.keras` file, `pretrained:NAME`, zoo name). The zoo loads Keras on
first use."""
from tfprune.models.cards import card_path, read_card, versions
from tfprune.models.loader import ModelSpecError, load_model, pretrained_path

__all__ = ["ModelSpecError", "card_path", "load_model", "pretrained_path", "read_card",
           "versions", "zoo"]


def __getattr__(name):
    if name == "zoo":
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'tfprune.models' has no attribute {name!r}")
