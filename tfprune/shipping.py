"""Export a model as the files it ships as: the one path from a Keras model to the .tflite
files the main job and `android_export` validate together
(`tfprune.litert.targets.validate_exports(files(...), ...)`).

A shipment in a directory holds `model_<kind>.tflite` per inference kind (float32, int8) and,
when asked, `trainable/trainable.tflite` with its manifest. `tfprune.litert.targets` says which
gates each kind must pass.
"""
from __future__ import annotations

from pathlib import Path

from tfprune.litert import targets

TRAINABLE = "trainable/trainable.tflite"


def files(out, kinds, trainable: bool) -> list[tuple[Path, str]]:
    """The shipment's files in `out`, as `[(path, kind)]` for `targets.validate_exports`."""
    out = Path(out)
    listed = [(out / f"model_{kind}.tflite", kind) for kind in kinds]
    return listed + ([(out / TRAINABLE, "trainable")] if trainable else [])


def export(model, out, *, kinds=targets.INFERENCE_KINDS, train_images=None,
           calibration_samples: int = 400, seed: int = 0, trainable: bool = True,
           batch_size: int = 32, trainable_layers="all", log=print,
           prefix: str = "") -> list[tuple[Path, str]]:
    """Write `model`'s shipment into `out`: one inference file per kind (int8 calibrated on
    `calibration_samples` seeded draws from `train_images`) and, with `trainable`, the
    on-device training model (batch `batch_size`, `trainable_layers` trained). Returns
    `files(out, kinds, trainable)`."""
    from tfprune.ondevice import export_trainable

    listed = files(out, kinds, trainable)
    for path, kind in listed:
        if kind == "trainable":
            log(f"{prefix}building the on-device training model")
            export_trainable(model, path.parent, batch_size=batch_size, trainable=trainable_layers)
            continue
        log(f"{prefix}converting to {kind}" + (
            " (calibrating on the subset's training images)" if kind == "int8" else ""))
        targets.export_inference(model, kind, path, train_images=train_images,
                                 calibration_samples=calibration_samples, seed=seed)
    return listed

