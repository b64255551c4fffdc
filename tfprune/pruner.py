"""One pruning step shared by the apps: (subset head, residual branches removed) -> score ->
plan -> surgery -> (reconstruction) -> BatchNorm re-estimation.

    result = prune_model(model, "act_l2", 0.5, splits=splits)   # data-aware: needs splits
    result.pruned, result.plan, result.scores, result.graph

Composed from `tfprune.core.graph`, `tfprune.scoring`, `tfprune.core.plan` and
`tfprune.core.surgery`; the prune app, the paper's protocol and the main job all prune
through it. For `finetune_l1` the criterion fine-tunes a copy of the model
(`ScoreResult.tuned_model`) and ranks its filters; as in the paper, that tuned model is what
gets pruned (`result.source` says which model the plan was applied to).

After surgery the kept filters' BatchNorm statistics no longer match what reaches them
(inputs lost channels), so `calibration_batches` > 0 re-estimates every BatchNorm's moving
mean and variance on that many training batches (`reestimate_batchnorm`, a cumulative
average of the batch statistics, weights untouched): this recovers much of the accuracy
lost by pruning before any retraining.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class PruneResult:
    pruned: Any            # the smaller keras.Model
    plan: dict             # tfprune.core.plan dict (JSON-serialisable)
    scores: dict           # {producer: per-filter scores}
    graph: Any             # channel graph of `source`
    source: Any            # the model the plan was applied to (fine-tuned for finetune_l1)
    scored: Any = None     # the criterion's ScoreResult (channel_stats, tuned_model, history)
    bn_batches: int = 0    # batches BatchNorm statistics were re-estimated on
    reconstruction: list | None = None  # tfprune.core.reconstruct's per-layer report


def scoring_context(splits=None, calibration_batches: int | None = 10, batch_size: int = 64,
                    seed: int = 0, options: dict | None = None):
    """The ScoringContext `prune_model` builds: the subset's (unaugmented) train split as
    scoring data, and the splits themselves for criteria that train (finetune_l1)."""
    from tfprune import data, scoring
    ds = data.as_dataset(splits.train, batch_size) if splits is not None else None
    return scoring.ScoringContext(
        data=ds, max_batches=calibration_batches, seed=seed,
        options={"splits": splits, "batch_size": batch_size, **(options or {})})


def prune_model(model, criterion: str, level: float, target: str = "params",
                allocation: str = "global", min_channels: int = 2, round_to=1,
                ignore=(), seed: int = 0, splits=None, calibration_batches: int | None = 10,
                batch_size: int = 64, normalizer: str = "mean", bn_batches: int = 0,
                options: dict | None = None, head_classes=None,
                class_names=None, cost=None, reconstruct_images: int = 0,
                feedback: bool = True, log=None, blocks: int | str = 0,
                block_criterion: str = "auto", terms=None) -> PruneResult:
    """Score `model`'s filters with `criterion`, plan `level` of `target` away, cut them out,
    and (with `bn_batches` > 0 and `splits`) re-estimate BatchNorm statistics on that many
    augmented training batches. `options` go to the criterion (e.g. finetune_l1_epochs).
    With `reconstruct_images` > 0 (and `splits`), the pruned model's Conv2D/Dense weights are
    first refit on up to that many training images to reproduce the source's layer outputs
    (`tfprune.core.reconstruct`; no labels), before the BatchNorm re-estimation.
    `round_to` is an int or {group id: step}; `cost` prices the plan in predicted latency
    (both from `tfprune.latency.plan_terms`, which resolves round_to=auto and --runtime).
    With target "latency" and `feedback`, `cost.fit` measures the planned model against the
    unpruned one and re-plans until the measured cut is the level
    (`tfprune.latency.feedback`; the plan records each measurement).

    `head_classes` (the subset head): the classifier is first cut to these classes of
    `model` (tfprune.core.head), and everything after, scoring included, works on the cut
    model, so `splits` must carry labels 0..k-1 in `head_classes` order
    (`tfprune.data.relabel`); the plan records the cut (`plan["head"]`) and `result.source`
    is the cut model. `blocks` > 0 then removes that many whole residual branches (all it
    has when the model has fewer; `tfprune.core.depth`; a list: the branches it names, by
    their Add), the lowest by `block_criterion`
    (`tfprune.scoring.branches`; auto: `kl` for data-aware criteria, `bn_gamma` otherwise),
    recorded as `plan["depth"]`; `level` counts from the model without them, which
    `result.source` is. `blocks` "auto" (target latency, with `terms`) lets the depth and
    channel cuts share the level, counted from the model before both: for b = 0, 1, ... of
    the lowest branches, the channels cut what b branches leave of the predicted latency,
    and the candidate (pruned, reconstructed, re-estimated like the result, without
    feedback) closest to the model (mean KL on the scoring data) wins; without `splits`,
    the fewest branches whose channel plan reaches the level. The plan's depth entry lists
    every candidate tried. `terms(model) -> (round_to, cost)` (e.g.
    `tfprune.latency.plan_terms`) prices that model, in place of `round_to` and `cost`.
    Options no plan can satisfy are refused before scoring
    (`tfprune.core.plan.check_reachable`). A model with nested models is flattened first
    (`tfprune.core.flatten`); `result.source` is then the flat (and cut) model."""
    from tfprune.core import graph as graph_mod
    from tfprune.core import plan as plan_mod
    from tfprune import scoring
    from tfprune.core import depth, flatten, surgery

    plan_mod.check_level(level)
    model = flatten.flatten_model(model)
    head_entry = None
    if head_classes is not None:
        from tfprune.core import head
        head_entry = head.head_entry(model, head_classes, class_names)
        model = head.apply_entry(model, head_entry)
    crit = scoring.get(criterion)
    if crit.needs_data and splits is None:
        raise scoring.ScoringError(f"criterion {criterion!r} is data-aware: it needs the "
                                   "subset's splits (data and subset)")
    ctx = scoring_context(splits, calibration_batches, batch_size, seed, options)
    depth_entry, whole, blocks = None, model, depth.parse_blocks(blocks)
    if blocks == "auto":
        same = dict(allocation=allocation, min_channels=min_channels, ignore=ignore, seed=seed,
                    splits=splits, calibration_batches=calibration_batches,
                    batch_size=batch_size, normalizer=normalizer, bn_batches=bn_batches,
                    options=options, reconstruct_images=reconstruct_images, terms=terms)
        depth_entry, level = _choose_depth(model, criterion, level, target, block_criterion,
                                           crit, ctx, same, log)
        model = depth.remove_branches(model, depth_entry["removed"], ignore=ignore)
    elif blocks:
        model, depth_entry = _cut_depth(model, blocks, block_criterion, crit, ctx, ignore, log)
    if terms is not None:
        round_to, cost = terms(model)
    g = graph_mod.build_graph(model, ignore=ignore)
    try:
        plan_mod.check_reachable(g, level, target, allocation, round_to, min_channels, cost)
    except plan_mod.UnreachableLevel as err:
        if blocks or target != "latency" or not depth.find_branches(g.spec, ignore):
            raise
        raise plan_mod.UnreachableLevel(
            f"{err}; --blocks=auto removes whole residual branches too, which cuts the "
            "per-op time channels cannot", err.highest) from None
    scored = scoring.score(criterion, model, g, ctx)
    scores = scored.scores
    if scored.tuned_model is not None:  # finetune_l1: the paper prunes the tuned model
        model = scored.tuned_model
        g = graph_mod.build_graph(model, ignore=ignore)

    def make(lvl):
        return plan_mod.make_plan(g, scores, lvl, target, allocation, round_to, min_channels,
                                  criterion, normalizer, seed, cost)
    plan = cost.fit(make, model, g, level, log) if (
        feedback and target == "latency" and cost is not None) else make(level)
    pruned = surgery.apply_plan(model, plan, graph=g)
    if head_entry is not None:
        plan["head"] = head_entry
    if depth_entry is not None:
        plan["depth"] = depth_entry
    report = None
    if reconstruct_images > 0 and splits is not None:
        from tfprune import data
        from tfprune.core import reconstruct
        import numpy as np
        n = len(splits.train)
        pick = np.sort(np.random.default_rng([seed, 23]).permutation(n)[:reconstruct_images])
        # the model before the depth cut, where it is the source's untrained original: the
        # layers after a removed branch are then refit to make up for it
        reference = whole if scored.tuned_model is None else model
        report = reconstruct.reconstruct(reference, pruned, plan,
                                         data.normalize_np(splits.train.x[pick]), log=log)
    done = 0
    if bn_batches > 0 and splits is not None:
        from tfprune import data
        done = reestimate_batchnorm(pruned, data.as_dataset(
            splits.train, batch_size, training=True, seed=seed), bn_batches)
    return PruneResult(pruned, plan, scores, g, model, scored, done, report)


def _branch_scores(model, block_criterion, crit, ctx, ignore) -> tuple[str, dict]:
    from tfprune.scoring import branches
    how = block_criterion if block_criterion != "auto" else (
        "kl" if crit.needs_data else "bn_gamma")
    return how, branches.score_branches(model, how, ctx.data, ctx.max_batches, ignore)


def _choose_depth(model, criterion, level, target, block_criterion, crit, ctx, same, log):
    """(depth entry, channel level) of `blocks="auto"` (see `prune_model`)."""
    from tfprune.core import depth, modelspec
    from tfprune.core import graph as graph_mod
    from tfprune.core.plan import PlanError, check_reachable
    from tfprune.scoring import branches
    if target != "latency" or same["terms"] is None:
        raise PlanError("blocks auto weighs branches against channels in predicted "
                        "milliseconds: it needs target latency (--target=latency)")
    data_free = ctx.data is None  # then the fewest branches that reach the level win
    how, scores = _branch_scores(model, block_criterion, crit, ctx, same["ignore"])
    order, cost = branches.ranked(scores), same["terms"](model)[1]
    full_ms, whole = cost.total({}), graph_mod.build_graph(model, ignore=same["ignore"])
    search, best = [], None
    for b in range(len(order) + 1):
        names = [n for n in scores if n in set(order[:b])]
        cut = depth.remove_branches(model, names, ignore=same["ignore"]) if b else model
        # the branches' saving timed side by side with the model where a runtime can time it
        ratio = cost.ratio_of(model, whole, cut, {"depth": names}) if b else 1.0
        cut_terms = same["terms"](cut) if ratio is None else None
        left_ms = full_ms * ratio if ratio is not None else cut_terms[1].total({})
        channel_level = depth.channel_level(level, full_ms, left_ms)
        if channel_level < 0:  # these branches alone cut more than the level
            break
        row = {"branches": b, "predicted_ms": round(left_ms, 5),
               "channel_level": round(channel_level, 4)}
        try:
            if data_free:  # the fewest-branches rule needs reachability only
                round_to, cut_cost = cut_terms or same["terms"](cut)
                check_reachable(graph_mod.build_graph(cut, ignore=same["ignore"]),
                                channel_level, target, same["allocation"], round_to,
                                same["min_channels"], cut_cost)
            else:
                pruned = prune_model(model, criterion, channel_level, target, feedback=False,
                                     blocks=names, **same).pruned
                row["kl"] = branches.divergence(model, pruned, ctx.data, ctx.max_batches)
        except PlanError as err:
            row["unreachable"] = str(err)
        search.append(row)
        if log:
            log(f"[prune] depth search: {b} branches ({left_ms:.3f} ms predicted) + "
                f"{channel_level:.0%} of the rest in channels: " + (
                    "unreachable" if "unreachable" in row else
                    f"KL {row['kl']:.4f}" if "kl" in row else "reachable"))
        if "unreachable" not in row and (best is None or data_free
                                         or row["kl"] < best["kl"]):
            best = row
            if data_free:
                break
    if best is None:
        raise PlanError(f"blocks auto: no mix of branches and channels reaches level {level}")
    names = branches.pick(scores, best["branches"])
    entry = dict(depth.depth_entry(modelspec.read_model(model), names, scores, how),
                 requested="auto", level=level, search=search)
    if log:
        log(f"[prune] removing {len(names)} of {len(scores)} residual branches by {how} "
            + ("(the fewest that reach the level: no data to compare candidates)" if data_free
               else "(closest candidate)") + (": " + ", ".join(names) if names else ""))
    return entry, best["channel_level"]


def _cut_depth(model, blocks, block_criterion, crit, ctx, ignore, log):
    """`model` without its `blocks` least important residual branches (or the branches
    `blocks` names), and the plan entry."""
    from tfprune.core import depth, modelspec
    from tfprune.scoring import branches
    if isinstance(blocks, list):
        entry = dict(depth.depth_entry(modelspec.read_model(model), blocks), requested=blocks)
        return depth.remove_branches(model, blocks, ignore=ignore), entry
    how, scores = _branch_scores(model, block_criterion, crit, ctx, ignore)
    names = branches.pick(scores, blocks)
    entry = dict(depth.depth_entry(modelspec.read_model(model), names, scores, how),
                 requested=blocks)
    if log:
        log(f"[prune] removing {len(names)} of {len(scores)} residual branches by {how}"
            + (f" ({blocks} asked: the model has no more)" if len(names) < blocks else "")
            + (": " + ", ".join(names) if names else ""))
    return depth.remove_branches(model, names, ignore=ignore), entry


def reestimate_batchnorm(model, dataset, batches: int) -> int:
    """Replace every BatchNorm's moving mean/variance by the average of its batch statistics
    over the first `batches` batches of `dataset` (forward passes in training mode; no weight
    other than the moving statistics changes). Returns the number of batches used."""
    from tfprune.training.fit import batchnorm_layers, batchnorm_momentum

    bns = batchnorm_layers(model)
    if not bns or batches < 1:
        return 0
    used = 0
    with batchnorm_momentum(model, None):  # restores every momentum after
        for x, _ in dataset.take(batches):
            used += 1
            for bn in bns:  # cumulative average: moving = mean of the batch statistics so far
                bn.momentum = 1.0 - 1.0 / used
            model(x, training=True)
    return used
