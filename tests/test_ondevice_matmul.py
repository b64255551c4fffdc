"""The "matmul" Conv2D lowering (BATCH_MATMULs, for XNNPACK): gradients equal TF
autodiff, and an exported model trains in LiteRT with XNNPACK like Keras."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras
from tfprune import litert
from tfprune.ondevice import export_trainable
from tfprune.ondevice import grads as G
from tfprune.ondevice import reference as R
from tfprune.ondevice.runtime import TrainableRuntime

RNG = np.random.default_rng(4)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("size,k,s,pad", [(8, 3, 1, "same"), (9, 3, 2, "same"), (10, 3, 2, "same"),
                                          (7, 1, 2, "same"), (9, 5, 1, "same"), (8, 2, 1, "valid"),
                                          (9, 3, 2, "valid"), (11, 3, 3, "same"), (8, 1, 1, "same"),
                                          (10, 7, 1, "same"), (9, 2, 1, "same"), (8, (1, 3), 1, "same"),
                                          (9, (3, 1), 1, "valid"), (9, (5, 2), 1, "same"),
                                          (12, 2, 2, "valid"), (13, 5, 2, "same"), (9, 1, 3, "valid")])
def test_matmul_conv_gradients_equal_tf(size, k, s, pad):
    """Every path: shifted rows (stride 1; square or not, 7 wide: stepped concatenation),
    strided through SPACE_TO_DEPTH (k < s, k = s, k > s, k not a multiple of s), 1x1."""
    kh, kw = (k, k) if isinstance(k, int) else k
    x = tf.constant(RNG.normal(size=(2, size, size, 3)).astype(np.float32))
    w = tf.constant(RNG.normal(size=(kh, kw, 3, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        ours, ref = G.conv2d(x, w, (s, s), pad, impl="matmul"), tf.nn.conv2d(x, w, s, pad.upper())
        dy = tf.constant(RNG.normal(size=ref.shape).astype(np.float32))
        lo, lr = tf.reduce_sum(ours * dy), tf.reduce_sum(ref * dy)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(tape.gradient(lo, [x, w]), tape.gradient(lr, [x, w])):
        assert _rel(a, b) <= 1e-5


def test_conv_impl_names_are_checked():
    assert G.check_conv_impl("matmul") == G.DEFAULT_CONV_IMPL
    with pytest.raises(ValueError, match="conv_impl 'gemm'"):
        G.conv2d(tf.zeros([1, 4, 4, 2]), tf.zeros([3, 3, 2, 2]), impl="gemm")


def test_matmul_export_trains_like_keras_in_litert_with_xnnpack(tmp_path):
    keras.utils.set_random_seed(5)
    inp = keras.Input((10, 10, 3))
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inp)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.Conv2D(8, 1, name="c3")(x)
    model = keras.Model(inp, layers.Dense(5, name="logits")(layers.Flatten()(x)), name="mm")
    xs = RNG.normal(size=(8, 10, 10, 3)).astype(np.float32)
    ys = RNG.integers(0, 5, 8).astype(np.int32)
    R.calibrate_batchnorm(model, xs)
    manifest = export_trainable(model, tmp_path, batch_size=4, conv_impl="matmul")
    assert manifest["conv_impl"] == "matmul" and manifest["flex_ops"] == {}
    assert manifest["ops"]["BATCH_MATMUL"] >= 3 and "CONV_2D" not in manifest["ops"]
    # XNNPACK's CONCATENATION takes at most 5 inputs (wider kernels concatenate in steps)
    concat = [len(op.inputs) for op in litert.inspect(tmp_path / "trainable.tflite").ops
              if op.name == "CONCATENATION" and len(op.outputs[0].shape) == 3]
    assert concat and max(concat) <= G.XNNPACK_MAX_CONCAT
    rt = TrainableRuntime(tmp_path / "trainable.tflite", xnnpack=True)
    lr, wd = 1000.0, manifest["optimizer"]["weight_decay"]
    rt.set_learning_rate(lr)
    w0 = rt.variables()
    rt.train_batch(xs[:4], ys[:4])
    w1 = rt.variables()
    ref = R.keras_gradients(model, xs[:4], ys[:4], manifest["trainable_variables"])
    for path, g in ref.items():
        assert _rel(((1 - lr * wd) * w0[path] - w1[path]) / lr, g) <= 1e-4, path
