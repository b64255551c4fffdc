"""absl command-line apps: `python -m pipelines.NAME --flagfile=...`.

Starting an app prepares TensorFlow's environment before anything loads it
(`tfprune.console.prepare_environment`: log level, Keras backend; the user's own settings win).
"""
from tfprune.console import prepare_environment

prepare_environment()
