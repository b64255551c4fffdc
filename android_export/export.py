"""The command's work as a function: model spec -> exported, validated files -> bundle."""
from __future__ import annotations

import tempfile
from pathlib import Path

from android_export.bundle import BundleError, check_target, write_bundle


def subset_model(model, splits):
    """`model` over the subset's classes: cut when it has every class of the data, as it is
    when it already has one output per subset class; BundleError otherwise."""
    from tfprune.core import head

    units, k = int(model.output_shape[-1]), len(splits.classes)
    if units == len(splits.class_names) and units != k:
        return head.slice_head(model, splits.classes)
    if units == k:
        return model
    raise BundleError(f"the model has {units} outputs: neither the data's {len(splits.class_names)}"
                      f" classes nor the subset's {k} (--head=subset)")


def export_bundle(model: str, output_dir, *, kind: str = "float32", data: str = "sample",
                  subset: str = "aquatic", seed: int = 0, batch_size: int = 32,
                  trainable: str = "all", calibration_samples: int = 400,
                  latency_runs: int = 20, allow_failed_validation: bool = False,
                  head: str = "subset", log=print) -> dict:
    """Load `model` (a .keras path, pretrained:NAME or zoo name), export the `kind` inference
    model (int8 calibrated on the subset's training images) and the trainable model (batch
    `batch_size`, `trainable` layers) into a temp dir, validate them, and write the bundle.
    `head="subset"` bundles a model over the subset's classes only (labels.txt lists them,
    labels 0..k-1 in subset order): a model over every class has its classifier cut to the
    subset first (tfprune.core.head), a model already cut (k outputs) is bundled as it is.
    `head="full"` bundles every class. Returns the manifest."""
    from tfprune import data as data_mod, shipping
    from tfprune.litert import targets
    from tfprune.models import loader as modelio

    check_target(output_dir, inputs={"model": model})
    keras_model = modelio.load_model(model)
    splits = data_mod.load_subset(data, subset, seed)
    if head not in ("subset", "full"):
        raise BundleError(f"head must be subset or full, got {head!r}")
    if head == "subset":
        keras_model = subset_model(keras_model, splits)
        splits = data_mod.relabel(splits)
    with tempfile.TemporaryDirectory(prefix="android_export_") as work:
        work = Path(work)
        log(f"android_export: exporting {model}")
        listed = shipping.export(keras_model, work, kinds=(kind,), train_images=splits.train,
                                 calibration_samples=calibration_samples, seed=seed,
                                 batch_size=batch_size, trainable_layers=trainable, log=log,
                                 prefix="android_export: ")
        log("android_export: validating")
        data_record = {"data": data, "subset": subset, "split": "test", "seed": seed,
                       "images": len(splits.test)}
        report = targets.validate_exports(listed, keras_model=keras_model, images=splits.test,
                                          latency_runs=latency_runs, keras_source=model,
                                          data=data_record)
        inference = listed[0][0]
        return write_bundle(
            output_dir, model_tflite=inference, trainable_dir=work / "trainable",
            validation=report, class_names=splits.class_names, subset_classes=splits.classes,
            source={"model": model, "kind": kind, **data_record, "head": head,
                    "source_classes": list(splits.source_classes) or None, "batch_size": batch_size,
                    "trainable": trainable, "calibration_samples":
                        calibration_samples if kind == "int8" else None},
            allow_failed_validation=allow_failed_validation)
