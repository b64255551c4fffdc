"""The paper's experiment: one protocol run, training recipes, resumable sweeps, their report,
and the search for the highest pruning level that keeps accuracy."""
