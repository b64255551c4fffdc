"""The `android-gpu` gate runs models through LiteRT's GPU accelerator (WebGPU on Vulkan; in CI
Mesa's lavapipe, installed by .ci/run), and the output-alias gate every file passes.

Real conversions, real GPU runs in a subprocess; parity against the CPU on real images."""
import numpy as np
import tensorflow as tf

from tfprune import litert
from tfprune.litert import validate
from tfprune.litert.validate import android, gpu


def _write(fn, shape, path, signature=False):
    f = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    if signature:  # a named signature, as the exporters write them
        module = tf.Module()
        module.f = f
        c = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    else:
        c = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    path.write_bytes(c.convert())
    return path


KERNEL = tf.constant(np.random.default_rng(1).normal(0, 0.2, size=(3, 3, 3, 8)).astype(np.float32))
DENSE = tf.constant(np.random.default_rng(2).normal(0, 0.2, size=(8, 10)).astype(np.float32))


def _classifier(x):
    h = tf.nn.relu(tf.nn.conv2d(x, KERNEL, 1, "SAME"))
    return tf.matmul(tf.reduce_mean(h, axis=(1, 2)), DENSE)


def test_conv_model_is_fully_accelerated_and_agrees_with_the_cpu(tmp_path, sample_splits):
    path = _write(_classifier, (1, 32, 32, 3), tmp_path / "conv.tflite")
    result = gpu.check(path, sample_splits.test, count=16)
    assert result["status"] == "pass" and result["passed"], result["summary"]
    assert result["check"] == "run" and result["fully_accelerated"]
    assert result["fallback_ops"] == [] and "warning" not in result
    assert result["inputs"] == "16 real images" and result["examples"] == 16
    assert result["parity"]["top1_agreement"] >= gpu.MIN_AGREEMENT
    assert 0 < result["parity"]["max_abs_logit_diff"] < 0.05  # fp16 on the GPU, not bit-exact
    assert "Vulkan" in result["adapter"]


def test_int64_argmax_falls_back_and_the_accelerator_says_why(tmp_path):
    path = _write(lambda x: tf.argmax(x * 2.0, axis=-1), (1, 10), tmp_path / "argmax.tflite")
    result = gpu.check(path, None, count=8)
    assert result["status"] == "pass", result["summary"]  # runs (partly on the CPU), agrees
    assert not result["fully_accelerated"]
    assert [op["name"] for op in result["fallback_ops"]] == ["ARG_MAX"]
    assert "Tensor type(INT64) is not supported" in result["fallback_ops"][0]["why"]
    assert "ARG_MAX" in result["warning"] and "NOT fully accelerated" in result["summary"]


def test_cumsum_runs_on_the_gpu_though_the_legacy_rules_refuse_it(tmp_path):
    path = _write(lambda x: tf.math.cumsum(x, axis=1), (1, 10), tmp_path / "cumsum.tflite")
    result = validate.validate([path], ("android-gpu", "android-gpu-legacy"), latency_runs=0)
    gates = {g["gate"]: g for g in result["files"][0]["gates"]}
    assert gates["android-gpu"]["passed"], gates["android-gpu"]["why"]
    assert result["files"][0]["targets"]["android-gpu"]["fully_accelerated"]
    assert not gates["android-gpu-legacy"]["passed"]
    assert gates["android-gpu-legacy"]["why"].startswith("rules: ")


def test_parity_catches_a_wrong_gpu_result(tmp_path):
    # LiteRT 2.3.0's GPU accelerator takes CUMSUM over axis -1 as a copy of the input (axis 1
    # of the same 2-D tensor is right, above): fully accelerated, and wrong
    path = _write(lambda x: tf.math.cumsum(x, axis=-1), (1, 10), tmp_path / "cumsum_last.tflite")
    result = gpu.check(path, None, count=8)
    assert result["fully_accelerated"] and result["status"] == "fail"
    assert "parity FAILED" in result["summary"] and "max relative difference" in result["summary"]


def test_values_beyond_fp16_are_named(tmp_path):
    path = _write(lambda x: tf.square(x * 300.0 + 400.0), (1, 10), tmp_path / "big.tflite")
    result = gpu.check(path, None, count=4)
    assert result["status"] == "fail" and "inf/NaN" in result["summary"]
    assert "beyond fp16's 65504" in result["summary"]


def test_without_vulkan_the_check_is_not_run_and_does_not_pass(tmp_path, monkeypatch,
                                                               sample_splits):
    path = _write(_classifier, (1, 32, 32, 3), tmp_path / "conv.tflite")
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "no_such_icd.json"))
    result = gpu.check(path, sample_splits.test, count=4)
    assert result["status"] == "not run" and result["check"] == "not run"
    assert not result["passed"] and "\n" not in result["summary"]
    assert result["summary"].startswith("not run: no Vulkan device")
    report = validate.validate([path], ("android-cpu", "android-gpu"), latency_runs=0)
    gate = next(g for g in report["files"][0]["gates"] if g["gate"] == "android-gpu")
    assert gate["status"] == "not run" and not gate["passed"]
    assert len(report["not_run"]) == 1 and "android-gpu: not run" in report["not_run"][0]
    from tfprune.litert.validate import report as report_md
    assert "| android-gpu | **NOT RUN** |" in report_md.to_markdown(report)


def test_a_signature_whose_outputs_share_a_tensor_fails_the_gate(tmp_path):
    def twice(x):
        y = tf.reduce_sum(x) * 3.0
        return {"a": y, "b": y, "c": x + 1.0}

    path = _write(twice, (1, 4), tmp_path / "alias.tflite", signature=True)
    info = litert.inspect(path)
    assert info.aliased_outputs() == {"serving_default": [["a", "b"]]}
    report = validate.validate([path], ("android-cpu",), latency_runs=0)
    assert not report["passed"]
    assert "signatures: output names share a tensor" in report["failed_gates"][0]
    assert "serving_default: a=b" in report["failed_gates"][0]


def test_legacy_rule_check_is_labelled_as_rules(tmp_path):
    path = _write(_classifier, (1, 32, 32, 3), tmp_path / "conv.tflite")
    legacy = android.check_gpu_legacy(litert.inspect(path), with_analyzer=False)
    assert legacy["target"] == "android-gpu-legacy" and legacy["check"] == "rules"
    assert legacy["passed"] and legacy["summary"].startswith("rules: ")
