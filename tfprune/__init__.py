"""tfprune: data-aware structured pruning of Keras CNNs, on-device fine-tuning, LiteRT export.

Importing tfprune quiets TensorFlow's C++ start-up chatter (GPU/CUDA probing on a CPU machine)
unless the user already chose a log level.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
