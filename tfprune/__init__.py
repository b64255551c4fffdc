"""tfprune: data-aware structured pruning of Keras CNNs, on-device fine-tuning, LiteRT export.

Importing tfprune has no side effects; the apps prepare TensorFlow's environment at start-up
(`tfprune.console.prepare_environment`), and every user-facing error is a
`tfprune.errors.TfpruneError`.
"""
__version__ = "0.1.0"
