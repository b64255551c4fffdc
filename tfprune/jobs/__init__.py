"""The main job (`pipelines.run`): evaluate, prune on the subset, fine-tune, export, validate,
bundle and train on the simulated device, then write its report."""
