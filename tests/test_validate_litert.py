"""tfprune.litert.model_file: op listing, Flex detection, I/O specs, and clear errors for bad files."""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import litert


def _convert(fn, spec, flex=False) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(fn, input_signature=[spec]).get_concrete_function()])
    if flex:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                          tf.lite.OpsSet.SELECT_TF_OPS]
    return conv.convert()


@pytest.fixture(scope="module")
def cumsum_model() -> bytes:
    return _convert(lambda x: tf.nn.relu(tf.math.cumsum(x, axis=1)) + 1.0,
                    tf.TensorSpec((1, 8), tf.float32))


@pytest.fixture(scope="module")
def flex_model() -> bytes:
    return _convert(lambda x: tf.linalg.det(tf.reshape(x, (1, 2, 2))),
                    tf.TensorSpec((1, 4), tf.float32), flex=True)


def test_op_counts_and_specs(cumsum_model, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(cumsum_model)
    assert litert.op_counts(path) == {"ADD": 1, "CUMSUM": 1, "RELU": 1}
    assert litert.flex_ops(path) == {}
    info = litert.inspect(cumsum_model)
    assert info.inputs[0].shape == (1, 8) and info.inputs[0].dtype == "float32"
    assert info.size_bytes == len(cumsum_model)
    interp = litert.load_interpreter(path)
    io = litert.io_details(interp)
    assert io["inputs"][0]["shape"] == [1, 8] and io["outputs"][0]["dtype"] == "float32"
    x = np.arange(8, dtype=np.float32)[None] - 3
    np.testing.assert_allclose(litert.run(interp, x), np.maximum(np.cumsum(x, 1), 0) + 1)


def test_flex_ops_listed_and_load_names_flex(flex_model):
    assert litert.flex_ops(flex_model) == {"FlexMatrixDeterminant": 1}
    with pytest.raises(litert.TFLiteFileError, match="Flex.*FlexMatrixDeterminant"):
        litert.load_interpreter(flex_model)


def test_bad_files_are_clear_errors(cumsum_model, tmp_path):
    with pytest.raises(litert.TFLiteFileError, match="does not exist"):
        litert.inspect(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("hello, not a model")
    with pytest.raises(litert.TFLiteFileError, match="not a TFLite model"):
        litert.op_counts(text)
    with pytest.raises(litert.TFLiteFileError, match="corrupt|no subgraph"):
        litert.inspect(cumsum_model[:len(cumsum_model) // 3])
