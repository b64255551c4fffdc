"""The main job's chain end to end on the bundled sample, and its resume by stage."""
import json

import keras

from tfprune import chain


def _small_cnn(path):
    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for i, width in enumerate((8, 16)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)).save(path)


def test_chain_runs_and_resumes(tmp_path):
    _small_cnn(tmp_path / "small.keras")
    cfg = chain.ChainConfig(model=str(tmp_path / "small.keras"), finetune_epochs=1,
                            calibration_batches=2, bn_batches=2, calibration_samples=20,
                            latency_runs=2)
    run = tmp_path / "run"
    logs = []
    summary = chain.run_chain(cfg, run, log=logs.append)
    assert summary["validation_passed"], summary["failed_gates"]
    assert summary["pruned"]["params"] < summary["original"]["params"]
    assert abs(summary["pruned"]["achieved"]["level"] - 0.5) < 0.1
    assert summary["subset"] == {"classes": 10, "train": 400, "val": 100, "test": 300}
    tflite = summary["tflite"]
    assert set(tflite) == {"model_float32.tflite", "model_int8.tflite", "trainable.tflite"}
    assert tflite["model_int8.tflite"]["gates"]["edgetpu"]
    assert tflite["model_float32.tflite"]["gates"]["parity"]
    report = (run / "report.md").read_text()
    assert "pruned + fine-tuned" in report and (run / "report.png").stat().st_size > 1000
    assert json.loads((run / "summary.json").read_text()) == summary

    (run / "validation.json").unlink()  # as if stopped during validation
    logs.clear()
    chain.run_chain(cfg, run, log=logs.append)
    skipped = [line for line in logs if "skipped" in line]
    assert len(skipped) == 4 and any(line.startswith("[validate] ...") for line in logs)
