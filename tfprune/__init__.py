"""tfprune: data-aware structured pruning of Keras CNNs, on-device fine-tuning, LiteRT export.

Importing tfprune quiets TensorFlow's C++ logging unless the user already chose a level: on a
machine without an NVIDIA driver the `tensorflow` wheel's failed CUDA probe (an error-level
"failed call to cuInit") is pure noise, so there only fatal messages pass; elsewhere warnings
and info are hidden. The oneDNN/cudart lines TF prints before its logging starts are forced.
"""
import os

_CPU_ONLY = not os.path.exists("/proc/driver/nvidia")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _CPU_ONLY else "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
