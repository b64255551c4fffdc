"""Filter-importance criteria: a registry, the data-agnostic criteria, and group scores.

Registering a criterion (data-aware ones live in `data_criteria` and register the same way)::

    from tfprune.scoring import registry

    @registry.register("act_l1", needs_data=True)
    def act_l1(model, graph, ctx):      # ctx: ScoringContext
        ...
        return {producer_name: np.ndarray(filters,), ...}

Contract of `fn(model, graph, ctx) -> dict | ScoreResult`:
- keys are *producer* layer names (members of `graph.prunable_groups()`; see
  `Group.members`), values 1-D float arrays with one score per output filter of that layer,
  higher = more important = keep. A criterion may score only some members of a group (e.g.
  where it measured); every prunable group needs at least one scored member.
- where to measure: `graph.measure_point(member)` names the layer whose output carries a
  filter's channel as the next layer sees it (`tfprune.scoring.stats.measure_points` lists
  them for every member; `graph.channel_path(member)` is the whole walk); `Group.flow` lists every layer the group's channels pass through
  (BatchNorm, activations, Add/Multiply merges, concatenations, pooling) and
  `Group.member_channels[member]` maps a member's filter index to the group channel.
- `ctx.data` is a `tf.data.Dataset` of normalised (x, y) batches or None; `needs_data=True`
  criteria get a clear `ScoringError` from `score` when it is None, and
  `needs_labels=True` ones are told the labels are required.
- what a criterion makes on the way (the channel statistics it measured, a model it
  fine-tuned, that model's history) comes back in a `ScoreResult`, never through `ctx`.

Member scores become one score per group channel in `tfprune.core.group_scores`. The paper's
`l1` is itself the mean |w| of a filter (normalised by fan-in), so `normalizer="none"` ranks
raw l1 across layers.

Data-agnostic criteria here: `l1` (mean |w| of the filter), `l2` (root-mean-square of the
filter), `bn_gamma` (|gamma| of the BatchNorm that consumes the filter; members with no such
BatchNorm fall back to `l1`), `random` (uniform, seeded by `ctx.seed`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from tfprune.errors import TfpruneError


class ScoringError(TfpruneError):
    """A criterion that cannot run as asked: unknown name, missing data or labels."""


@dataclasses.dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable
    needs_data: bool = False
    needs_labels: bool = False


@dataclasses.dataclass
class ScoringContext:
    data: Any = None          # tf.data.Dataset of normalised (x, y) batches, or None
    max_batches: int | None = None
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ScoreResult:
    """What a criterion produced: its per-filter scores and what it made on the way."""

    scores: dict                   # {producer: per-filter scores}
    channel_stats: Any = None      # tfprune.scoring.stats.ChannelStats behind the scores
    tuned_model: Any = None        # a model the criterion fine-tuned; it is what gets pruned
    history: dict | None = None    # the tuned model's training history


CRITERIA: dict[str, Criterion] = {}


def register(name: str, needs_data: bool = False, needs_labels: bool = False):
    """Decorator: make `fn(model, graph, ctx) -> {producer: scores} | ScoreResult` criterion
    `name`."""
    def wrap(fn):
        CRITERIA[name] = Criterion(name, fn, needs_data, needs_labels)
        return fn
    return wrap


def get(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ScoringError(f"unknown criterion {name!r}; known: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def score(name: str, model, graph, ctx: ScoringContext | None = None) -> ScoreResult:
    """Run criterion `name`; check the context and the result's shapes."""
    crit = get(name)
    ctx = ctx or ScoringContext()
    if crit.needs_data and ctx.data is None:
        raise ScoringError(f"criterion {name!r} needs data: pass --data (and --subset)")
    result = crit.fn(model, graph, ctx)
    if not isinstance(result, ScoreResult):
        result = ScoreResult(result)
    out = {}
    for layer, values in result.scores.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if layer not in graph.producers:
            raise ScoringError(f"criterion {name!r} scored {layer!r}, which is not a producer")
        if len(values) != graph.producers[layer][1]:
            raise ScoringError(f"criterion {name!r}: {len(values)} scores for {layer!r}, which "
                               f"has {graph.producers[layer][1]} filters")
        out[layer] = values
    return dataclasses.replace(result, scores=out)


def compute_scores(name: str, model, graph, ctx: ScoringContext | None = None) -> dict:
    """`score(...).scores`: the checked per-filter scores of criterion `name`."""
    return score(name, model, graph, ctx).scores


def _filter_weights(graph, name):
    """(kernel, axis of its output filters) of a producer: the weight with an 'out' axis and
    the most elements."""
    layer = graph.spec.layers[name]
    best = None
    for w, axes in zip(layer.weights, graph.rules[name].weight_axes(layer)):
        outs = [a for a, k in axes.items() if k == "out"]
        if outs and (best is None or w.size > best[0].size):
            best = (w, outs[0])
    return best


def _weight_stat(graph, stat):
    out = {}
    for g in graph.prunable_groups():
        for m in g.members:
            w, axis = _filter_weights(graph, m)
            flat = np.moveaxis(np.asarray(w, dtype=np.float64), axis, -1).reshape(-1, w.shape[axis])
            out[m] = stat(flat)
    return out


@register("l1")
def l1(model, graph, ctx):
    return _weight_stat(graph, lambda f: np.abs(f).mean(axis=0))


@register("l2")
def l2(model, graph, ctx):
    return _weight_stat(graph, lambda f: np.sqrt((f ** 2).mean(axis=0)))


@register("bn_gamma")
def bn_gamma(model, graph, ctx):
    out = l1(model, graph, ctx)
    for member in out:
        for name in graph.channel_path(member):
            layer = graph.spec.layers[name]
            if layer.class_name == "BatchNormalization":
                if layer.config.get("scale", True):
                    out[member] = np.abs(layer.weights[0]).astype(np.float64)
                break
    return out


@register("random")
def random(model, graph, ctx):
    rng = np.random.default_rng(ctx.seed)
    return {m: rng.random(graph.producers[m][1])
            for g in graph.prunable_groups() for m in g.members}
