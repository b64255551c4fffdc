"""Prune a Keras model: score filters, plan to a target level, remove them physically.

python -m pipelines.prune --model=pretrained:resnet20 --criterion=l1 --level=0.5 \
    --target=params --allocation=global --output=runs/prune_r20
`--target=latency` removes `--level` of the predicted LiteRT latency on `--runtime`
(tfprune.latency; tables measured once and cached); `--round_to=auto` (default) keeps channel
counts in the runtime's kernel tiles. A level no plan reaches exits 1 naming the highest one.
Writes OUTPUT/pruned.keras, plan.json, metrics.json, scores.json (data-aware criteria:
stats.json, the channel statistics behind them), report.md and layers.png.
`--plan=plan.json` applies an existing plan instead of scoring and planning. `--head=subset`
cuts the classifier to `--subset`'s classes first (accuracies are then over those classes,
against the original's restricted logits). A model with nested models
(`head(base(inputs))`) is flattened into one functional model first (`tfprune.core.flatten`):
plan, pruned model and report are of the flat model, and the report says so. Data-aware
criteria take `--data`/`--subset`/`--calibration_batches`; `--finetune_epochs` > 0 fine-tunes
the pruned model on the subset's training split. Never writes over `--model`; a non-empty
`--output` needs `--overwrite`. Every failure is one line naming its cause, exit status 1.
"""
import json
import os
import sys

from absl import app, flags

from tfprune import console, fileio
from tfprune.core.depth import blocks_ok
from tfprune.errors import TfpruneError

flags.DEFINE_string("model", None, "A .keras file, pretrained:NAME or a zoo name.")
flags.DEFINE_string("criterion", "l1", "Filter importance criterion (tfprune.scoring.registry).")
flags.DEFINE_float("level", 0.5, "Fraction in [0, 1) of the target measure to remove.")
flags.register_validator("level", lambda v: 0 <= v < 1, "--level must be in [0, 1)")
flags.DEFINE_enum("target", "params", ["params", "flops", "filters", "latency"],
                  "What the level counts (filters: only those in prunable groups; latency: "
                  "predicted ms on --runtime).")
flags.DEFINE_enum("allocation", "global", ["global", "uniform"], "One global ranking, or the "
                  "same fraction from every group.")
flags.DEFINE_enum("normalizer", "mean", ["mean", "max", "none"], "Per-layer score normalisation.")
flags.DEFINE_string("round_to", "auto", "Keep channel counts multiples of this integer, or "
                    "auto: the channel tile the latency model finds cheapest on --runtime.")
flags.DEFINE_string("runtime", None, "Latency model runtime for --target=latency, "
                    "--round_to=auto and the predicted latency in the plan: litert-float32-1t "
                    "(default), litert-float32-2t, litert-int8-1t or litert-int8-2t.")
flags.DEFINE_string("latency_cache", None, "Latency table cache (JSON); default "
                    "$TFPRUNE_LATENCY_CACHE or ~/.cache/tfprune/latency.json.")
flags.DEFINE_integer("min_channels", 2, "Channels every group keeps at least.", lower_bound=1)
flags.DEFINE_string("blocks", "0", "Residual branches to remove whole first, their ops "
                    "too (at most all the model has; tfprune.core.depth; --level then counts "
                    "from the model without them), or auto: with --target=latency and --data, "
                    "the count whose pruned candidate stays closest to the model at the same "
                    "predicted ms (--level then counts from the model before both).")
flags.register_validator("blocks", blocks_ok, "--blocks must be a count of residual branches "
                         "(0 or more) or auto")
flags.DEFINE_enum("block_criterion", "auto", ["auto", "kl", "bn_gamma"], "Which branches "
                  "--blocks removes: kl (data-aware), bn_gamma, or auto (kl for a data-aware "
                  "--criterion).")
flags.DEFINE_list("ignore", [], "Layers whose output channels are never pruned.")
flags.DEFINE_integer("seed", 0, "Seed (random criterion, data order, fine-tuning).")
flags.DEFINE_string("plan", None, "Apply this plan.json instead of scoring and planning.")
flags.DEFINE_string("data", None, "Data for data-aware criteria / fine-tuning: sample, npz:PATH, "
                    "tfds:NAME or folder:PATH.")
flags.DEFINE_string("subset", "aquatic", "Class subset of --data (a preset or class list).")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_enum("head", "full", ["full", "subset"], "subset: cut the classifier to "
                  "--subset's classes first (needs --data; labels 0..k-1 in subset order, "
                  "recorded in plan.json); full: keep every class.")
flags.DEFINE_integer("calibration_batches", 10, "Batches a data-aware criterion sees.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size for scoring and fine-tuning.", lower_bound=1)
flags.DEFINE_integer("bn_batches", 0, "Re-estimate BatchNorm statistics on this many "
                     "augmented training batches after pruning (needs --data).", lower_bound=0)
flags.DEFINE_integer("reconstruct_images", 0, "Refit the pruned model's Conv2D/Dense "
                     "weights to reproduce the original's layer outputs on up to this many "
                     "training images (least squares, no labels; needs --data; 0: off, the "
                     "pruned model then equals the original with dropped weights zeroed).",
                     lower_bound=0)
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tune epochs after pruning (0 = prune only).",
                     lower_bound=0)
flags.DEFINE_float("finetune_lr", 0.01, "Peak fine-tuning learning rate (SGD, momentum 0.9, "
                   "cosine decay, weight decay 5e-4).", lower_bound=0.0)
flags.DEFINE_string("output", None, "Output directory.")
flags.DEFINE_bool("overwrite", False, "Allow a non-empty --output.")
flags.mark_flags_as_required(["model", "output"])
FLAGS = flags.FLAGS
OUTPUTS = ("pruned.keras", "plan.json", "metrics.json", "scores.json", "stats.json", "report.md",
           "layers.png")


class PruneError(TfpruneError):
    """A refusal of the pruning app; the message names the flag or file."""


def check_output(output: str, model: str, overwrite: bool) -> None:
    if os.path.exists(output) and not os.path.isdir(output):
        raise PruneError(f"--output {output} exists and is not a directory")
    targets = {os.path.realpath(os.path.join(output, name)) for name in OUTPUTS}
    if os.path.realpath(model) in targets or os.path.realpath(model) == os.path.realpath(output):
        raise PruneError(f"--output {output} would write over --model {model}")
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise PruneError(f"--output {output} is not empty (pass --overwrite to replace its files)")


def load_splits():
    from tfprune import data
    if not FLAGS.data:
        return None
    return data.load_subset(FLAGS.data, FLAGS.subset, FLAGS.seed, FLAGS.data_dir)


def report(plan: dict, comparison: dict, extra: dict) -> str:
    from tfprune.core import counts as metrics
    achieved = plan["achieved"]
    lines = [f"# Pruning report: {plan['model']['name']}", "",
             f"- criterion: `{plan['criterion']}`, target `{plan['target']}`, allocation "
             f"`{plan['allocation']}`, round_to {plan['round_to']}, min_channels "
             f"{plan['min_channels']}",
             f"- level: target {plan['level']:.3f}, achieved {achieved['level']:.3f} "
             f"(params {achieved['params_level']:.3f}, MACs {achieved['flops_level']:.3f}, "
             f"filters {achieved['filters_level']:.3f})"]
    if plan["target"] == "filters":
        d = plan["denominator"]
        lines.append(f"- filters counted: {d['filters']:,} of {d['filters_all']:,} (left out: "
                     f"{', '.join(d['filters_left_out']) or 'none'}: blocked or ignored)")
    if plan.get("predicted_latency_ms"):
        p, rt = plan["predicted_latency_ms"], plan["runtime"]
        lines.append(f"- predicted latency on {rt['runtime']} (LiteRT {rt['litert']}): "
                     f"{p['unpruned']:.3f} -> {p['pruned']:.3f} ms "
                     f"({achieved['latency_level']:.1%} removed); channel tile {rt['tile']}")
    depth = plan.get("depth")
    if depth:
        asked = (f"; blocks auto for {depth['level']:.3f} of the whole model's predicted "
                 f"latency, {depth['search'][0]['predicted_ms']:.3f} ms"
                 if depth.get("requested") == "auto" else "")
        lines.append(f"- depth: {len(depth['removed'])} of {len(depth['removable'])} residual "
                     f"branches removed first ({', '.join(depth['removed']) or 'none'}; "
                     f"{depth.get('criterion', 'named')}{asked}); the level and latency above "
                     "count from the model without them")
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in extra.items()]
    lines += [f"- note: {n}" for n in plan.get("notes", [])]
    lines += ["", "## Totals", "", metrics.summary_table(comparison), "", "## Blocked groups", ""]
    for b in plan["blocked"]:
        why = "; ".join(f"{x['layer']}: {x['reason']}" for x in b["blocked_by"])
        lines.append(f"- {', '.join(b['members'])} ({b['channels']} channels): {why}")
    lines += ["", "## Per layer", "", "![parameters per layer](layers.png)", "",
              metrics.markdown_table(comparison), ""]
    return "\n".join(lines)


def run() -> dict:
    from tfprune import scoring
    from tfprune.scoring import data_criteria as datascore
    from tfprune.core import flatten, graph
    from tfprune.core import counts as metrics
    from tfprune.models import loader as modelio
    from tfprune import pruner as pruning
    from tfprune.core import surgery
    from tfprune.training import fit as train
    from tfprune.core import plan as plan_mod

    from tfprune import latency
    from tfprune.latency.cache import LatencyCache

    check_output(FLAGS.output, FLAGS.model, FLAGS.overwrite)
    plan_mod.check_level(FLAGS.level)
    try:
        latency.parse_round_to(FLAGS.round_to)
    except latency.LatencyError as err:
        raise PruneError(f"--round_to: {err}") from None
    if FLAGS.runtime is not None:
        latency.parse_runtime(FLAGS.runtime)
    if FLAGS.finetune_epochs > 0 and not FLAGS.data:
        raise PruneError("--finetune_epochs needs --data (and --subset)")
    if FLAGS.head == "subset" and not FLAGS.data and not FLAGS.plan:
        raise PruneError("--head=subset needs --data (and --subset): the classes to keep")
    model, flat = flatten.flatten(modelio.load_model(FLAGS.model))
    plan = plan_mod.load_plan(FLAGS.plan) if FLAGS.plan else None
    ignore = plan.get("ignore", []) if plan else FLAGS.ignore
    g = graph.build_graph(model, ignore=ignore)
    crit = None if FLAGS.plan else scoring.get(FLAGS.criterion)
    if crit is not None and crit.needs_data and not FLAGS.data:
        raise PruneError(f"--criterion={FLAGS.criterion} is data-aware: it needs --data "
                         "(e.g. --data=sample --subset=aquatic)")
    splits = load_splits()
    scores, scored, original, scored_graph = {}, None, model, g
    head_classes, class_names = None, None
    if splits is not None and (FLAGS.head == "subset" or (plan and plan.get("head"))):
        from tfprune import data
        from tfprune.core import head
        head_classes, class_names = splits.classes, splits.class_names
        # accuracy_before is then the bar: the original's logits restricted to the subset
        original = head.slice_head(model, head_classes, class_names=class_names)
        splits = data.relabel(splits)
    if plan is None:
        cache = LatencyCache(FLAGS.latency_cache)

        def terms(m):
            return latency.plan_terms(m, FLAGS.target, FLAGS.round_to, FLAGS.runtime,
                                      FLAGS.ignore, cache)
        result = pruning.prune_model(
            model, FLAGS.criterion, FLAGS.level, FLAGS.target, FLAGS.allocation,
            FLAGS.min_channels, None, FLAGS.ignore, FLAGS.seed, splits,
            FLAGS.calibration_batches, FLAGS.batch_size, FLAGS.normalizer, FLAGS.bn_batches,
            head_classes=head_classes, class_names=class_names, terms=terms,
            reconstruct_images=FLAGS.reconstruct_images, log=print, blocks=FLAGS.blocks,
            block_criterion=FLAGS.block_criterion)
        plan, pruned, scored_graph = result.plan, result.pruned, result.graph
        scores, scored = result.scores, result.scored
        if not plan.get("depth"):  # the report compares with the model the plan was made on
            model, g = result.source, result.graph
    else:
        pruned = surgery.apply_plan(model, plan, graph=g)
    extra = {"flattened": flat.describe()} if flat else {}
    if splits is not None:
        extra["accuracy_before"] = round(train.accuracy(original, splits.test), 4)
        extra["accuracy_pruned"] = round(train.accuracy(pruned, splits.test), 4)
    if FLAGS.finetune_epochs > 0:
        train.finetune(pruned, splits.train, FLAGS.finetune_epochs, FLAGS.finetune_lr,
                       batch_size=FLAGS.batch_size, seed=FLAGS.seed)
        extra["accuracy_finetuned"] = round(train.accuracy(pruned, splits.test), 4)
    comparison = metrics.compare(g.counts(per_layer=True), metrics.model_metrics(pruned))
    os.makedirs(FLAGS.output, exist_ok=True)
    train.atomic_save(pruned, os.path.join(FLAGS.output, "pruned.keras"), optimizer=False)
    plan_mod.save_plan(plan, os.path.join(FLAGS.output, "plan.json"))
    write = lambda name, text: fileio.atomic_write_text(os.path.join(FLAGS.output, name), text)
    if scores:  # with the sums behind data-aware scores (tfprune.scoring.data_criteria.load_scores reads it)
        channel_stats = scored.channel_stats if scored is not None else None
        datascore.save_scores(os.path.join(FLAGS.output, "scores.json"), FLAGS.criterion, scores,
                              channel_stats, scored_graph)
        if channel_stats is not None:
            channel_stats.save(os.path.join(FLAGS.output, "stats.json"))
    result = {"plan_achieved": plan["achieved"], **extra, **comparison,
              "branches_removed": plan.get("depth", {}).get("removed", [])}
    write("metrics.json", json.dumps(result, indent=1))
    metrics.plot_layers(comparison, os.path.join(FLAGS.output, "layers.png"))
    write("report.md", report(plan, comparison, extra))
    return result


@console.app_main("prune")
def main(argv):
    del argv
    try:
        result = run()
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"prune: {err}")
    a, gone = result["plan_achieved"], result["branches_removed"]
    after = f" after {len(gone)} residual branches removed" if gone else ""
    print(f"prune: {FLAGS.model} -> {FLAGS.output}/pruned.keras: params {result['before']['params']:,}"
          f" -> {result['after']['params']:,} (level {a['level']:.3f} of {FLAGS.target}{after})")


if __name__ == "__main__":
    app.run(main)
