"""Conversion, and the CI gate: ResNet-20 (as shipped, and 50%-FLOPs pruned) converted to
float32 and full int8 and validated against the package's held-out aquatic sample images.

The source model is `pretrained:resnet20` once tfprune/models/pretrained/resnet20.keras exists, else
a seeded random-weight zoo ResNet-20 (parity is then still exact-vs-converted, but accuracy
numbers are at chance).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfprune import data, litert
from tfprune.litert import convert
from tfprune.models import loader as modelio
from tfprune.litert import validate
from tfprune.models import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = ["--data=sample", "--subset=aquatic"]


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def splits():
    return data.load_subset("sample", "aquatic", 0)


@pytest.fixture(scope="module")
def resnet20():
    import keras

    if modelio.pretrained_path("resnet20").exists():
        return modelio.load_model("pretrained:resnet20")
    keras.utils.set_random_seed(0)
    return zoo.build("resnet20")


@pytest.fixture(scope="module")
def resnet20_path(resnet20, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "resnet20.keras"
    resnet20.save(path)
    return str(path)


def _prune(model, level=0.5):
    from tfprune import scoring
    from tfprune.core import graph
    from tfprune.core import plan
    from tfprune.core import surgery

    g = graph.build_graph(model)
    p = plan.make_plan(g, scoring.compute_scores("l1", model, g), level, target="flops",
                       round_to=8, criterion="l1")
    return surgery.apply_plan(model, p, graph=g)


def _gates(report):
    return {(os.path.basename(f["path"]), g["gate"]): g["passed"]
            for f in report["files"] for g in f["gates"]}


@pytest.mark.slow
def test_ci_resnet20_convert_and_validate_cli(resnet20, resnet20_path, splits, tmp_path):
    """The CI path: int8 through the convert and validate apps end to end (Edge TPU included),
    float32 through the library; both with parity on real held-out images."""
    run = _run("pipelines.convert", f"--model={resnet20_path}", "--mode=int8", *DATA,
               "--calibration_samples=100", f"--output={tmp_path / 'int8'}")
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((tmp_path / "int8" / "conversion.json").read_text())
    assert record["calibration"]["images"] == 100 and record["inputs"][0]["dtype"] == "int8"
    assert record["inputs"][0]["shape_signature"] == [1, 32, 32, 3]
    out = tmp_path / "val_int8"
    run = _run("pipelines.validate", f"--tflite={tmp_path / 'int8' / 'model.tflite'}",
               f"--keras={resnet20_path}", *DATA, "--targets=android-cpu,android-gpu-legacy,edgetpu",
               "--latency_runs=5", f"--output={out}")
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-2000:]
    int8 = json.loads((out / "validation.json").read_text())["files"][0]
    assert int8["parity"]["images"] == 300 and int8["parity"]["accuracy_drop_pp"] <= 1.0
    assert int8["targets"]["edgetpu"]["macs_mapped_share"] == 1.0
    assert set(int8["latency"]) == {"1", "2"} and int8["latency"]["1"]["median_ms"] > 0
    assert "| edgetpu | pass |" in (out / "validation.md").read_text()

    path = convert.write_tflite(convert.convert(resnet20, "float32"), tmp_path / "f32.tflite")
    result = validate.validate([path], ("android-cpu", "android-gpu"), keras_model=resnet20,
                               images=splits.test, latency_runs=3)
    assert result["passed"], result["failed_gates"]
    f32 = result["files"][0]["parity"]
    assert f32["top1_agreement"] >= 0.995 and f32["max_abs_logit_diff"] < 1e-2


@pytest.mark.slow
def test_ci_pruned_resnet20_float_and_int8(resnet20, splits, tmp_path):
    pruned = _prune(resnet20)
    assert pruned.count_params() < 0.75 * resnet20.count_params()
    cal = convert.calibration_images(splits.train, 100)
    paths = {}
    for mode in ("float32", "int8"):
        paths[mode] = convert.write_tflite(convert.convert(pruned, mode, calibration=cal),
                                           tmp_path / f"pruned_{mode}.tflite")
    report = validate.validate([paths["float32"], paths["int8"]], validate.TARGETS,
                               keras_model=pruned, images=splits.test, latency_runs=3)
    gates = _gates(report)
    failed = {k for k, ok in gates.items() if not ok}
    # a float model cannot run on the Edge TPU, and LiteRT 2.3.0's GPU accelerator fails to
    # invoke the full-int8 model (int8 kind ships for the CPU and the Edge TPU, see
    # tfprune.litert.targets): those, and only those, must fail
    assert failed == {("pruned_float32.tflite", "edgetpu"),
                      ("pruned_int8.tflite", "android-gpu")}, report["failed_gates"]
    int8 = report["files"][1]
    assert int8["targets"]["edgetpu"]["ops_mapped_share"] == 1.0
    assert int8["macs"] < report["files"][0]["macs"] * 1.001  # same graph, same MACs
    assert litert.inspect(paths["int8"]).size_bytes < 0.35 * paths["float32"].stat().st_size


def _tiny():
    import keras

    keras.utils.set_random_seed(1)
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)  # big enough to
    # be weight-quantised in `dynamic` mode (the converter leaves tensors < 1024 values float)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(5, name="logits")(x))


def test_convert_modes_shapes_and_types():
    model = _tiny()
    cal = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32)
    sizes = {}
    for mode, kind in (("float32", "float"), ("float16", "float"), ("dynamic", "dynamic"),
                       ("int8", "int8")):
        blob = convert.convert(model, mode, calibration=cal, io_type="uint8")
        info = litert.inspect(blob)
        sizes[mode] = len(blob)
        assert validate.parity.model_kind(info) == kind
        gpu = validate.android.check_gpu_legacy(info, with_analyzer=False)
        assert gpu["passed"] == (mode != "dynamic"), gpu["summary"]  # fp16 weights fold
        assert info.inputs[0].shape_signature == (1, 16, 16, 3)
        assert info.inputs[0].dtype == ("uint8" if mode == "int8" else "float32")
        assert info.flex_ops() == {}
    assert sizes["float16"] < sizes["float32"]
    assert convert.convert(model, "int8", calibration=cal, io_type="float32") != b""


def test_convert_refusals():
    import keras

    model = _tiny()
    with pytest.raises(convert.ConvertError, match="calibration"):
        convert.convert(model, "int8")
    with pytest.raises(convert.ConvertError, match="unknown mode"):
        convert.convert(model, "int4")
    inp = keras.Input((None, None, 3))
    dynamic = keras.Model(inp, keras.layers.Conv2D(2, 3)(inp))
    with pytest.raises(convert.ConvertError, match="unknown dimensions"):
        convert.convert(dynamic, "float32")
    with pytest.raises(convert.ConvertError, match="positive"):
        convert.calibration_images(data.load_subset("sample", "aquatic").train, 0)


def test_convert_app_errors(tmp_path):
    run = _run("pipelines.convert", "--model=nonexistent.keras", f"--output={tmp_path}")
    assert run.returncode != 0 and "nonexistent.keras does not exist" in run.stderr
    (tmp_path / "model.tflite").write_bytes(b"mine")
    run = _run("pipelines.convert", "--model=resnet20", f"--output={tmp_path}")
    assert run.returncode != 0 and "--overwrite" in run.stderr
    assert (tmp_path / "model.tflite").read_bytes() == b"mine"
    run = _run("pipelines.convert", "--model=resnet20", "--mode=trainable", "--trainable=bogus",
               f"--output={tmp_path / 'trainable'}")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("convert: trainable='bogus'")


@pytest.mark.slow
def test_qat_rebuilds_as_tf_keras_trains_and_converts_in_a_child_process():
    import keras

    from tfprune.litert import qat
    from tfprune.litert.validate import edgetpu

    keras.utils.set_random_seed(2)
    x = inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(100, name="logits")(x))
    blob, record = qat.convert_with_qat(model, "sample", "aquatic", epochs=1, batch_size=100,
                                        calibration_samples=20)
    assert record["rebuild_max_abs_diff"] < 1e-3 and len(record["history"]["loss"]) == 1
    # activation ranges calibrated before training: fake-quant starts where the float model is
    assert abs(record["val_accuracy_fake_quant_start"] - record["val_accuracy_float_source"]) <= 0.05
    info = litert.inspect(blob)
    assert info.inputs[0].dtype == "int8" and info.inputs[0].shape_signature == (1, 32, 32, 3)
    assert edgetpu.check(info)["passed"]
    assert "tensorflow_model_optimization" not in sys.modules  # tfmot stayed in the child
