"""Benchmarks: `python -m benchmarks.NAME`, results in benchmarks/results/ (JSON, Markdown).

Starting one prepares TensorFlow's environment before anything loads it, as the apps do
(`tfprune.console.prepare_environment`).
"""
from tfprune.console import prepare_environment

prepare_environment()
