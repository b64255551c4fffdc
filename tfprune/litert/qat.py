"""Quantisation-aware training (tfmot) and full-integer conversion, in a separate process.

tensorflow-model-optimization accepts only tf_keras (Keras 2) models, and importing it turns
the whole process over to tf_keras. So `convert_with_qat` saves the Keras 3 model and runs
`python -m tfprune.litert.qat` in a child process, which
  1. reads the Keras 3 model with the core's reader (`tfprune.core.modelspec.read_model`) and
     rebuilds it as a tf_keras model with the core's writer (`write_model(..., tf_keras)`),
     checking the rebuilt model's outputs against the original on real images;
  2. wraps it with `tfmot.quantization.keras.quantize_model`, sets every activation
     quantiser's range to the range its layer's output takes on the calibration images (tfmot
     starts them at [-6, 6] and moves them by an EMA with decay 0.999, far too slowly for the
     few steps local data gives: without this, ResNet-20 lost ~35 points), fine-tunes it for the given
     epochs on the training split of the user's subset (SGD, momentum 0.9, cross-entropy on
     logits), reporting the float source's and the QAT model's validation accuracy;
  3. converts it through a concrete function with a static batch-1 signature to a
     full-integer model (int8 kernels only, int8/uint8/float32 I/O): ranges come from the
     fake-quant nodes learned in training; the converter insists on a representative
     dataset for full-integer output, so `calibration_samples` training images are given.
The child writes the .tflite and a JSON record; the parent reads both back.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tfprune.errors import TfpruneError


class QATError(TfpruneError, RuntimeError):
    """The QAT child process failed; the message carries the tail of its log."""


def convert_with_qat(model, data: str, subset: str, seed: int = 0, epochs: int = 1,
                     learning_rate: float = 1e-3, batch_size: int = 64,
                     io_type: str = "int8", calibration_samples: int = 200) -> tuple[bytes, dict]:
    """QAT-fine-tune `model` (a Keras 3 model) and convert it to full int8 in a child process;
    returns the .tflite bytes and the training record. Child output streams to stderr."""
    with tempfile.TemporaryDirectory(prefix="tfprune_qat_") as tmp:
        src = os.path.join(tmp, "source.keras")
        model.save(src)
        out, rec = os.path.join(tmp, "qat.tflite"), os.path.join(tmp, "qat.json")
        cmd = [sys.executable, "-m", "tfprune.litert.qat", f"--model={src}", f"--data={data}",
               f"--subset={subset}", f"--seed={seed}", f"--epochs={epochs}",
               f"--learning_rate={learning_rate}", f"--batch_size={batch_size}",
               f"--io_type={io_type}", f"--calibration_samples={calibration_samples}",
               f"--output={out}", f"--record={rec}"]
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True,
                              check=False)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise QATError(f"QAT process failed (exit {proc.returncode}):\n{tail}")
        return Path(out).read_bytes(), json.loads(Path(rec).read_text())


def _set_activation_ranges(qmodel, float_model, x, tf_keras) -> None:
    """Every activation quantiser's (min, max) := its float layer's output range on `x`
    (widened to include 0); the input QuantizeLayer gets the input's range. Wrappers are named
    `quant_<layer>`; their `output_*`/`post_activation_*` variables quantise that output.
    (Weight quantisers need nothing: training sets them from the weights on its first step.)"""
    import numpy as np

    layers = float_model.layers[1:]
    probe = tf_keras.Model(float_model.inputs, [layer.output for layer in layers])
    ranges = {layer.name: (min(0.0, float(out.min())), max(0.0, float(out.max())))
              for layer, out in zip(layers, probe.predict(x, batch_size=100, verbose=0))}
    for layer in qmodel.layers:
        if type(layer).__name__ == "QuantizeLayer":
            bounds = (min(0.0, float(np.min(x))), max(0.0, float(np.max(x))))
        else:
            bounds = ranges.get(layer.name.removeprefix("quant_"))
        for var in layer.weights:
            leaf = var.name.split("/")[-1].split(":")[0]
            if bounds and leaf.endswith(("output_min", "post_activation_min", "quantize_layer_min")):
                var.assign(bounds[0])
            elif bounds and leaf.endswith(("output_max", "post_activation_max", "quantize_layer_max")):
                var.assign(bounds[1])


def _child(args) -> None:
    import keras
    import numpy as np

    from tfprune import data
    from tfprune.litert import convert
    from tfprune.core import modelspec

    source = keras.models.load_model(args.model)
    spec = modelspec.read_model(source)
    splits = data.load_subset(args.data, args.subset, args.seed)
    probe = data.normalize_np(splits.val.x[:64])
    reference = np.asarray(source(probe, training=False))

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    rebuilt = modelspec.write_model(spec, keras_module=tf_keras)
    rebuild_diff = float(np.abs(rebuilt(probe, training=False).numpy() - reference).max())
    if rebuild_diff > 1e-3:
        raise SystemExit(f"qat: the tf_keras rebuild differs from the source by {rebuild_diff}")
    model = tfmot.quantization.keras.quantize_model(rebuilt)
    calibration = convert.calibration_images(splits.train, args.calibration_samples, args.seed)
    _set_activation_ranges(model, rebuilt, calibration, tf_keras)
    model.compile(optimizer=tf_keras.optimizers.SGD(args.learning_rate, momentum=0.9),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train_ds = data.as_dataset(splits.train, args.batch_size, training=True, seed=args.seed)
    val_ds = data.as_dataset(splits.val, 256)
    val_x = data.normalize_np(splits.val.x)
    float_logits, quant_logits = rebuilt.predict(val_x, verbose=0), model.predict(val_x, verbose=0)
    before = float((float_logits.argmax(1) == splits.val.y).mean())
    start = float((quant_logits.argmax(1) == splits.val.y).mean())
    start_err = float(np.abs(quant_logits - float_logits).max() / np.abs(float_logits).max())
    print(f"qat: val accuracy float {before:.4f}, fake-quant with calibrated ranges {start:.4f}; "
          f"QAT for {args.epochs} epoch(s)", flush=True)
    history = model.fit(train_ds, epochs=args.epochs, validation_data=val_ds, verbose=2)

    shape = (1, *tuple(model.inputs[0].shape[1:]))
    fn = tf.function(lambda x: model(x, training=False))
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = convert.io_dtype(args.io_type)
    conv.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    Path(args.output).write_bytes(conv.convert())
    Path(args.record).write_text(json.dumps({
        "epochs": args.epochs, "learning_rate": args.learning_rate,
        "batch_size": args.batch_size, "optimizer": "SGD momentum 0.9",
        "train_images": len(splits.train), "val_images": len(splits.val),
        "rebuild": "tfprune.core.modelspec read_model -> write_model(tf_keras)",
        "rebuild_max_abs_diff": rebuild_diff, "val_accuracy_float_source": before,
        "val_accuracy_fake_quant_start": start, "fake_quant_start_rel_logit_err": start_err,
        "val_accuracy_after": float(history.history["val_accuracy"][-1]),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}, indent=2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="QAT worker (run by tfprune.litert.qat.convert_with_qat)")
    for name, kind in (("model", str), ("data", str), ("subset", str), ("seed", int),
                       ("epochs", int), ("learning_rate", float), ("batch_size", int),
                       ("io_type", str), ("calibration_samples", int), ("output", str),
                       ("record", str)):
        parser.add_argument(f"--{name}", type=kind, required=True)
    _child(parser.parse_args(argv))


if __name__ == "__main__":
    main()
