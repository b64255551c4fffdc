"""Simulated device: fine-tune a trainable .tflite in ai_edge_litert on local images.

python -m pipelines.ondevice_finetune --trainable=DIR/trainable.tflite --data=sample \
    --subset=aquatic --epochs=3 --schedule=0:0.002 --output=OUT [--stats] [--compare_keras=MODEL]

Export the model first with `python -m pipelines.convert --mode=trainable`. The training loop
runs the `train` signature only (NumPy batches, LiteRT interpreter): per-epoch progress and
checkpoints in OUT/checkpoints (a rerun resumes), a simulated app restart (new interpreter +
`restore`, checked bit-identical), test accuracy with `infer`, and with --stats the
`filter_stats` sums over the local training images (OUT/stats.json, tfprune.scoring.stats format) and
their per-channel scores (OUT/device_scores.json). --compare_keras=MODEL runs the same
schedule on the same batches with Keras (the exported model's source) for comparison.
Writes OUT/report.json and OUT/report.md.
"""
import json
import os
import sys

from absl import app, flags

from tfprune import console

flags.DEFINE_string("trainable", None, "The trainable .tflite (its trainable.json beside it).")
flags.DEFINE_string("data", "sample", "Local images: sample, npz:PATH, tfds:NAME, folder:PATH.")
flags.DEFINE_string("subset", "aquatic", "Class subset of --data.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_integer("seed", 0, "Seed of the split, batch order and augmentation.")
flags.DEFINE_integer("epochs", 3, "Epochs of on-device training.", lower_bound=0)
flags.DEFINE_string("schedule", "0:0.002", "Learning rate by epoch: EPOCH:LR,... (-1 = x0.1). "
                    "The default is the stable rate measured for a pruned pretrained ResNet-20 "
                    "(benchmarks/results/ondevice_vs_keras_pretrained.md): with frozen "
                    "BatchNorm, 0.01 diverged chaotically in LiteRT and in Keras alike.")
flags.DEFINE_bool("augment", True, "Random crop + flip on the training images.")
flags.DEFINE_integer("restart_after", -1, "Simulate an app restart after this epoch "
                     "(-1: half-way; 0: never).", lower_bound=-1)
flags.DEFINE_bool("stats", True, "Run filter_stats over the training images and score them.")
flags.DEFINE_enum("criterion", "act_l2", ["act_l1", "act_l2", "apoz"], "Score for --stats.")
flags.DEFINE_string("compare_keras", None, "A .keras / pretrained: / zoo model: run the same "
                    "schedule with Keras on the same batches and report the difference.")
flags.DEFINE_integer("num_threads", 2, "LiteRT interpreter threads.", lower_bound=1)
flags.DEFINE_string("output", None, "Output directory.")
flags.mark_flags_as_required(["trainable", "output"])
FLAGS = flags.FLAGS


def _markdown(report: dict) -> str:
    dev = report["device"]
    lines = [f"# On-device fine-tuning: {report['model']} on {report['subset']}", "",
             f"Trainable model `{report['trainable']}` ({report['size_bytes'] / 1e6:.2f} MB, "
             f"batch {report['batch_size']}, trains {report['trainable_layers']}), "
             f"{report['train_images']} training / {report['test_images']} test images, "
             f"schedule `{report['schedule']}`.", "",
             f"Test accuracy: {dev['initial_test_accuracy']:.4f} before, "
             f"**{dev['final_test_accuracy']:.4f}** after.", "",
             "| epoch | lr | loss | train acc | test acc | img/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['lr']:g} | {r['loss']:.4f} | {r['train_accuracy']:.4f} | "
              f"{r['test_accuracy']:.4f} | {r['images_per_second']:.1f} |" for r in dev["history"]]
    if dev.get("restart"):
        r = dev["restart"]
        lines += ["", f"App restart after epoch {r['after_epoch']}: new interpreter, restored "
                  f"step {r['restored_step']}, state bit-identical: {r['bit_identical']}."]
    if "keras" in report:
        k = report["keras"]
        lines += ["", f"Keras, same schedule and batches: test accuracy {k['final_test_accuracy']:.4f}; "
                  f"device - Keras = {100 * report['device_minus_keras']:+.2f} pp."]
    if "stats" in report:
        lines += ["", f"filter_stats over {report['stats']['images']} images -> "
                  f"`stats.json`, {report['stats']['criterion']} scores -> `device_scores.json` "
                  f"({report['stats']['layers']} measured layers)."]
    return "\n".join(lines) + "\n"


def run() -> dict:
    """Fine-tune, measure and write OUT's files; returns the report."""
    from tfprune import data
    from tfprune.models.loader import load_model
    from tfprune.ondevice import finetune
    from tfprune.ondevice.runtime import TrainableRuntime
    from tfprune.fileio import atomic_write_text

    splits = data.load_subset(FLAGS.data, FLAGS.subset, FLAGS.seed, FLAGS.data_dir)
    open_rt = lambda: TrainableRuntime(FLAGS.trainable, num_threads=FLAGS.num_threads)
    rt = open_rt()
    finetune.parse_schedule(FLAGS.schedule)
    keras_model = load_model(FLAGS.compare_keras) if FLAGS.compare_keras else None
    os.makedirs(FLAGS.output, exist_ok=True)
    manifest = rt.manifest
    restart = FLAGS.epochs // 2 if FLAGS.restart_after == -1 else FLAGS.restart_after
    dev = finetune.device_finetune(open_rt, splits.train, splits.test, FLAGS.epochs,
                                   FLAGS.schedule, os.path.join(FLAGS.output, "checkpoints"),
                                   FLAGS.seed, FLAGS.augment, restart or None)
    rt = dev.pop("runtime")
    report = {"model": manifest["model"], "trainable": FLAGS.trainable, "subset": FLAGS.subset,
              "data": FLAGS.data, "batch_size": manifest["batch_size"],
              "trainable_layers": manifest["trainable"], "size_bytes": manifest["size_bytes"],
              "train_images": len(splits.train), "test_images": len(splits.test),
              "schedule": FLAGS.schedule, "epochs": FLAGS.epochs, "device": dev}
    if FLAGS.stats:
        channel_stats = rt.channel_stats(data.normalize_np(splits.train.x),
                                         meta={"model": manifest["model"], "source": "filter_stats"})
        channel_stats.save(os.path.join(FLAGS.output, "stats.json"))
        scores = {k: v.tolist() for k, v in channel_stats.scores(FLAGS.criterion).items()}
        atomic_write_text(os.path.join(FLAGS.output, "device_scores.json"),
                          json.dumps({"criterion": FLAGS.criterion, "scores": scores}))
        report["stats"] = {"images": len(splits.train), "criterion": FLAGS.criterion,
                           "layers": len(scores)}
    if keras_model is not None:
        from tfprune.ondevice.reference import keras_finetune

        report["keras"] = keras_finetune(keras_model, manifest, splits.train, splits.test,
                                         FLAGS.epochs, FLAGS.schedule, FLAGS.seed, FLAGS.augment)
        report["device_minus_keras"] = dev["final_test_accuracy"] - report["keras"]["final_test_accuracy"]
    atomic_write_text(os.path.join(FLAGS.output, "report.json"), json.dumps(report, indent=1))
    atomic_write_text(os.path.join(FLAGS.output, "report.md"), _markdown(report))
    return report


def resume_hint() -> str:
    return f"rerun the same command to resume from {FLAGS.output}/checkpoints"


@console.app_main("ondevice_finetune", resume_hint)
def main(argv):
    del argv
    try:
        report = run()
    except OSError as err:
        sys.exit(f"ondevice_finetune: {err}")
    print(_markdown(report))


if __name__ == "__main__":
    app.run(main)
