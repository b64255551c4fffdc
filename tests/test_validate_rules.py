"""Target checks on hand-made tiny models, each built to break (or keep) one rule.

Real conversions with the TFLite converter; the checks read the real flatbuffers.
"""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import litert
from tfprune.litert.validate import android, edgetpu

SHAPE = (1, 8, 8, 4)
KERNEL = tf.constant(np.random.default_rng(1).normal(size=(3, 3, 4, 4)).astype(np.float32))


def conv(x, dilations=1):
    return tf.nn.conv2d(x, KERNEL, 1, "SAME", dilations=dilations)


def _convert(fn, shape=SHAPE, int8=True, io=tf.int8, flex=False) -> litert.ModelInfo:
    return litert.inspect(_tflite(fn, shape, int8, io, flex))


def _tflite(fn, shape=SHAPE, int8=True, io=tf.int8, flex=False) -> bytes:
    cf = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
    c = tf.lite.TFLiteConverter.from_concrete_functions([cf])
    if int8:
        rng = np.random.default_rng(0)
        fixed = [d or 1 for d in shape]
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([rng.normal(size=fixed).astype(np.float32)]
                                            for _ in range(8))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = io
    elif flex:
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                       tf.lite.OpsSet.SELECT_TF_OPS]
    return c.convert()


# ---- Edge TPU ------------------------------------------------------------------------------

def test_edgetpu_passes_a_full_int8_conv_net():
    result = edgetpu.check(_convert(lambda x: tf.nn.relu(conv(tf.nn.relu(conv(x))))))
    assert result["passed"], result["summary"]
    assert result["ops_mapped_share"] == result["macs_mapped_share"] == 1.0
    assert result["first_cpu_op"] is None


def test_edgetpu_unsupported_op_is_first_fallback_and_cuts_the_rest():
    result = edgetpu.check(_convert(lambda x: conv(tf.math.abs(conv(x)))))
    assert not result["passed"]
    assert result["first_cpu_op"]["name"] == "ABS"
    assert "not supported by the Edge TPU" in result["first_cpu_op"]["problems"][0]
    # conv -> ABS -> conv: only the first conv maps, the second runs on the CPU after ABS
    assert result["ops_mapped"] == 1 and result["ops_total"] == 3
    assert result["macs_mapped_share"] == pytest.approx(0.5)


@pytest.mark.parametrize("shape, problem", [
    ((None, 8, 8, 4), "dynamic shape"),
    ((2, 8, 8, 4), "batch is 2, not 1"),
])
def test_edgetpu_model_requirements(shape, problem):
    result = edgetpu.check(_convert(conv, shape))
    assert not result["passed"]
    assert any(problem in p for p in result["model_problems"]), result["model_problems"]


def test_edgetpu_float_input_output_is_refused():
    result = edgetpu.check(_convert(conv, io=tf.float32))
    assert any("is float32, not int8/uint8" in p for p in result["model_problems"])
    assert result["first_cpu_op"]["name"] == "QUANTIZE"


def test_edgetpu_float_model_maps_nothing():
    result = edgetpu.check(_convert(conv, int8=False))
    assert not result["passed"] and result["ops_mapped"] == 0
    assert result["macs_mapped_share"] == 0.0


@pytest.mark.parametrize("fn, op, problem", [
    (lambda x: tf.reshape(tf.reshape(conv(x), (1, 2, 4, 8, 4)) * 2.0, SHAPE), "RESHAPE",
     "more than 3 non-unit dimensions"),
    (lambda x: tf.reduce_mean(conv(x), axis=3, keepdims=True), "MEAN", "only y and/or x"),
    (lambda x: tf.pad(conv(x), [[0, 0], [1, 1], [1, 1], [0, 2]]), "PAD", "only y and/or x"),
    (lambda x: conv(x)[:, ::2, ::2, :], "STRIDED_SLICE", "all-1 strides"),
    (lambda x: tf.nn.relu(tf.nn.avg_pool2d(conv(x), 2, 2, "VALID")), "AVERAGE_POOL_2D",
     "fused activation"),
    (lambda x: conv(x, dilations=(2, 1)), "CONV_2D", "dilation 2x1"),
    (lambda x: tf.nn.softmax(tf.reshape(conv(x), (1, 16, 16))), "SOFTMAX", "not 1-D"),
])
def test_edgetpu_op_constraints(fn, op, problem):
    result = edgetpu.check(_convert(fn))
    first = result["first_cpu_op"]
    assert not result["passed"] and first["name"] == op, result["summary"]
    assert any(problem in p for p in first["problems"]), first["problems"]
    assert result["ops_mapped"] == first["op"]


def test_edgetpu_compiler_failure_and_hang_are_reported(tmp_path):
    # Not a compiler (none installs here): a binary that fails, and one that hangs.
    failing, hanging = tmp_path / "failing", tmp_path / "hanging"
    failing.write_text("#!/bin/sh\necho 'cannot compile' >&2\nexit 3\n")
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")  # killed on timeout
    for script in (failing, hanging):
        script.chmod(0o755)
    assert edgetpu.run_compiler(str(failing), "m.tflite") == {
        "returncode": 3, "compiled": False, "log": "cannot compile"}
    hung = edgetpu.run_compiler(str(hanging), "m.tflite", timeout=1)
    assert hung["returncode"] is None and "did not finish within 1 s" in hung["log"]


# ---- Android GPU: the legacy delegate's rules (android-gpu-legacy) -----------------------

@pytest.mark.parametrize("fn, shape, op", [
    (lambda x: tf.math.cumsum(x, axis=1), (1, 8), "CUMSUM"),
    (lambda x: tf.math.top_k(x, 3).values, (1, 8), "TOPK_V2"),
])
def test_gpu_rule_table_refuses_ops_the_analyzer_accepts(fn, shape, op, tmp_path):
    path = tmp_path / "model.tflite"  # from a file, so the Analyzer runs too
    path.write_bytes(_tflite(fn, shape, int8=False))
    result = android.check_gpu_legacy(litert.inspect(path))
    assert not result["passed"]
    assert result["fallback_ops"][0]["name"] == op
    assert "not in the GPU delegate's supported ops" in result["fallback_ops"][0]["why"]
    assert "looks compatible with GPU delegate" in result["analyzer_verdict"]


def test_gpu_flex_op_and_cpu_needs_select_tf_ops():
    info = _convert(lambda x: tf.linalg.det(tf.reshape(x, (1, 2, 2))), (1, 4), int8=False,
                    flex=True)
    gpu = android.check_gpu_legacy(info, with_analyzer=False)
    assert [f["name"] for f in gpu["fallback_ops"]] == ["FlexMatrixDeterminant"]
    cpu = android.check_cpu(info)
    assert not cpu["passed"] and cpu["requires_select_tf_ops"]
    assert cpu["flex_ops"] == {"FlexMatrixDeterminant": 1}
    assert android.check_cpu(info, allow_flex=True)["passed"]


@pytest.mark.parametrize("fn, shape, why", [
    (lambda x: tf.nn.depthwise_conv2d(x, tf.ones((3, 3, 4, 2)), (1, 1, 1, 1), "SAME"), SHAPE,
     "depth_multiplier 2 with 4 input channels"),
    (conv, (None, 8, 8, 4), "dynamic shape"),
    (lambda x: tf.reshape(tf.reshape(x, (1, 2, 4, 8, 4)) * 2.0, SHAPE), SHAPE, "rank 5 > 4"),
])
def test_gpu_op_constraints(fn, shape, why):
    result = android.check_gpu_legacy(_convert(fn, shape, int8=False), with_analyzer=False)
    assert not result["passed"]
    assert why in result["fallback_ops"][0]["why"], result["fallback_ops"]


def test_gpu_and_cpu_pass_a_plain_conv_net():
    info = _convert(lambda x: tf.nn.relu(conv(x)), int8=False)
    assert android.check_gpu_legacy(info)["passed"]
    cpu = android.check_cpu(info)
    assert cpu["passed"] and cpu["builtin_only"]
