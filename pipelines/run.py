"""The main job: prune a trained model for a class subset's data, fine-tune it, export it to
LiteRT (float32, int8, on-device trainable), validate, package an Android bundle, simulate
on-device fine-tuning of the bundle, and report against the unpruned model.

python -m pipelines.run --output=runs/main
Defaults: the shipped pretrained ResNet-20, the bundled real `aquatic` sample, 50% of the
predicted LiteRT float32 single-thread latency removed (channel counts in whole kernel tiles,
round_to=auto), criterion `act_l2`. Every stage writes into --output and is skipped when
its outputs exist, so a stopped run resumes; runs/main/report.md shows the result.
"""
import sys

from absl import app, flags

from tfprune.jobs.main_job import ChainConfig

_D = ChainConfig()
flags.DEFINE_string("model", _D.model, "A .keras file, pretrained:NAME or a zoo name.")
flags.DEFINE_string("data", _D.data, "sample, npz:PATH, tfds:NAME or folder:PATH.")
flags.DEFINE_string("subset", _D.subset, "Class subset: preset, superclasses or classes.")
flags.DEFINE_string("criterion", _D.criterion, "Filter importance criterion.")
flags.DEFINE_float("level", _D.level, "Fraction of --target to remove, in [0, 1).")
flags.DEFINE_enum("target", _D.target, ["params", "flops", "filters", "latency"],
                  "What --level counts (latency: predicted ms on --runtime).")
flags.DEFINE_string("round_to", _D.round_to, "Keep channel counts multiples of this integer, "
                    "or auto: the channel tile the latency model finds cheapest on --runtime.")
flags.DEFINE_string("runtime", _D.runtime, "Latency model runtime: litert-float32-1t, "
                    "litert-float32-2t, litert-int8-1t or litert-int8-2t.")
flags.DEFINE_integer("calibration_batches", _D.calibration_batches, "Scoring batches.")
flags.DEFINE_integer("bn_batches", _D.bn_batches, "Batches to re-estimate BatchNorm on.")
flags.DEFINE_integer("finetune_epochs", _D.finetune_epochs, "Keras fine-tuning epochs.")
flags.DEFINE_float("finetune_lr", _D.finetune_lr, "Peak fine-tuning learning rate (cosine).")
flags.DEFINE_float("weight_decay", _D.weight_decay, "Fine-tuning weight decay.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size for scoring and fine-tuning.")
flags.DEFINE_integer("calibration_samples", _D.calibration_samples, "int8 calibration images.")
flags.DEFINE_integer("latency_runs", _D.latency_runs, "Timed single-image runs per model.")
flags.DEFINE_integer("device_batch_size", _D.device_batch_size,
                     "Batch size of the on-device training model (fixed at export).")
flags.DEFINE_enum("bundle_model", _D.bundle_model, ["float32", "int8"],
                  "Inference model of the Android bundle.")
flags.DEFINE_integer("device_epochs", _D.device_epochs,
                     "Epochs of simulated on-device fine-tuning of the bundle (0: none).")
flags.DEFINE_float("device_lr", _D.device_lr, "On-device fine-tuning learning rate.")
flags.DEFINE_bool("allow_failed_validation", _D.allow_failed_validation,
                  "Bundle the models even when a validation gate failed (recorded).")
flags.DEFINE_integer("seed", _D.seed, "Seed.")
flags.DEFINE_string("output", "runs/main", "Run directory (resumed if it exists).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import dataclasses

    import android_export
    from tfprune import data, litert, scoring
    from tfprune.jobs import main_job as chain
    from tfprune.litert import convert
    from tfprune.core import graph
    from tfprune.models import loader as modelio
    from tfprune.core import modelspec
    from tfprune.core import plan
    from tfprune.ondevice import forward, runtime

    from tfprune import latency
    cfg = ChainConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(ChainConfig)})
    try:
        cfg.round_to = latency.parse_round_to(cfg.round_to)
        latency.parse_runtime(cfg.runtime)
    except latency.LatencyError as err:
        sys.exit(f"run: {err}")
    known = (data.DataError, modelio.ModelSpecError, modelspec.ModelReadError, graph.GraphError,
             plan.PlanError, scoring.ScoringError, convert.ConvertError, litert.TFLiteFileError,
             forward.UnsupportedModelError, runtime.RuntimeInputError, android_export.BundleError,
             latency.LatencyError)
    try:
        summary = chain.run_chain(cfg, FLAGS.output, bundler=android_export.write_bundle)
    except known as err:
        sys.exit(f"run: {err}")
    print(f"run: report in {FLAGS.output}/report.md; validation "
          f"{'passed' if summary['validation_passed'] else 'FAILED'}")
    if not summary["validation_passed"]:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
