"""android_export: package a trained Keras model as an app-ready bundle for Android.

    python -m android_export --model=PATH_OR_SPEC --output=DIR [--kind=float32|int8]
        [--data=sample --subset=aquatic --seed=0] [--batch_size=32 --trainable=all]
        [--calibration_samples=400] [--allow_failed_validation]

converts the model (`tfprune.litert.targets.export_inference`), exports its on-device training model
(`tfprune.ondevice.export_trainable`), validates both (`tfprune.litert.targets.validate_exports`:
float32 for the Android CPU + GPU delegate, int8 for the Android CPU + Edge TPU, the trainable
model for the Android CPU; parity against the Keras model on the subset's test images), and
writes the bundle:

    DIR/model.tflite  trainable.tflite  trainable.json  labels.txt  manifest.json
        android/TfpruneModel.kt  android/build.gradle  android/README.md

Library:
- `write_bundle(output_dir, *, model_tflite, trainable_dir, validation, class_names,
  subset_classes=None, source=None, allow_failed_validation=False) -> manifest` packages
  files that were already exported and validated (the main job's chain calls it);
- `check_bundle(dir) -> manifest` checks a bundle against its manifest;
- `export_bundle(model, output_dir, ...)` is the whole command above as a function.
All three raise `BundleError` (a ValueError) naming what failed. android/README.md is the
app developer's guide; the Kotlin and Gradle files there are static templates (only the
LiteRT version is filled into build.gradle).
"""
from android_export.bundle import BundleError, check_bundle, write_bundle
from android_export.export import export_bundle

__all__ = ["BundleError", "check_bundle", "export_bundle", "write_bundle"]
