"""The gate itself: parity catches a model that is not its source, thresholds come from the
caller, and the app exits non-zero naming each failed gate (bad files included)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfprune.litert import convert
from tfprune.litert import validate
from tfprune.data import Images, normalize_np
from tfprune.litert.validate import parity, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(seed):
    import keras

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x))


@pytest.fixture(scope="module")
def models():
    return _tiny(1), _tiny(2)


@pytest.fixture(scope="module")
def images(models):
    """Random images labelled by model A, so A is 100% accurate on them."""
    x = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    y = np.asarray(models[0](normalize_np(x))).argmax(1)
    return Images(x, y.astype(np.int64))


def test_float_parity_passes_for_its_source_and_fails_for_another(models, images):
    a, b = models
    blob = convert.convert(a, "float32")
    good = parity.parity(blob, a, images)
    assert good["passed"] and good["top1_agreement"] == 1.0 and good["keras_accuracy"] == 1.0
    bad = parity.parity(blob, b, images)
    assert not bad["passed"] and bad["top1_agreement"] < 0.995
    assert bad["summary"].startswith("NOT top-1 agreement")


def test_int8_accuracy_drop_gate_and_threshold_flag(models, images):
    a, b = models
    cal = normalize_np(images.x[:32])
    wrong = convert.convert(b, "int8", calibration=cal)  # B's weights, judged against A
    result = parity.parity(wrong, a, images)
    assert result["kind"] == "int8" and not result["passed"]
    assert result["accuracy_drop_pp"] > 1.0
    lenient = parity.parity(wrong, a, images, max_accuracy_drop_pp=100.0)
    assert lenient["passed"]


def test_report_names_failed_gates_and_renders(models, images, tmp_path):
    path = convert.write_tflite(convert.convert(models[0], "float32"), tmp_path / "a.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 100)
    result = validate.validate([path, junk], ("android-cpu", "edgetpu"), keras_model=models[0],
                               images=images, latency_runs=2, threads=(1,))
    assert not result["passed"]
    assert any("a.tflite: edgetpu" in g for g in result["failed_gates"])
    assert any("junk.tflite: load" in g and "not a TFLite model" in g
               for g in result["failed_gates"])
    js, md = report.write(result, tmp_path / "out")
    assert json.loads(js.read_text())["failed_gates"] == result["failed_gates"]
    text = md.read_text()
    assert "**FAIL**" in text and "| parity | pass |" in text


def test_validate_app_exit_codes(models, tmp_path):
    path = convert.write_tflite(convert.convert(models[0], "float32"), tmp_path / "m.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipelines.validate", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    ok = run(f"--tflite={path}", "--targets=android-cpu,android-gpu", "--latency_runs=2",
             f"--output={tmp_path / 'ok'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run(f"--tflite={path},{text}", "--targets=edgetpu", "--latency_runs=0",
              f"--output={tmp_path / 'bad'}")
    assert bad.returncode == 1
    assert "m.tflite: edgetpu" in bad.stderr and "notes.tflite: load" in bad.stderr
    assert (tmp_path / "bad" / "validation.md").exists()
    usage = run(f"--tflite={path}", "--targets=tpu", f"--output={tmp_path / 'u'}")
    assert usage.returncode != 0 and "unknown target" in usage.stderr
    as_output = run(f"--tflite={path}", f"--output={text}")  # an existing file, not a directory
    assert as_output.returncode != 0 and "Traceback" not in as_output.stderr
    assert f"validate: --output {text}" in as_output.stderr and text.read_text() == "not a model"
