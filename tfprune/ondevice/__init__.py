"""On-device fine-tuning: export a Keras model as one builtin-only .tflite with training
signatures (`export_trainable`), and drive it in LiteRT (`runtime.TrainableRuntime`)."""
from tfprune.ondevice.export import MANIFEST_NAME, TFLITE_NAME, TrainingModule, export_trainable
from tfprune.ondevice.forward import LayerGraph, UnsupportedModelError

__all__ = ["MANIFEST_NAME", "TFLITE_NAME", "LayerGraph", "TrainingModule",
           "UnsupportedModelError", "export_trainable"]
