"""The TF/Keras twin of the on-device step, for checks and comparisons.

The on-device `train` is: forward in inference mode (BatchNorm with its moving statistics,
no dropout), mean softmax cross-entropy over the real rows, Keras SGD/Adam update. Here the
same step runs on the Keras model itself with TF autodiff and a Keras optimiser, so gradients,
N-step trajectories and whole fine-tuning runs can be compared with the LiteRT ones.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to the batch statistics of `x` (in one
    training-mode call), so a randomly initialised model has sane inference-mode activations:
    `tfprune.pruner.reestimate_batchnorm` over the one batch `x`."""
    from tfprune.pruner import reestimate_batchnorm

    reestimate_batchnorm(model, tf.data.Dataset.from_tensors((x, np.int32(0))), 1)


def _as_float64(cfg):
    if isinstance(cfg, list):
        return [_as_float64(v) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    if cfg.get("class_name") == "DTypePolicy":
        return {**cfg, "config": {**cfg["config"], "name": "float64"}}
    return {k: "float64" if k == "dtype" and v == "float32" else _as_float64(v)
            for k, v in cfg.items()}


def float64_twin(model: keras.Model) -> keras.Model:
    """The functional `model` rebuilt from its config with every layer, input and weight in
    float64 (same weights). In float64 rounding is ~1e-16, so two formulations of the same
    gradient agree far below any float32 tie or ReLU kink: `tests/test_ondevice_grads.py`
    checks the builtin-gradient graph against TF autodiff this way for every lowering."""
    twin = keras.Model.from_config(_as_float64(model.get_config()))
    twin.set_weights([w.astype("float64") for w in model.get_weights()])
    return twin


def _loss(logits, y):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), logits))


def keras_gradients(model: keras.Model, x, y, paths: list[str]) -> dict[str, np.ndarray]:
    """TF autodiff of the on-device loss on the Keras model: {variable path: gradient}."""
    by_path = {w.path: w for w in model.weights}
    variables = [by_path[p] for p in paths]
    with tf.GradientTape() as tape:
        tape.watch([v.value for v in variables])
        loss = _loss(model(tf.constant(x), training=False), y)
    grads = tape.gradient(loss, variables)
    return {p: g.numpy() for p, g in zip(paths, grads)}


def make_optimizer(kind: str = "sgd", learning_rate: float = 0.01, momentum: float = 0.9,
                   weight_decay: float = 5e-4):
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum,
                                    weight_decay=weight_decay or None)
    return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)


class KerasStepper:
    """The on-device `train` step on the Keras model: `step(x, y) -> (loss, correct)`."""

    def __init__(self, model: keras.Model, paths: list[str], optimizer):
        by_path = {w.path: w for w in model.weights}
        self.model, self.variables, self.optimizer = model, [by_path[p] for p in paths], optimizer
        self.optimizer.build(self.variables)
        self._step = tf.function(self._raw_step)

    def _raw_step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        self.optimizer.apply(tape.gradient(loss, self.variables), self.variables)
        return loss, tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y), tf.int32))

    def step(self, x, y) -> tuple[float, int]:
        loss, correct = self._step(tf.constant(x, tf.float32), tf.constant(y, tf.int32))
        return float(loss), int(correct)

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)

    def evaluate(self, x, y, batch_size: int = 256) -> float:
        logits = self.model.predict(x, batch_size=batch_size, verbose=0)
        return float(np.mean(np.argmax(logits, -1) == y))


def keras_finetune(model: keras.Model, manifest: dict, train, test, epochs: int, schedule: str,
                   seed: int = 0, augment: bool = True, log=print) -> dict:
    """The device's fine-tuning schedule run with Keras on the same batches (same order, same
    augmentation draws), same trained variables, optimiser and frozen-BN forward."""
    from tfprune.data.arrays import normalize_np
    from tfprune.ondevice.finetune import parse_schedule, training_batches

    opt = manifest["optimizer"]
    stepper = KerasStepper(model, manifest["trainable_variables"],
                           make_optimizer(opt["kind"], opt["learning_rate"], opt["momentum"],
                                          opt["weight_decay"]))
    lr_at, history = parse_schedule(schedule), []
    x_test = normalize_np(test.x)
    initial = stepper.evaluate(x_test, test.y)
    for epoch in range(epochs):
        stepper.set_learning_rate(lr_at(epoch))
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in training_batches(train, manifest["batch_size"], seed, epoch, augment):
            loss, hit = stepper.step(x, y)
            loss_sum, correct, seen = loss_sum + loss * len(y), correct + hit, seen + len(y)
        history.append({"epoch": epoch + 1, "lr": lr_at(epoch), "loss": loss_sum / seen,
                        "train_accuracy": correct / seen,
                        "test_accuracy": stepper.evaluate(x_test, test.y)})
        log(f"keras epoch {epoch + 1}/{epochs} loss {loss_sum / seen:.4f} "
            f"test acc {history[-1]['test_accuracy']:.4f}")
    return {"initial_test_accuracy": initial, "history": history,
            "final_test_accuracy": history[-1]["test_accuracy"] if history else initial}
