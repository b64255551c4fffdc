"""The main job: prune a trained model for a class subset's data, fine-tune it, export it to
LiteRT (float32, int8, on-device trainable), validate, package an Android bundle, simulate
on-device fine-tuning of the bundle, and report against the unpruned model.

python -m pipelines.run --output=runs/main
Defaults: the shipped pretrained ResNet-20, the bundled real `aquatic` sample, the classifier
cut to the subset's classes, 30% of the predicted LiteRT float32 single-thread latency removed
(channel counts in whole kernel tiles, round_to=auto), criterion `act_l2`, fine-tuned with
distillation from the original restricted to the subset (logits and feature maps), against an
`l1` baseline. Every stage writes into --output and is skipped when its outputs exist, so a
stopped run resumes; runs/main/report.md shows the result. --output records the run's
settings (run_config.json): a rerun with other settings, or a non-empty directory that holds
no run, is refused before any work (--restart moves it aside).
"""
import dataclasses

from absl import app, flags

from tfprune import console
from tfprune.core.depth import blocks_ok, parse_blocks
from tfprune.jobs.main_job import ChainConfig

_D = ChainConfig()
flags.DEFINE_string("model", _D.model, "A .keras file, pretrained:NAME or a zoo name.")
flags.DEFINE_string("data", _D.data, "sample, npz:PATH, tfds:NAME or folder:PATH.")
flags.DEFINE_string("subset", _D.subset, "Class subset: preset, superclasses or classes.")
flags.DEFINE_enum("head", _D.head, ["subset", "full"], "subset: cut the classifier to the "
                  "subset's classes (labels 0..k-1 in subset order); full: keep every class.")
flags.DEFINE_string("criterion", _D.criterion, "Filter importance criterion.")
flags.DEFINE_float("level", _D.level, "Fraction of --target to remove, in [0, 1).")
flags.DEFINE_enum("target", _D.target, ["params", "flops", "filters", "latency"],
                  "What --level counts (latency: predicted ms on --runtime).")
flags.DEFINE_string("round_to", _D.round_to, "Keep channel counts multiples of this integer, "
                    "or auto: the channel tile the latency model finds cheapest on --runtime.")
flags.DEFINE_integer("min_channels", _D.min_channels, "Channels every group keeps at "
                     "least.", lower_bound=1)
flags.DEFINE_string("blocks", str(_D.blocks), "Residual branches to remove whole before "
                    "channel pruning, their ops too (at most all the model has; --level then "
                    "counts from the model without them), or auto: with --target=latency, the "
                    "count whose pruned candidate stays closest to the model on the device's "
                    "images at the same predicted ms (--level then counts from the model "
                    "before both).")
flags.register_validator("blocks", blocks_ok, "--blocks must be a count of residual branches "
                         "(0 or more) or auto")
flags.DEFINE_enum("block_criterion", _D.block_criterion, ["auto", "kl", "bn_gamma"],
                  "Which branches --blocks removes: kl (data-aware: least change of the "
                  "softmax on the device's images), bn_gamma (data-agnostic), auto (kl for "
                  "a data-aware --criterion).")
flags.DEFINE_string("runtime", _D.runtime, "Latency model runtime: litert-float32-1t, "
                    "litert-float32-2t, litert-int8-1t or litert-int8-2t.")
flags.DEFINE_integer("calibration_batches", _D.calibration_batches, "Scoring batches.",
                     lower_bound=1)
flags.DEFINE_integer("bn_batches", _D.bn_batches, "Batches to re-estimate BatchNorm on.",
                     lower_bound=0)
flags.DEFINE_integer("reconstruct_images", _D.reconstruct_images, "Refit the pruned model's "
                     "Conv2D/Dense weights to reproduce the original's layer outputs on up to "
                     "this many training images (least squares, no labels; 0: off).",
                     lower_bound=0)
flags.DEFINE_integer("finetune_epochs", _D.finetune_epochs, "Keras fine-tuning epochs.",
                     lower_bound=0)
flags.DEFINE_float("finetune_lr", _D.finetune_lr, "Peak fine-tuning learning rate (cosine).",
                   lower_bound=0.0)
flags.DEFINE_float("finetune_ema", _D.finetune_ema, "Fine-tuned weights end as their moving "
                   "average with this momentum per step (0: the last weights).",
                   lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_integer("finetune_warmup", _D.finetune_warmup, "Epochs over which the fine-tuning "
                     "rate rises linearly to --finetune_lr before its cosine decay.",
                     lower_bound=0)
flags.DEFINE_float("weight_decay", _D.weight_decay, "Fine-tuning weight decay.", lower_bound=0.0)
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size for scoring and fine-tuning.",
                     lower_bound=1)
flags.DEFINE_float("distill_alpha", _D.distill_alpha, "Weight of distillation from the "
                   "original restricted to the subset (0: cross-entropy only).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("distill_temperature", _D.distill_temperature, "Distillation temperature.",
                   lower_bound=0.05, upper_bound=100.0)
flags.DEFINE_float("distill_features", _D.distill_features, "Weight of distillation on the "
                   "residual streams' feature maps at the kept channels (0: logits only). It pays on "
                   "a phone's tens of images a class; with hundreds a class it mostly does not "
                   "(README).",
                   lower_bound=0.0, upper_bound=1000.0)
flags.DEFINE_enum("distill_mix", _D.distill_mix, ["none", "mixup", "cutmix"],
                  "Add label-free mixed views of every batch (distillation only).")
flags.DEFINE_string("transfer_data", _D.transfer_data, "Extra label-free images for "
                    "distillation (host-side), e.g. npz:PATH: its train pool less the run's own "
                    "train/val/test images; empty: the device's data only.")
flags.DEFINE_integer("transfer_images", _D.transfer_images, "Images drawn from "
                     "--transfer_data (0: all).", lower_bound=0)
flags.DEFINE_string("baseline_criterion", _D.baseline_criterion, "Data-agnostic baseline "
                    "pruned to the same level with the same fine-tuning (empty: none).")
flags.DEFINE_integer("calibration_samples", _D.calibration_samples, "int8 calibration images.",
                     lower_bound=1)
flags.DEFINE_integer("latency_runs", _D.latency_runs, "Timed single-image runs per model.",
                     lower_bound=0)
flags.DEFINE_integer("device_batch_size", _D.device_batch_size,
                     "Batch size of the on-device training model (fixed at export).",
                     lower_bound=1)
flags.DEFINE_enum("bundle_model", _D.bundle_model, ["float32", "int8"],
                  "Inference model of the Android bundle.")
flags.DEFINE_integer("device_epochs", _D.device_epochs,
                     "Epochs of simulated on-device fine-tuning of the bundle (0: none).",
                     lower_bound=0)
flags.DEFINE_float("device_lr", _D.device_lr, "On-device fine-tuning learning rate.",
                   lower_bound=0.0)
flags.DEFINE_bool("allow_failed_validation", _D.allow_failed_validation,
                  "Bundle the models even when a validation gate failed (recorded).")
flags.DEFINE_integer("seed", _D.seed, "Seed.")
flags.DEFINE_string("output", "runs/main", "Run directory (resumed if it holds a run made "
                    "with the same settings).")
flags.DEFINE_bool("restart", False, "Start afresh: a non-empty --output (another run's, or "
                  "not a run) is moved aside to OUTPUT.old-N first, untouched.")
flags.register_validator("level", lambda v: 0 <= v < 1, "--level must be in [0, 1)")
FLAGS = flags.FLAGS
# settings that may change between runs into one directory without changing any result
RESUMABLE_CHANGES = ("allow_failed_validation",)


def resume_hint() -> str:
    return f"rerun the same command to resume {FLAGS.output} at its first unfinished stage"


@console.app_main("run", resume_hint)
def main(argv):
    del argv
    import sys

    import android_export
    from tfprune.jobs import main_job as chain
    from tfprune.jobs import run_dir

    from tfprune import latency
    cfg = ChainConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(ChainConfig)})
    cfg.round_to = latency.parse_round_to(cfg.round_to)
    cfg.blocks = parse_blocks(cfg.blocks)
    latency.parse_runtime(cfg.runtime)
    run_dir.prepare(FLAGS.output, dataclasses.asdict(cfg),
                    defaults=dataclasses.asdict(ChainConfig()), restart=FLAGS.restart,
                    inputs={"model": cfg.model}, ignore=RESUMABLE_CHANGES, log=print)
    summary = chain.run_chain(cfg, FLAGS.output, bundler=android_export.write_bundle)
    if summary.get("verdict"):
        print(f"run: {summary['verdict']}")
    print(f"run: report in {FLAGS.output}/report.md; validation "
          f"{'passed' if summary['validation_passed'] else 'FAILED'}")
    if not summary["validation_passed"]:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
