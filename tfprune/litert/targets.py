"""The files a model ships as, and the validation gate each of them must pass.

A model ships as an inference .tflite (`float32`, or full `int8` calibrated on the user's own
training images) and an on-device trainable .tflite (`tfprune.ondevice.export_trainable`).
Each kind has its own targets: float32 must run on the Android CPU and on LiteRT's GPU
accelerator (a real run, with parity against the CPU) and meet the legacy GPU delegate's rules, int8
on the Android CPU and the Edge TPU, the trainable model on the Android CPU runtime (builtin
ops). The inference files also pass parity against their Keras source; the trainable model's
agreement with Keras training is tested in tests/test_ondevice_*.

`validate_exports` runs `tfprune.litert.validate.validate` once per file with that file's targets
and merges the parts into one report in the `tfprune.litert.validate` format (validation.json).
Used by the main job's chain and by `android_export`.
"""
from __future__ import annotations

import os
from pathlib import Path

from tfprune.errors import TfpruneError

INFERENCE_KINDS = ("float32", "int8")
TARGETS = {"float32": ("android-cpu", "android-gpu", "android-gpu-legacy"), "int8": ("android-cpu", "edgetpu"),
           "trainable": ("android-cpu",)}
PARITY = {"float32": True, "int8": True, "trainable": False}


def export_inference(model, kind: str, path, *, train_images=None,
                     calibration_samples: int = 400, seed: int = 0) -> Path:
    """Convert `model` to a batch-1 `kind` .tflite at `path` (written atomically); `int8` is
    calibrated on `calibration_samples` images drawn (seeded) from `train_images`."""
    from tfprune.litert import convert

    if kind not in INFERENCE_KINDS:
        raise convert.ConvertError(f"unknown kind {kind!r}; choose one of "
                                   f"{', '.join(INFERENCE_KINDS)}")
    calibration = None
    if kind == "int8":
        if train_images is None:
            raise convert.ConvertError("kind int8 needs training images to calibrate on")
        calibration = convert.calibration_images(train_images, calibration_samples, seed)
    return convert.write_tflite(convert.convert(model, kind, calibration=calibration), path)


def validate_exports(files, *, keras_model, images, latency_runs: int = 30,
                     keras_source: str | None = None, data: dict | None = None,
                     **kwargs) -> dict:
    """One validation report over `files` ([(path, kind)], kind in TARGETS): each file is
    checked against its kind's targets; inference kinds also get parity against
    `keras_model` on `images` and `latency_runs` timed runs. Extra keyword arguments go to
    `tfprune.litert.validate.validate` (thresholds, ...)."""
    from tfprune.litert import validate

    unknown = [kind for _, kind in files if kind not in TARGETS]
    if unknown:
        raise TfpruneError(f"unknown export kind(s) {unknown}; choose from {', '.join(TARGETS)}")
    parts = [validate.validate([os.fspath(path)], TARGETS[kind],
                               keras_model=keras_model if PARITY[kind] else None,
                               images=images, latency_runs=latency_runs if PARITY[kind] else 0,
                               **kwargs)
             for path, kind in files]
    report = parts[0]
    report.update(targets=sorted({t for p in parts for t in p["targets"]}),
                  keras_model=keras_source, data=data,
                  files=[f for p in parts for f in p["files"]],
                  failed_gates=[g for p in parts for g in p["failed_gates"]],
                  not_run=[g for p in parts for g in p.get("not_run", [])])
    report["passed"] = not report["failed_gates"]
    return report


def report_entries(report: dict, path) -> list[dict]:
    """The entries of a validation report that describe the file at `path`: by resolved path,
    else by file name (a report written where the files were, read after they moved)."""
    path = Path(path)
    entries = report.get("files", [])
    same = [f for f in entries if Path(f["path"]).resolve() == path.resolve()]
    return same or [f for f in entries if Path(f["path"]).name == path.name]
