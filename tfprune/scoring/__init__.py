"""Scoring: how important each filter is. The criteria registry, the data-agnostic criteria,
the data-aware criteria and the activation statistics they are measured from; and how much
each removable residual branch matters (`branches`)."""
from tfprune.core.group_scores import group_scores
from tfprune.scoring.registry import (CRITERIA, Criterion, ScoreResult, ScoringContext,
                                      ScoringError, bn_gamma, compute_scores, get, l1, l2,
                                      random, register, score)
from tfprune.scoring import data_criteria  # registers the data-aware criteria
from tfprune.scoring.branches import BRANCH_CRITERIA, score_branches

__all__ = ["BRANCH_CRITERIA", "CRITERIA", "Criterion", "ScoreResult", "ScoringContext",
           "ScoringError", "bn_gamma", "compute_scores", "data_criteria", "get", "group_scores", "l1", "l2",
           "random", "register", "score", "score_branches"]
