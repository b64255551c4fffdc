"""absl command-line apps: `python -m pipelines.NAME --flagfile=...`."""
