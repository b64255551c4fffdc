"""Data-aware filter criteria, registered in `tfprune.scoring.registry` (the package imports both):

- `act_l1` / `act_l2`: mean |a| / root-mean-square of a filter's activation map over the
  calibration data, where the channel is consumed (`tfprune.scoring.stats.measure_points`: after its
  BatchNorm and activation; for a residual group, the post-add activations);
- `apoz`: 1 - the average percentage of zeros there (Hu et al. 2016): more zeros, less useful;
- `taylor`: |sum over positions of a * dL/da| per image, averaged over images (Molchanov et
  al. 2017); needs labels;
- `finetune_l1`: the paper's protocol: fine-tune a copy of the model for
  `ctx.options["finetune_l1_epochs"]` (default 2) epochs on the subset's training split
  (`ctx.options["splits"].train`, augmented, when given; else `ctx.data`), then rank by `l1`
  of the fine-tuned weights. The fine-tuned model comes back as `ScoreResult.tuned_model`:
  the paper prunes it, not the input (`tfprune.pruner.prune_model` does).

Each producer is scored at its own measure point; members of a coupled group are combined by
the core's one rule (`tfprune.core.group_scores`: each member normalised by its mean score,
then the members' scores averaged per group channel), so a group ranks on the same footing
as a single layer in `global` allocation. The statistics behind a run come back as
`ScoreResult.channel_stats`; `save_scores` writes them with the scores as JSON (beside
the plan), and `scores_from_stats` turns statistics computed elsewhere (the phone's
`filter_stats`) into the same scores.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfprune.core.group_scores import group_scores
from tfprune.scoring import registry as scoring
from tfprune.scoring import stats

FORMAT = "tfprune.scores/1"
FINETUNE_EPOCHS, FINETUNE_LR, FINETUNE_WEIGHT_DECAY = 2, 0.01, 5e-4


def scores_from_stats(graph, channel_stats: stats.ChannelStats, criterion: str) -> dict:
    """{producer: per-filter scores} of `criterion` (act_l1, act_l2, apoz, taylor) from
    statistics over the measure points of `graph`'s prunable groups."""
    out = {}
    for member, points in stats.measure_points(None, graph).items():
        try:
            out[member] = stats.group_score(channel_stats, points, criterion,
                                            graph.producers[member][1])
        except stats.StatsError as err:
            raise scoring.ScoringError(f"criterion {criterion!r}, layer {member!r}: {err}") from None
    return out


def collect_stats(model, graph, ctx, taylor: bool, criterion: str) -> stats.ChannelStats:
    """Stream `ctx.data` (at most `ctx.max_batches` batches) through the measure points,
    collecting the sums `criterion` needs (`ctx.options["all_sums"]`: every sum)."""
    if ctx.data is None:
        raise scoring.ScoringError(f"criterion {criterion!r} needs data: pass --data (and --subset)")
    layers = stats.measured_layers(stats.measure_points(model, graph), model)
    try:
        # only the activation sum the criterion needs: each sum is a memory pass
        activation_sums = stats.SUMS[:3]
        fields = activation_sums if ctx.options.get("all_sums") else tuple(
            f for f in activation_sums if f == stats.NEEDS[criterion])
        result = stats.collect(model, ctx.data, layers, taylor=taylor, batches=ctx.max_batches,
                               progress=ctx.options.get("progress", True), fields=fields)
    except stats.StatsError as err:
        raise scoring.ScoringError(f"criterion {criterion!r}: {err}") from None
    result.meta.update(criterion=criterion, seed=ctx.seed)
    return result


def _statistic(name: str, taylor: bool = False):
    def criterion(model, graph, ctx):
        measured = collect_stats(model, graph, ctx, taylor, name)
        return scoring.ScoreResult(scores_from_stats(graph, measured, name), channel_stats=measured)
    criterion.__name__ = name
    criterion.__doc__ = f"`{name}` from streamed channel statistics (see the module doc)."
    return criterion


for _name in ("act_l1", "act_l2", "apoz"):
    scoring.register(_name, needs_data=True)(_statistic(_name))
scoring.register("taylor", needs_data=True, needs_labels=True)(_statistic("taylor", taylor=True))


@scoring.register("finetune_l1", needs_data=True, needs_labels=True)
def finetune_l1(model, graph, ctx):
    import keras

    from tfprune.training import fit as train
    from tfprune.core.graph import build_graph
    if ctx.data is None:
        raise scoring.ScoringError("criterion 'finetune_l1' needs data: pass --data (and --subset)")
    epochs = int(ctx.options.get("finetune_l1_epochs", FINETUNE_EPOCHS))
    if epochs < 1:
        raise scoring.ScoringError(f"finetune_l1 needs at least 1 epoch, got {epochs}")
    spec = ctx.data.element_spec
    if not (isinstance(spec, tuple) and len(spec) >= 2):
        raise scoring.ScoringError("criterion 'finetune_l1' needs labels: the data yields images only")
    stats.check_input(model, ctx.data)
    keras.utils.set_random_seed(ctx.seed)
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    train.compile_sgd(tuned, float(ctx.options.get("finetune_l1_lr", FINETUNE_LR)),
                      FINETUNE_WEIGHT_DECAY)
    splits, ds = ctx.options.get("splits"), ctx.data
    if splits is not None:
        from tfprune import data
        ds = data.as_dataset(splits.train, ctx.options.get("batch_size", 64), training=True,
                             seed=ctx.seed)
    history = tuned.fit(ds, epochs=epochs, verbose=2 if ctx.options.get("progress", True) else 0,
                        callbacks=[train.StopOnNonFinite()],
                        shuffle=False)  # the dataset shuffles itself
    scores = scoring.CRITERIA["l1"].fn(tuned, build_graph(tuned, graph.ignore), ctx)
    return scoring.ScoreResult(scores, tuned_model=tuned, history={
        k: [float(v) for v in vals] for k, vals in history.history.items()})


def scores_to_json(criterion: str, scores: dict, channel_stats=None, graph=None) -> dict:
    """Scores (and the statistics and group scores behind them) as plain JSON data."""
    out = {"format": FORMAT, "criterion": criterion,
           "scores": {k: np.asarray(v, np.float64).tolist() for k, v in scores.items()}}
    if graph is not None:
        out["group_scores"] = {str(gid): v.tolist()
                               for gid, v in group_scores(graph, scores).items()}
    if channel_stats is not None:
        out["stats"] = channel_stats.to_json()
    return out


def save_scores(path, criterion: str, scores: dict, channel_stats=None, graph=None) -> None:
    from tfprune.fileio import atomic_write_text
    atomic_write_text(Path(path), json.dumps(scores_to_json(criterion, scores, channel_stats, graph)))


def load_scores(path) -> tuple[str, dict, stats.ChannelStats | None]:
    """(criterion, {producer: np.ndarray}, ChannelStats or None) from a `save_scores` file."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise scoring.ScoringError(f"cannot read scores from {path}: {err}") from None
    if obj.get("format") != FORMAT:
        raise scoring.ScoringError(f"{path} holds no tfprune scores (format {obj.get('format')!r})")
    channel_stats = stats.ChannelStats.from_json(obj["stats"]) if "stats" in obj else None
    return obj["criterion"], {k: np.asarray(v) for k, v in obj["scores"].items()}, channel_stats
