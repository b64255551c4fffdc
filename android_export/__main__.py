"""python -m android_export --model=PATH_OR_SPEC --output=DIR [--kind=float32|int8] ...

Writes an app-ready bundle (see the package docstring and android/README.md); exits non-zero
with one line naming the problem for a bad flag, model, data or output directory, or a model
that failed validation (unless --allow_failed_validation).
"""
import sys

from tfprune.console import prepare_environment

prepare_environment()  # before anything loads TensorFlow

from absl import app, flags  # noqa: E402

from tfprune import console  # noqa: E402

flags.DEFINE_string("model", None, "A .keras file, pretrained:NAME or a zoo model name.")
flags.DEFINE_string("output", None, "Bundle directory (an old bundle there is replaced; a "
                    "directory holding anything else is refused).")
flags.DEFINE_enum("kind", "float32", ["float32", "int8"], "Inference model: float32 (Android "
                  "CPU/GPU) or full int8 (Android CPU, Edge TPU).")
flags.DEFINE_string("data", "sample", "Data for calibration and parity: sample, npz:PATH, "
                    "tfds:NAME or folder:PATH.")
flags.DEFINE_string("subset", "aquatic", "Class subset the model was adapted to.")
flags.DEFINE_enum("head", "subset", ["subset", "full"], "subset: the bundle classifies the "
                  "subset's classes only (a model over every class is cut to them); full: "
                  "every class of the data.")
flags.DEFINE_integer("seed", 0, "Seed of the subset split and the calibration draw.")
flags.DEFINE_integer("batch_size", 32, "On-device training batch size (fixed in the model).",
                     lower_bound=1)
flags.DEFINE_string("trainable", "all", "Layers that train on the device: all, head, last:N.")
flags.DEFINE_integer("calibration_samples", 400, "int8: representative training images.",
                     lower_bound=1)
flags.DEFINE_integer("latency_runs", 20, "Timed single-image runs per model in validation.",
                     lower_bound=0)
flags.DEFINE_bool("allow_failed_validation", False, "Bundle a model that failed a validation "
                  "gate anyway (recorded as failed in manifest.json).")
flags.mark_flags_as_required(["model", "output"])
FLAGS = flags.FLAGS


@console.app_main("android_export")
def main(argv):
    del argv
    from android_export import export_bundle

    try:
        manifest = export_bundle(
            FLAGS.model, FLAGS.output, kind=FLAGS.kind, data=FLAGS.data, subset=FLAGS.subset,
            seed=FLAGS.seed, batch_size=FLAGS.batch_size, trainable=FLAGS.trainable,
            calibration_samples=FLAGS.calibration_samples, latency_runs=FLAGS.latency_runs,
            allow_failed_validation=FLAGS.allow_failed_validation, head=FLAGS.head)
    except OSError as err:
        sys.exit(f"android_export: {err}")
    val = manifest["validation"]
    print(f"android_export: wrote {FLAGS.output} ({len(manifest['files'])} files); validation "
          + ("passed" if val["passed"] else "FAILED (allowed): " + "; ".join(val["failed_gates"])))


if __name__ == "__main__":
    app.run(main)
