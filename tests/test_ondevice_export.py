"""The exported trainable .tflite in LiteRT: builtin ops only, gradients and N steps equal
TF/Keras, partial batches, bit-identical restore, filter_stats = host statistics, bad input."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from pruning_utils import real_images
from tfprune.scoring import stats
from tfprune.models import zoo
from tfprune.ondevice import UnsupportedModelError, export_trainable
from tfprune.ondevice import reference as R
from tfprune.ondevice.runtime import RuntimeInputError, TrainableRuntime

B, CLASSES, SHAPE = 4, 10, (12, 12, 3)
RNG = np.random.default_rng(1)
X = RNG.normal(size=(10, *SHAPE)).astype(np.float32)
Y = RNG.integers(0, CLASSES, 10).astype(np.int32)


def tiny_model() -> keras.Model:
    """Every layer type of the zoo in a few kilobytes: conv (bias/no bias, stride 1/2,
    same/valid, fused relu), BN, ReLU, ReLU6, depthwise, Add, MaxPool, Concatenate, Dropout,
    Flatten, Dense (relu, logits)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input(SHAPE, name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(name="bn1")(x))
    a = layers.Conv2D(8, 1, activation="relu", name="a")(x)
    b = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    b = layers.ReLU(6.0, name="r2")(layers.BatchNormalization(name="bn2")(b))
    x = layers.MaxPooling2D(2, name="pool")(layers.Add(name="add")([a, b]))
    c = layers.Conv2D(6, 3, strides=2, padding="same", name="c2")(x)
    d = layers.Conv2D(6, 2, strides=1, padding="valid", name="d")(x)     # 5x5
    d = layers.MaxPooling2D(2, padding="same", name="pool2")(d)
    x = layers.ReLU(name="r3")(layers.Concatenate(name="cat")([c, d]))
    x = layers.Flatten(name="flat")(layers.Dropout(0.5, name="drop")(x))
    x = layers.Dense(16, activation="relu", name="fc")(x)
    model = keras.Model(inp, layers.Dense(CLASSES, name="logits")(x), name="tiny")
    R.calibrate_batchnorm(model, X)
    return model


@pytest.fixture(scope="module")
def sgd_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sgd")
    export_trainable(tiny_model(), out, batch_size=B, learning_rate=0.05)
    return out


@pytest.fixture(scope="module")
def conv_lowering_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv")
    export_trainable(tiny_model(), out, batch_size=B, learning_rate=0.05, conv_impl="conv")
    return out


@pytest.fixture(scope="module")
def adam_head_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam")
    export_trainable(tiny_model(), out, batch_size=B, optimizer="adam", learning_rate=0.01,
                     trainable="head")
    return out


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet20")
    model = zoo.build("resnet20")
    R.calibrate_batchnorm(model, RNG.normal(size=(8, 32, 32, 3)).astype(np.float32))
    export_trainable(model, out, batch_size=2, learning_rate=1000.0, momentum=0.0, weight_decay=0.0)
    return out, model


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _step_gradients(rt, x, y) -> dict:
    """One LiteRT `train` step at lr = 1000: w1 = w0 - lr*wd*w0 - lr*g (SGD's first step, any
    momentum), so each trained variable's gradient g comes back out."""
    lr, wd = 1000.0, rt.manifest["optimizer"]["weight_decay"]
    rt.set_learning_rate(lr)
    w0 = rt.variables()
    rt.train_batch(x, y)
    w1 = rt.variables()
    return {p: ((1 - lr * wd) * w0[p] - w1[p]) / lr for p in rt.manifest["trainable_variables"]}


def test_manifest_lists_builtin_ops_and_signatures(sgd_dir):
    manifest = json.loads((sgd_dir / "trainable.json").read_text())
    assert manifest["flex_ops"] == {} and not manifest["flex_required"]
    # the default lowering: every conv and its gradients are BATCH_MATMULs (XNNPACK runs them)
    assert manifest["conv_impl"] == "matmul" and manifest["ops"]["BATCH_MATMUL"] >= 3
    assert "CONV_2D" not in manifest["ops"] and "TRANSPOSE_CONV" not in manifest["ops"]
    assert not any(op.startswith("Flex") for op in manifest["ops"])
    sigs = manifest["signatures"]
    assert set(sigs) == {"train", "infer", "filter_stats", "save", "restore", "set_learning_rate"}
    assert {i["name"]: i["shape"] for i in sigs["train"]["inputs"]} == {"x": [B, *SHAPE], "y": [B]}
    assert {o["name"] for o in sigs["infer"]["outputs"]} == {"logits", "probabilities"}
    assert sigs["restore"]["inputs"][0]["shape"] == [manifest["state_size"]]
    assert (sgd_dir / "trainable.tflite").stat().st_size == manifest["size_bytes"]


@pytest.mark.parametrize("lowering", ["matmul", "conv"])
def test_litert_gradients_equal_keras_autodiff(lowering, sgd_dir, conv_lowering_dir):
    """Both conv lowerings: the default (matmul) and conv (CONV_2D / TRANSPOSE_CONV)."""
    out = sgd_dir if lowering == "matmul" else conv_lowering_dir
    rt, model = TrainableRuntime(out / "trainable.tflite"), tiny_model()
    if lowering == "conv":
        assert rt.manifest["ops"]["TRANSPOSE_CONV"] >= 1 and rt.manifest["ops"]["CONV_2D"] >= 1
    ours = _step_gradients(rt, X[:B], Y[:B])
    ref = R.keras_gradients(model, X[:B], Y[:B], rt.manifest["trainable_variables"])
    assert len(ref) == len(model.trainable_weights)
    for path, g in ref.items():
        assert _rel(ours[path], g) <= 1e-4, path


def _keras_run(dir_, kind, lr, steps, head=False):
    rt, model = TrainableRuntime(dir_ / "trainable.tflite"), tiny_model()
    paths = rt.manifest["trainable_variables"]
    stepper = R.KerasStepper(model, paths, R.make_optimizer(kind, lr, 0.9, 5e-4))
    out = []
    for i in range(steps):
        n = 3 if i == steps - 1 else B                       # the last batch is partial
        xb, yb = X[i:i + n], Y[i:i + n]
        out.append((rt.train_batch(xb, yb)[0], stepper.step(xb, yb)[0]))
    ours = rt.variables()
    return out, {p: (ours[p], w.numpy()) for w in model.weights for p in [w.path] if p in paths}


@pytest.mark.parametrize("kind", ["sgd", "adam_head"])
def test_n_steps_track_keras_optimizer(kind, sgd_dir, adam_head_dir):
    """5 steps (the last a partial batch of 3) in LiteRT vs the same optimiser in Keras:
    losses within 1e-4 relative, weights within 1e-4 relative per variable."""
    dir_, opt, lr = (sgd_dir, "sgd", 0.05) if kind == "sgd" else (adam_head_dir, "adam", 0.01)
    losses, weights = _keras_run(dir_, opt, lr, 5)
    for ours, theirs in losses:
        assert abs(ours - theirs) <= 1e-4 * abs(theirs)
    assert losses[-1][0] < losses[0][0] * 1.5
    for path, (ours, theirs) in weights.items():
        assert _rel(ours, theirs) <= 1e-4, path
    if kind == "adam_head":
        assert sorted(weights) == ["logits/bias", "logits/kernel"]


def test_restore_brings_back_bit_identical_state(sgd_dir, tmp_path):
    rt = TrainableRuntime(sgd_dir / "trainable.tflite")
    rt.train_batch(X[:B], Y[:B])
    rt.set_learning_rate(0.02)
    saved_state = rt.state()
    ckpt = rt.save(tmp_path / "ckpt.npz")
    after = [rt.train_batch(X[B:2 * B], Y[B:2 * B])[0] for _ in range(2)]
    restarted = TrainableRuntime(sgd_dir / "trainable.tflite")      # a new app process
    assert not np.array_equal(restarted.state(), saved_state)
    assert restarted.restore(ckpt) == 1
    np.testing.assert_array_equal(restarted.state(), saved_state)
    assert restarted.variables()["#learning_rate"] == np.float32(0.02)
    again = [restarted.train_batch(X[B:2 * B], Y[B:2 * B])[0] for _ in range(2)]
    np.testing.assert_allclose(again, after, rtol=1e-6)


def test_filter_stats_equal_host_statistics(sgd_dir):
    rt, model = TrainableRuntime(sgd_dir / "trainable.tflite"), tiny_model()
    layers_ = rt.manifest["stats_layers"]
    assert layers_ == stats.measured_layers(stats.measure_points(model), model)
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(3)
    host = stats.collect(model, ds, layers=layers_, progress=False)
    phone = rt.channel_stats(X)                                # 10 images: 4 + 4 + 2 padded
    for name in layers_:
        h, p = host.layers[name], phone.layers[name]
        assert (p.count, p.samples) == (h.count, h.samples)
        np.testing.assert_array_equal(p.zeros, h.zeros)
        np.testing.assert_allclose(p.sum_abs, h.sum_abs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.sum_sq, h.sum_sq, rtol=1e-5, atol=1e-6)
        for crit in ("act_l1", "act_l2", "apoz"):
            np.testing.assert_allclose(p.score(crit), h.score(crit), rtol=1e-5, atol=1e-7)


def test_infer_matches_keras(sgd_dir):
    rt, model = TrainableRuntime(sgd_dir / "trainable.tflite"), tiny_model()
    np.testing.assert_allclose(rt.logits(X), model.predict(X, verbose=0), rtol=1e-4, atol=1e-4)
    probs = rt.runners["infer"](x=X[:B])["probabilities"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_bad_input_gets_clear_errors(sgd_dir, resnet_dir, tmp_path):
    rt = TrainableRuntime(sgd_dir / "trainable.tflite")
    with pytest.raises(RuntimeInputError, match=r"do not fit .*expected \(N, 12, 12, 3\)"):
        rt.train_batch(np.zeros((B, 32, 32, 3), np.float32), Y[:B])
    with pytest.raises(RuntimeInputError, match="exceeds the exported batch size 4"):
        rt.train_batch(X[:6], Y[:6])
    with pytest.raises(RuntimeInputError, match=r"labels \[-1, 10\] are out of range \[0, 10\)"):
        rt.train_batch(X[:B], np.array([0, 10, -1, 2]))
    with pytest.raises(RuntimeInputError, match="float32"):
        rt.logits(X.astype(np.float64))
    other = TrainableRuntime(resnet_dir[0] / "trainable.tflite").save(tmp_path / "r20.npz")
    with pytest.raises(RuntimeInputError, match="belongs to another model \\(resnet20"):
        rt.restore(other)
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeInputError, match="not a tfprune on-device checkpoint"):
        rt.restore(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="trainable='last:x'"):
        export_trainable(tiny_model(), tmp_path, batch_size=B, trainable="last:x")


def test_layer_without_builtin_rule_falls_back_to_flex_with_warning(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU(negative_slope=0.1, name="leaky")(layers.Conv2D(4, 3, padding="same")(inp))
    model = keras.Model(inp, layers.Dense(5)(layers.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match="leaky: leaky/thresholded ReLU.*Flex runtime"):
        manifest = export_trainable(model, tmp_path, batch_size=2)
    assert manifest["flex_required"] and "FlexLeakyReluGrad" in manifest["flex_ops"]
    assert manifest["flex_layers"] == ["leaky: leaky/thresholded ReLU uses TF autodiff"]
    assert "train" in manifest["signatures"]
    with pytest.raises(RuntimeInputError, match="needs the Flex runtime \\(FlexLeakyReluGrad"):
        TrainableRuntime(tmp_path / "trainable.tflite")
    with pytest.raises(UnsupportedModelError, match="needs Flex ops .*leaky"), pytest.warns(UserWarning):
        export_trainable(model, tmp_path / "strict", batch_size=2, allow_flex=False)


def test_resnet20_builtin_only_and_gradients_equal_autodiff(resnet_dir):
    out, model = resnet_dir
    rt = TrainableRuntime(out / "trainable.tflite")
    assert rt.manifest["flex_ops"] == {}
    x = RNG.normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = np.array([5, 77], np.int32)
    ours = _step_gradients(rt, x, y)
    ref = R.keras_gradients(model, x, y, rt.manifest["trainable_variables"])
    assert len(ref) == len(model.trainable_weights) == 65
    errors = {p: _rel(ours[p], g) for p, g in ref.items()}
    assert max(errors.values()) <= 1e-4, max(errors, key=errors.get)


def test_trainable_selection_all_head_last_n():
    from tfprune.ondevice import TrainingModule
    model = tiny_model()
    pick = lambda spec: TrainingModule(model, B, trainable=spec).trained_paths
    assert pick("head") == ["logits/kernel", "logits/bias"]
    assert pick("last:2") == pick(2) == ["fc/kernel", "fc/bias", "logits/kernel", "logits/bias"]
    assert len(pick("all")) == len(model.trainable_weights)
    assert "bn1/moving_mean" not in pick("all")


def test_depthwise_multiplier_falls_back_to_flex_naming_the_layer(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(inp)
    model = keras.Model(inp, layers.Dense(5)(layers.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match="dw2: DepthwiseConv2D with depth_multiplier 2"):
        manifest = export_trainable(model, tmp_path, batch_size=2)
    assert manifest["flex_required"] and manifest["flex_layers"] == [
        "dw2: DepthwiseConv2D with depth_multiplier 2 uses TF autodiff"]


def test_sequential_model_exports_and_trains_like_keras(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input(SHAPE), layers.Conv2D(4, 3, strides=2, name="c"),
                              layers.BatchNormalization(name="bn"), layers.ReLU(name="r"),
                              layers.Flatten(name="f"), layers.Dense(CLASSES, name="logits")],
                             name="seq")
    R.calibrate_batchnorm(model, X)
    manifest = export_trainable(model, tmp_path, batch_size=B, learning_rate=1000.0,
                                momentum=0.0, weight_decay=0.0)
    assert manifest["trainable_variables"][0] == "seq/c/kernel" and manifest["flex_ops"] == {}
    ours = _step_gradients(TrainableRuntime(tmp_path / "trainable.tflite"), X[:B], Y[:B])
    ref = R.keras_gradients(model, X[:B], Y[:B], manifest["trainable_variables"])
    assert len(ref) == len(model.trainable_weights) == 6
    for path, g in ref.items():
        assert _rel(ours[path], g) <= 1e-4, path


def test_unsupported_models_are_refused_naming_the_layer(tmp_path):
    inp = keras.Input((8, 8, 3))
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    twice = keras.Model(inp, layers.Flatten()(shared(shared(inp))))
    inner = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(3, 3, padding="same")],
                             name="inner")
    nested_twice = keras.Model(inp, layers.Flatten()(inner(inner(inp))))
    op = keras.Model(inp, layers.Flatten()(layers.Conv2D(3, 3, name="c")(inp) + 3.0))
    for model, message in ((twice, "'shared' is called 2 times"),
                           (nested_twice, "nested model 'inner' is called 2 times"),
                           (op, r"is a Keras op \(keras.src.ops.*Add\) called on a tensor")):
        with pytest.raises(UnsupportedModelError, match=message):
            export_trainable(model, tmp_path, batch_size=2)


def test_nested_model_exported_flat(tmp_path):
    """A keras.applications-style transfer model (a Functional base called with
    training=False inside a functional model) exports flattened; inference in LiteRT equals
    Keras on real images."""
    x_in = keras.Input(SHAPE)
    x = layers.Conv2D(8, 3, name="c")(x_in)
    x = layers.ReLU(name="r")(layers.BatchNormalization(name="bn")(x))
    base = keras.Model(x_in, layers.GlobalAveragePooling2D(name="pool")(x), name="base")
    inp = keras.Input(SHAPE, name="image")
    model = keras.Model(inp, layers.Dense(CLASSES, name="logits")(base(inp, training=False)))
    R.calibrate_batchnorm(model, X)
    manifest = export_trainable(model, tmp_path, batch_size=B)
    assert manifest["flattened"].startswith("nested model base flattened")
    images = real_images(SHAPE, B)
    runtime = TrainableRuntime(tmp_path / "trainable.tflite")
    np.testing.assert_allclose(runtime.logits(images), np.asarray(model(images)), rtol=1e-4,
                               atol=1e-4)
