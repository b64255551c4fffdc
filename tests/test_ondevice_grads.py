"""Builtin-only custom gradients equal TF autodiff: per op, and per variable on every zoo model."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune.models import zoo
from tfprune.ondevice import TrainingModule
from tfprune.ondevice import grads as G
from tfprune.ondevice import reference as R
from tfprune.ondevice.forward import LayerGraph

RNG = np.random.default_rng(0)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-30))


def _check(custom, ref, *arrays):
    args = [tf.constant(a) for a in arrays]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(args)
        yc, yr = custom(*args), ref(*args)
        dy = tf.constant(RNG.normal(size=yc.shape).astype(np.float32))
        lc, lr = tf.reduce_sum(yc * dy), tf.reduce_sum(yr * dy)
    np.testing.assert_allclose(yc.numpy(), yr.numpy(), rtol=1e-5, atol=1e-5)
    for gc, gr in zip(tape.gradient(lc, args), tape.gradient(lr, args)):
        assert _rel(gc, gr) <= 1e-5


CONV_CASES = [(8, 3, 1, "same"), (8, 3, 2, "same"), (9, 3, 2, "same"), (8, 1, 2, "same"),
              (8, 1, 1, "same"), (9, 5, 1, "same"), (8, 3, 1, "valid"), (9, 3, 2, "valid"),
              (11, 3, 3, "same"), (12, 5, 2, "same"), (10, 2, 2, "valid")]


@pytest.mark.parametrize("size,k,s,pad", CONV_CASES)
def test_conv_and_depthwise_gradients(size, k, s, pad):
    x = RNG.normal(size=(3, size, size, 4)).astype(np.float32)
    _check(lambda x, w: G.conv2d(x, w, (s, s), pad),
           lambda x, w: tf.nn.conv2d(x, w, s, pad.upper()),
           x, RNG.normal(size=(k, k, 4, 5)).astype(np.float32))
    _check(lambda x, w: G.depthwise_conv2d(x, w, (s, s), pad),
           lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, s, s, 1], pad.upper()),
           x, RNG.normal(size=(k, k, 4, 1)).astype(np.float32))


@pytest.mark.parametrize("size,pad,pool", [(8, "valid", (2, 2)), (9, "valid", (2, 2)),
                                           (9, "same", (2, 2)), (10, "same", (3, 3)),
                                           (9, "valid", (2, 3))])
def test_max_pool_gradient_goes_to_first_max_like_tf(size, pad, pool):
    x = np.maximum(RNG.normal(size=(2, size, size, 3)).astype(np.float32), 0)  # many ties at 0
    x[0, :2, :2, 0] = 1.0                                                   # a tie at a max
    _check(lambda x: G.max_pool(x, pool, pad),
           lambda x: tf.nn.max_pool2d(x, pool, pool, pad.upper()), x)


def test_activation_pool_dense_gradients():
    x = RNG.normal(size=(2, 5, 5, 3)).astype(np.float32) * 4
    x[0, 0, 0] = [0.0, 6.0, -0.0]                       # the kinks: no gradient, as TF
    _check(G.relu, tf.nn.relu, x)
    _check(lambda x: G.relu(x, 6.0), tf.nn.relu6, x)
    for ours, ref in ((G.relu, tf.nn.relu), (lambda t: G.relu(t, 6.0), tf.nn.relu6)):
        xs = tf.constant(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xs)
            yo, yr = ours(xs), ref(xs)
        np.testing.assert_array_equal(tape.gradient(yo, xs), tape.gradient(yr, xs))
    _check(G.global_avg_pool, lambda x: tf.reduce_mean(x, [1, 2]), x)
    _check(G.dense, tf.matmul, RNG.normal(size=(3, 7)).astype(np.float32),
           RNG.normal(size=(7, 5)).astype(np.float32))
    _check(G.bias_add, tf.nn.bias_add, x, RNG.normal(size=(3,)).astype(np.float32))


def test_cross_entropy_ignores_padding_rows():
    logits = RNG.normal(size=(4, 6)).astype(np.float32)
    labels = tf.constant([1, 5, -1, -1])
    _check(lambda l: G.softmax_cross_entropy(l, labels)[0],
           lambda l: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:2], l[:2])),
           logits)


def _zoo_model_and_batch(name, seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = zoo.build(name)
    R.calibrate_batchnorm(model, rng.normal(size=(8, 32, 32, 3)).astype(np.float32))
    return model, rng.normal(size=(2, 32, 32, 3)), np.array([3, 97], np.int32)


@pytest.mark.parametrize("impl", ["conv", "matmul"])
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_gradients_equal_keras_autodiff_in_float64(name, impl):
    """The builtin-gradient graph of every zoo model, with either conv lowering, equals TF
    autodiff on the Keras model (inference mode: frozen BN, no dropout) for every trained
    variable, computed in float64: far below the issue's 1e-4 bar (measured <= 4e-15), for
    any seed. Float32 cannot show this for every seed (see the next test)."""
    model, x, y = _zoo_model_and_batch(name, seed=0)
    twin = R.float64_twin(model)
    paths = [w.path for w in twin.trainable_weights]
    ref = R.keras_gradients(twin, x, y, paths)
    graph = LayerGraph.from_model(twin, impl)
    params = {w.path: tf.constant(w.numpy()) for w in twin.weights}
    with tf.GradientTape() as tape:
        tape.watch([params[p] for p in paths])
        loss, _ = G.softmax_cross_entropy(graph.run(tf.constant(x), params)[0], tf.constant(y))
    errors = {p: _rel(g, ref[p]) for p, g in zip(paths, tape.gradient(loss, [params[p] for p in paths]))}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-10, (worst, errors[worst])
    assert not graph.flex_layers


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_float32_gradients_as_accurate_as_keras(name, seed=int(os.environ.get("TFPRUNE_TEST_SEED", 0))):
    """As exported (float32, default lowering), against the exact gradient (float64 autodiff):
    our largest per-variable error is at most 1e-4, or 10x TF autodiff's own float32 error.
    Why not "within 1e-4 of float32 TF autodiff": deep randomly initialised nets amplify
    rounding (BN calibrated on 8 images leaves channels with tiny variance; near-ties at ReLU
    and max-pool kinks go either way), and two float32 computations of the same conv differ by
    ~1e-7. Measured (scratch run, seeds 0-3, max over variables, ours / TF float32 vs exact):
    MobileNetV2 2.5e-2 / 2.6e-2, 3.8e-3 / 3.4e-3, 2.3e-2 / 2.5e-2, 1.3e-5 / 7.9e-3; ResNet-56
    5e-6 / 7.3e-4, 7.9e-6 / 1.9e-4, 1.5e-2 / 3.5e-3, 5.7e-6 / 8.6e-3; AlexNet seed 0 8e-7 /
    7.7e-4 (one max-pool window, 0.5708851 vs 0.5708862 in ours, decided the other way by TF);
    ResNet-20, SqueezeNet and the other AlexNet seeds <= 5e-6 for both. Ours is the closer of
    the two in 17 of 20 cases. TRUE equality of the math: the float64 test above. The seed can
    be changed with TFPRUNE_TEST_SEED."""
    model, x, y = _zoo_model_and_batch(name, seed)
    x = x.astype(np.float32)
    module = TrainingModule(model, batch_size=2)
    _, _, grads = module.loss_and_grads(tf.constant(x), tf.constant(y))
    ours = dict(zip(module.trained_paths, grads))
    keras32 = R.keras_gradients(model, x, y, module.trained_paths)
    exact = R.keras_gradients(R.float64_twin(model), x.astype(np.float64), y, module.trained_paths)
    assert len(exact) == len(model.trainable_weights)
    ours_err = max(_rel(ours[p], exact[p]) for p in exact)
    keras_err = max(_rel(keras32[p], exact[p]) for p in exact)
    assert ours_err <= max(1e-4, 10 * keras_err), (ours_err, keras_err)
    assert not module.graph.flex_layers
