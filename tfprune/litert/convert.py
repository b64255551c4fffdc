"""Convert a Keras model to a .tflite inference model with a static batch.

Modes: `float32`; `float16` (weights stored as float16); `dynamic` (dynamic-range int8 weights,
float activations); `int8` (full-integer: weights and activations int8, calibrated on a
representative dataset drawn from the user's own images, with int8, uint8 or float32 model
input/output). Conversion goes through `model.export(format="litert", input_signature=...)`,
which keeps the static batch of the signature (`TFLiteConverter.from_keras_model` leaves it
dynamic, which the Edge TPU refuses). The model input is the normalised float image
(`tfprune.data.normalize`); normalisation is not part of the model.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tfprune.console import native_stderr_hidden
from tfprune.errors import TfpruneError

MODES = ("float32", "float16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float32")


class ConvertError(TfpruneError):
    """A model or option the converter cannot honour; the message says which and why."""


def input_normalisation() -> dict:
    """What a converted model expects as input (normalisation is not part of the model), for
    the records written beside it."""
    from tfprune.data import MEAN, STD

    return {"mean": list(MEAN), "std": list(STD),
            "model_input": "float32 NHWC, (x / 255 - mean) / std"}


def calibration_images(images, n: int, seed: int = 0) -> np.ndarray:
    """`n` images drawn without replacement (seeded) from `images` (uint8 Images), normalised
    to the model's float input: the representative dataset for full-integer quantisation."""
    from tfprune.data import normalize_np

    if n <= 0:
        raise ConvertError(f"calibration_samples must be positive, got {n}")
    if len(images) == 0:
        raise ConvertError("no images to calibrate with")
    pick = np.random.default_rng(seed).permutation(len(images))[:n]
    return normalize_np(images.x[np.sort(pick)])


def input_spec(model, batch_size: int = 1):
    """The static `tf.TensorSpec` of the model's single input with batch `batch_size`."""
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise ConvertError(f"model {model.name} has {len(model.inputs)} inputs; one image input "
                           "is supported")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ConvertError(f"model {model.name} input shape {(None, *shape)} has unknown "
                           "dimensions besides the batch; a static shape is needed")
    return tf.TensorSpec((batch_size, *shape), tf.float32, name="image")


def io_dtype(io_type: str):
    """The tf dtype of a full-integer model's input and output (one of IO_TYPES)."""
    import tensorflow as tf
    if io_type not in IO_TYPES:
        raise ConvertError(f"io_type {io_type!r}: use one of {', '.join(IO_TYPES)}")
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_type]


def converter_options(mode: str, calibration: np.ndarray | None = None, io_type: str = "int8",
                      allow_flex: bool = False) -> dict:
    """The TFLiteConverter attributes for `mode`, as `model.export(format="litert")` takes them."""
    import tensorflow as tf

    if mode not in MODES:
        raise ConvertError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if io_type not in IO_TYPES:
        raise ConvertError(f"unknown io_type {io_type!r}; choose one of {', '.join(IO_TYPES)}")
    ops = {tf.lite.OpsSet.TFLITE_BUILTINS}
    if allow_flex:
        ops.add(tf.lite.OpsSet.SELECT_TF_OPS)
    opts: dict = {"target_spec": {"supported_ops": ops}}
    if mode == "float16":
        opts.update(optimizations=[tf.lite.Optimize.DEFAULT],
                    target_spec={"supported_ops": ops, "supported_types": [tf.float16]})
    elif mode == "dynamic":
        opts["optimizations"] = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConvertError("mode int8 needs calibration images (a representative dataset "
                               "from your data: --data/--subset/--calibration_samples)")
        calibration = np.asarray(calibration, np.float32)

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        # Builtin int8 kernels only: an op that cannot be quantised fails the conversion
        # rather than silently staying float (the Edge TPU needs every op in int8).
        int8_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
        if allow_flex:
            int8_ops.add(tf.lite.OpsSet.SELECT_TF_OPS)
        io = io_dtype(io_type)
        opts.update(optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative,
                    target_spec={"supported_ops": int8_ops},
                    inference_input_type=io, inference_output_type=io)
    return opts


def convert(model, mode: str = "float32", *, calibration: np.ndarray | None = None,
            io_type: str = "int8", batch_size: int = 1, allow_flex: bool = False) -> bytes:
    """The .tflite bytes of `model` converted in `mode` with a static input of `batch_size`.

    `calibration`: normalised float images (N, H, W, C) for `int8` (see `calibration_images`).
    `io_type`: the input/output type of an `int8` model (`float32` keeps float I/O with
    QUANTIZE/DEQUANTIZE at the ends). `allow_flex` admits select-TF ops (not runnable in
    ai_edge_litert; Android then needs the select-tf-ops runtime).
    """
    spec = input_spec(model, batch_size)
    if mode == "int8" and calibration is not None and tuple(calibration.shape[1:]) != tuple(
            spec.shape[1:]):
        raise ConvertError(f"the calibration images are {tuple(calibration.shape[1:])} but "
                           f"{model.name} takes {tuple(spec.shape[1:])}: calibrate on images of "
                           "the model's input size (--data)")
    opts = converter_options(mode, calibration, io_type, allow_flex)
    with tempfile.TemporaryDirectory(prefix="tfprune_convert_") as tmp:
        path = os.path.join(tmp, "model.tflite")
        try:
            with native_stderr_hidden():
                model.export(path, format="litert", input_signature=[spec], verbose=False,
                             **opts)
        except Exception as err:  # the converter reports through many exception types
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
            why = "; ".join(lines[-3:]) if lines else repr(err)
            raise ConvertError(f"converting {model.name} to {mode} failed: {why}") from err
        return Path(path).read_bytes()


def write_tflite(data: bytes, path) -> Path:
    """Write bytes to `path` through a temp file and a rename (never a half-written model)."""
    from tfprune.fileio import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)
