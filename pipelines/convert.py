"""Convert a Keras model to LiteRT: inference models, or a trainable on-device model.

python -m pipelines.convert --model=PATH_OR_ZOO_NAME --mode=float32|float16|dynamic|int8 \
    [--data=sample --subset=aquatic --calibration_samples=200 --io_type=int8] --output=DIR
writes DIR/model.tflite (static batch 1, the Edge TPU's shape) and DIR/conversion.json (mode,
sizes, ops, calibration, the input normalisation). `--mode=int8` calibrates full-integer
quantisation on images drawn from the training split of your own --data/--subset.
`--qat_epochs=N` (int8 only) first fine-tunes with quantisation-aware training (tfmot, in a
child process: tfprune.litert.qat) on the same split, then converts the QAT model.
`--mode=trainable` writes DIR/trainable.tflite and its manifest through
`tfprune.ondevice.export_trainable` (flags --batch_size, --trainable, --optimizer, ...).
"""
import json
import os
import sys

from absl import app, flags

from tfprune import console

flags.DEFINE_string("model", None, "A .keras file, pretrained:NAME, or a zoo model name.")
flags.DEFINE_enum("mode", "float32", ["float32", "float16", "dynamic", "int8", "trainable"],
                  "Conversion mode.")
flags.DEFINE_string("output", None, "Output directory.")
flags.DEFINE_bool("overwrite", False, "Replace an existing model in --output.")
flags.DEFINE_string("data", "sample", "Data source for calibration / QAT (npz:, tfds:, folder:, "
                    "sample).")
flags.DEFINE_string("subset", "all", "Class subset whose training images calibrate int8.")
flags.DEFINE_integer("seed", 0, "Seed for the subset split and the calibration draw.")
flags.DEFINE_integer("calibration_samples", 200, "Representative images for int8.",
                     lower_bound=1)
flags.DEFINE_enum("io_type", "int8", ["int8", "uint8", "float32"],
                  "Input/output type of an int8 model (int8/uint8 for the Edge TPU).")
flags.DEFINE_bool("allow_flex", False, "Admit select-TF (Flex) ops in inference models.")
flags.DEFINE_integer("qat_epochs", 0, "int8: quantisation-aware training epochs first (tfmot).",
                     lower_bound=0)
flags.DEFINE_float("qat_learning_rate", 1e-3, "QAT SGD learning rate.", lower_bound=0.0)
flags.DEFINE_integer("qat_batch_size", 64, "QAT batch size.", lower_bound=1)
# --mode=trainable (on-device training export, tfprune.ondevice)
flags.DEFINE_integer("batch_size", 32, "Trainable mode: the fixed training batch size.",
                     lower_bound=1)
flags.DEFINE_string("trainable", "all", "Trainable mode: all, head, or the last N layers.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "Trainable mode: optimiser.")
flags.DEFINE_float("learning_rate", 0.01, "Trainable mode: learning rate.", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "Trainable mode: SGD momentum.", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_float("weight_decay", 5e-4, "Trainable mode: weight decay.", lower_bound=0.0)
flags.DEFINE_enum("conv_impl", "matmul", ["matmul", "conv"],
                  "Trainable mode: Conv2D lowering (matmul: BATCH_MATMULs forward and back, "
                  "which the XNNPACK delegate runs multithreaded; conv: builtin "
                  "CONV_2D/TRANSPOSE_CONV, single-threaded for a trained filter on x86).")
flags.mark_flags_as_required(["model", "output"])
FLAGS = flags.FLAGS


def _trainable(model) -> dict:
    from tfprune.ondevice import export_trainable

    return export_trainable(model, FLAGS.output, batch_size=FLAGS.batch_size,
                            trainable=FLAGS.trainable, optimizer=FLAGS.optimizer,
                            learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
                            weight_decay=FLAGS.weight_decay, conv_impl=FLAGS.conv_impl)


def _inference(model) -> dict:
    from tfprune import data, litert
    from tfprune.litert import convert

    record = {"model": FLAGS.model, "mode": FLAGS.mode, "batch_size": 1,
              "normalisation": convert.input_normalisation()}
    calibration = None
    if FLAGS.mode == "int8":
        splits = data.load_subset(FLAGS.data, FLAGS.subset, FLAGS.seed)
        calibration = convert.calibration_images(splits.train, FLAGS.calibration_samples,
                                                 FLAGS.seed)
        record.update(io_type=FLAGS.io_type, calibration={
            "data": FLAGS.data, "subset": FLAGS.subset, "split": "train", "seed": FLAGS.seed,
            "images": int(len(calibration))})
    if FLAGS.qat_epochs > 0:
        from tfprune.litert import qat

        record.pop("calibration")  # QAT ranges come from training, not calibration
        blob, record["qat"] = qat.convert_with_qat(
            model, FLAGS.data, FLAGS.subset, FLAGS.seed, FLAGS.qat_epochs,
            FLAGS.qat_learning_rate, FLAGS.qat_batch_size, FLAGS.io_type,
            FLAGS.calibration_samples)
    else:
        blob = convert.convert(model, FLAGS.mode, calibration=calibration,
                               io_type=FLAGS.io_type, allow_flex=FLAGS.allow_flex)
    path = convert.write_tflite(blob, os.path.join(FLAGS.output, "model.tflite"))
    info = litert.inspect(blob)
    record.update(tflite=str(path), size_bytes=len(blob), op_counts=info.op_counts(),
                  flex_ops=info.flex_ops(), inputs=[t.as_dict() for t in info.inputs],
                  outputs=[t.as_dict() for t in info.outputs])
    return record


@console.app_main("convert")
def main(argv):
    del argv
    target = "trainable.tflite" if FLAGS.mode == "trainable" else "model.tflite"
    if os.path.exists(os.path.join(FLAGS.output, target)) and not FLAGS.overwrite:
        sys.exit(f"convert: {os.path.join(FLAGS.output, target)} exists; pass --overwrite")
    if FLAGS.qat_epochs and FLAGS.mode != "int8":
        sys.exit("convert: --qat_epochs needs --mode=int8")
    from tfprune.models.loader import load_model
    from tfprune.fileio import atomic_write_text
    try:
        model = load_model(FLAGS.model)
        os.makedirs(FLAGS.output, exist_ok=True)
        record = _trainable(model) if FLAGS.mode == "trainable" else _inference(model)
    except OSError as err:
        sys.exit(f"convert: {err}")
    if FLAGS.mode != "trainable":
        atomic_write_text(os.path.join(FLAGS.output, "conversion.json"),
                          json.dumps(record, indent=2, default=str))
        print(f"convert: wrote {record['tflite']} ({record['size_bytes']:,} bytes, "
              f"{sum(record['op_counts'].values())} ops)")
    else:
        print(f"convert: wrote {os.path.join(FLAGS.output, 'trainable.tflite')} "
              f"({record.get('size_bytes', 0):,} bytes, signatures "
              f"{', '.join(record.get('signatures', {}))}; Flex ops: "
              f"{record.get('flex_ops') or 'none'})")


if __name__ == "__main__":
    app.run(main)
