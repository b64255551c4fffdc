"""The validation gate: check converted models for Android CPU/GPU and the Coral Edge TPU.

python -m pipelines.validate --tflite=A.tflite[,B.tflite] [--keras=PATH --data=sample \
    --subset=aquatic] --targets=android-cpu,android-gpu,edgetpu --output=DIR
writes DIR/validation.json and DIR/validation.md and exits 1 naming every failed gate (a bad
flag or input is a one-line error, also non-zero). With --keras, parity runs on the subset's
held-out test images.
"""
import os
import sys

from absl import app, flags

from tfprune import console
from tfprune.litert.validate.parity import MIN_AGREEMENT

flags.DEFINE_list("tflite", None, "Comma-separated .tflite files to validate.")
flags.DEFINE_string("keras", None, "The Keras source model (.keras, pretrained:NAME, zoo name) "
                    "for parity; omit to skip parity.")
flags.DEFINE_string("data", "sample", "Data source for parity images.")
flags.DEFINE_string("subset", "all", "Class subset whose held-out test images are used.")
flags.DEFINE_integer("seed", 0, "Seed of the subset split.")
flags.DEFINE_integer("max_images", 0, "Use at most this many test images (0 = all).",
                     lower_bound=0)
flags.DEFINE_string("targets", "android-cpu,android-gpu,edgetpu", "Targets to check: android-cpu, "
                    "android-gpu (a run on LiteRT's GPU accelerator), android-gpu-legacy (the old "
                    "GPU delegate's rules), edgetpu.")
flags.DEFINE_string("output", None, "Directory for validation.json and validation.md.")
flags.DEFINE_float("min_agreement", MIN_AGREEMENT, "Float models: minimum top-1 agreement "
                   "with Keras.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("max_accuracy_drop_pp", 1.0, "Quantised models: maximum accuracy drop in "
                   "percentage points.", lower_bound=0.0)
flags.DEFINE_integer("latency_runs", 50, "Timed single-image invokes per thread count (0 = skip).",
                     lower_bound=0)
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for latency (each >= 1).")
flags.register_validator("threads", lambda v: all(t.isdigit() and int(t) >= 1 for t in v),
                         "--threads must be positive integers")
flags.DEFINE_float("max_latency_ms", None, "Optional latency gate on the median.",
                   lower_bound=0.0)
flags.DEFINE_string("edgetpu_compiler", None, "Path of an edgetpu_compiler binary to run too.")
flags.DEFINE_bool("allow_flex", False, "Accept Flex ops on android-cpu (select-tf-ops runtime).")
flags.mark_flags_as_required(["tflite", "output"])
FLAGS = flags.FLAGS


@console.app_main("validate")
def main(argv):
    del argv
    from tfprune import data
    from tfprune.litert import validate
    from tfprune.models.loader import load_model
    from tfprune.litert.validate import report

    try:
        targets = validate.parse_targets(FLAGS.targets)
        threads = tuple(int(t) for t in FLAGS.threads)
    except ValueError as err:
        sys.exit(f"validate: bad --targets/--threads: {err}")
    if FLAGS.edgetpu_compiler and not os.access(FLAGS.edgetpu_compiler, os.X_OK):
        sys.exit(f"validate: --edgetpu_compiler {FLAGS.edgetpu_compiler} is not an executable")
    try:  # before the (slow) checks: a bad --output fails first
        os.makedirs(FLAGS.output, exist_ok=True)
    except OSError as err:
        sys.exit(f"validate: --output {FLAGS.output}: {err}")
    keras_model = images = None
    if FLAGS.keras:
        keras_model = load_model(FLAGS.keras)
        images = data.load_subset(FLAGS.data, FLAGS.subset, FLAGS.seed).test
        if FLAGS.max_images:
            images = images.take(slice(0, FLAGS.max_images))
    result = validate.validate(
        FLAGS.tflite, targets, keras_source=FLAGS.keras,
        data={"data": FLAGS.data, "subset": FLAGS.subset, "split": "test", "seed": FLAGS.seed,
              "images": None if images is None else len(images)} if FLAGS.keras else None,
        keras_model=keras_model, images=images, min_agreement=FLAGS.min_agreement,
        max_accuracy_drop_pp=FLAGS.max_accuracy_drop_pp, latency_runs=FLAGS.latency_runs,
        threads=threads, edgetpu_compiler=FLAGS.edgetpu_compiler, allow_flex=FLAGS.allow_flex,
        max_latency_ms=FLAGS.max_latency_ms)
    js, md = report.write(result, FLAGS.output)
    print(f"validate: wrote {js} and {md}")
    for line in result.get("not_run", []):  # e.g. android-gpu without a Vulkan device
        print(f"validate: NOT RUN (not a pass): {line}", file=sys.stderr)
    if not result["passed"]:
        print("validate: FAILED gate(s):\n  " + "\n  ".join(result["failed_gates"]),
              file=sys.stderr)
        return 1
    print(f"validate: all gates {'that ran ' if result.get('not_run') else ''}passed for "
          f"{len(result['files'])} model(s)")
    return 0


if __name__ == "__main__":
    app.run(main)
