"""Core: a Keras model as a neutral spec (nested models flattened into one), its channel
dependency graph, the per-layer rules, removable residual branches, group scores, prune
plans, the surgery that applies them, and parameter/MAC counts. Nothing here imports from
the packages above it, and nothing here loads TensorFlow at import."""
from tfprune.core.counts import compare, model_metrics
from tfprune.core.depth import Branch, DepthError, find_branches, remove_branches
from tfprune.core.flatten import FlattenInfo, flatten_model
from tfprune.core.graph import ChannelGraph, GraphError, Group, build_graph
from tfprune.core.group_scores import GroupScoreError, group_scores
from tfprune.core.modelspec import ModelReadError, ModelSpec, read_model, write_model
from tfprune.core.plan import (PlanError, UnreachableLevel, check_level, check_reachable,
                               load_plan, make_plan, save_plan)
from tfprune.core.rules import rule_for
from tfprune.core.surgery import apply_plan, zero_dropped

__all__ = ["Branch", "ChannelGraph", "DepthError", "FlattenInfo", "GraphError", "Group", "GroupScoreError",
           "ModelReadError", "ModelSpec", "PlanError", "UnreachableLevel", "apply_plan",
           "build_graph", "check_level", "check_reachable",
           "compare", "find_branches", "flatten_model", "group_scores", "load_plan", "make_plan", "model_metrics",
           "read_model", "remove_branches", "rule_for",
           "save_plan", "write_model", "zero_dropped"]
