"""Scoring: how important each filter is. The criteria registry, the data-agnostic criteria,
the data-aware criteria and the activation statistics they are measured from."""
from tfprune.scoring.registry import (CRITERIA, Criterion, ScoringContext, ScoringError,
                                      bn_gamma, compute_scores, get, group_scores, l1, l2,
                                      random, register)

__all__ = ["CRITERIA", "Criterion", "ScoringContext", "ScoringError", "bn_gamma",
           "compute_scores", "get", "group_scores", "l1", "l2", "random", "register"]
