"""On-device fine-tuning: export a Keras model as one builtin-only .tflite with training
signatures (`export_trainable`, needs TF), and drive it in LiteRT (`runtime.TrainableRuntime`,
NumPy + ai_edge_litert only: importing it does not load TensorFlow)."""
from tfprune.ondevice.runtime import MANIFEST_NAME, TFLITE_NAME

_LAZY = {"export_trainable": "export", "TrainingModule": "export", "LayerGraph": "forward",
         "UnsupportedModelError": "forward"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"tfprune.ondevice.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfprune.ondevice' has no attribute {name!r}")


__all__ = ["MANIFEST_NAME", "TFLITE_NAME", *_LAZY]
