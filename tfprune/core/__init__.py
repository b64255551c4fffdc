"""Core: a Keras model as a neutral spec, its channel dependency graph, the per-layer rules,
prune plans, the surgery that applies them, and parameter/MAC counts. Nothing here imports
from the packages above it (scoring, training, litert, ondevice, experiments, jobs)."""
