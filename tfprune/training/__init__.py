"""Training on the host: Keras fine-tuning and resumable runs (`fit`, loads Keras) and
learning-rate schedule strings (`schedules`, TF-free)."""
from tfprune.training.schedules import lr_at_epoch, schedule_points

__all__ = ["fit", "lr_at_epoch", "schedule_points"]


def __getattr__(name):
    if name == "fit":
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'tfprune.training' has no attribute {name!r}")
