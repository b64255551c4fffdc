"""Knowledge distillation for fine-tuning: a student learns from a frozen teacher's logits on
the same (augmented) batches, as a Keras model that `fit` trains.

    model = Distiller(student, teacher, alpha=0.9, temperature=4.0)
    model.compile(optimizer=...)          # loss and accuracy are built in
    model.fit(dataset)                    # trains `student`; `teacher` stays frozen

Loss = (1 - alpha) * CE(labels, student) + alpha * T^2 * KL(softmax(teacher / T) ||
softmax(student / T)), each averaged over the batch, plus, with `taps` and a
`feature_weight`, that weight times the feature maps' loss (tfprune.training.taps: the student's
maps against the teacher's at the channels it kept). Rows labelled -1 carry no label (mixed
views, transfer images): they count in the KL term only, and CE averages over labelled rows.
`with_mixed_views(ds, "mixup"|"cutmix")` appends such label-free mixed copies to every batch.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tfprune.errors import TfpruneError
from tfprune.training import taps as feature_taps

MIXES = ("none", "mixup", "cutmix")


def distill_loss(labels, student, teacher, alpha: float, temperature: float):
    """(1 - alpha) * CE + alpha * T^2 * KL (module doc); labels < 0 are unlabelled rows."""
    labels = ops.cast(labels, "int32")
    logp = ops.log_softmax(student, axis=-1)
    picked = ops.take_along_axis(logp, ops.expand_dims(ops.maximum(labels, 0), -1), axis=-1)
    labelled = ops.cast(labels >= 0, logp.dtype)
    ce = -ops.sum(picked[:, 0] * labelled) / ops.maximum(ops.sum(labelled), 1.0)
    t = float(temperature)
    log_pt = ops.log_softmax(teacher / t, axis=-1)
    kl = ops.mean(ops.sum(ops.exp(log_pt) * (log_pt - ops.log_softmax(student / t, axis=-1)),
                          axis=-1))
    return (1.0 - alpha) * ce + alpha * t * t * kl


def distill_loss_np(labels, student, teacher, alpha: float, temperature: float) -> float:
    """The same loss in float64 NumPy (the reference of the tests)."""
    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    labels = np.asarray(labels)
    student, teacher = np.float64(student), np.float64(teacher)
    rows = labels >= 0
    ce = -log_softmax(student)[rows, labels[rows]].mean() if rows.any() else 0.0
    log_pt, log_ps = log_softmax(teacher / temperature), log_softmax(student / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1).mean()
    return (1 - alpha) * ce + alpha * temperature ** 2 * kl


@keras.saving.register_keras_serializable(package="tfprune")
class LabelledAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy over the rows with a label (>= 0)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        weight = ops.cast(y_true >= 0, "float32")
        return super().update_state(ops.maximum(y_true, 0), y_pred, weight)


@keras.saving.register_keras_serializable(package="tfprune")
class Distiller(keras.Model):
    """Trains `student` on distill_loss against the frozen `teacher` (same input batches;
    frozen in place: `teacher.trainable` becomes False); calling it runs the student. Saved
    and loaded as a whole (student and teacher), so a checkpointed run resumes."""

    def __init__(self, student, teacher, alpha: float = 0.9, temperature: float = 4.0,
                 taps=(), feature_weight: float = 0.0, **kw):
        super().__init__(**kw)
        if not 0.0 <= alpha <= 1.0 or temperature <= 0 or feature_weight < 0:
            raise TfpruneError(f"distillation needs alpha in [0, 1], temperature > 0 and "
                               f"feature_weight >= 0, got alpha {alpha}, temperature "
                               f"{temperature}, feature_weight {feature_weight}")
        if student.output_shape[-1] != teacher.output_shape[-1]:
            raise TfpruneError(f"the student has {student.output_shape[-1]} classes, the teacher "
                             f"{teacher.output_shape[-1]}")
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.taps = [(str(name), [int(i) for i in kept]) for name, kept in taps]
        self.feature_weight = float(feature_weight) if self.taps else 0.0
        names = [name for name, _ in self.taps] if self.feature_weight else []
        self._student_maps = keras.Model(
            student.inputs, [student.get_layer(n).output for n in names] + [student.output])
        self._teacher_maps = keras.Model(
            teacher.inputs, [teacher.get_layer(n).output for n in names] + [teacher.output])
        self._kept = [tf.constant(kept, tf.int32) for _, kept in self.taps] if names else []
        self.built = True  # its weights are the student's and teacher's, built already

    def call(self, x, training=False):
        return self.student(x, training=training)

    def get_config(self):
        return {"student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "alpha": self.alpha, "temperature": self.temperature, "taps": self.taps,
                "feature_weight": self.feature_weight, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        return cls(student, teacher, **config)

    def train_step(self, batch):
        """One step on the whole loss (logits and feature maps from one forward pass each)."""
        x, y = batch[0], batch[1]
        teacher = _as_list(self._teacher_maps(x, training=False))
        with tf.GradientTape() as tape:
            student = _as_list(self._student_maps(x, training=True))
            loss = self._logits_loss(y, student[-1], teacher[-1])
            if self._kept:
                cut = [tf.gather(t, kept, axis=-1) for t, kept in zip(teacher, self._kept)]
                loss += self.feature_weight * feature_taps.feature_loss(student[:-1], cut)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas  # replicas sum their gradients
        weights = self.student.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, student[-1])
        return {metric.name: metric.result() for metric in self.metrics}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss `evaluate` reports: the logits' terms only."""
        return self._logits_loss(y, y_pred, self.teacher(x, training=False))

    def _logits_loss(self, y, student, teacher):
        """distill_loss on the logits plus the student's own losses (regularisers)."""
        loss = distill_loss(y, student, teacher, self.alpha, self.temperature)
        extra = self.student.losses
        return loss + ops.sum(ops.stack(extra)) if extra else loss


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def compile_distill(student, teacher, learning_rate, weight_decay: float, momentum: float = 0.9,
                    alpha: float = 0.9, temperature: float = 4.0, taps=(),
                    feature_weight: float = 0.0, ema: float = 0.0) -> Distiller:
    """`Distiller(student, teacher)` compiled with SGD (`tfprune.training.fit.sgd`: momentum,
    decoupled weight decay, optional weight EMA) and the labelled-row accuracy, for `fit`."""
    from tfprune.training.fit import sgd

    model = Distiller(student, teacher, alpha, temperature, taps, feature_weight)
    model.compile(optimizer=sgd(learning_rate, weight_decay, momentum, ema=ema),
                  metrics=[LabelledAccuracy(name="accuracy")])
    return model


def with_mixed_views(ds: tf.data.Dataset, mix: str, seed: int = 0) -> tf.data.Dataset:
    """Each (x, y) batch followed by a label-free mixed copy (y = -1): `mixup` blends every
    image with another of the batch (weight ~ U(0, 1)), `cutmix` pastes a random box of it."""
    if mix == "none":
        return ds
    if mix not in MIXES:
        raise TfpruneError(f"unknown mix {mix!r}; choose one of {', '.join(MIXES)}")
    counter = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.cast(i, tf.int64), seed + 7]))

    def add(xy, s):
        x, y = xy
        n = tf.shape(x)[0]
        seeds = tf.random.experimental.stateless_split(s, 3)
        other = tf.gather(x, tf.random.experimental.stateless_shuffle(tf.range(n), seeds[0]))
        lam = tf.random.stateless_uniform([n, 1, 1, 1], seeds[1])
        if mix == "mixup":
            mixed = lam * x + (1.0 - lam) * other
        else:
            h, w = tf.shape(x)[1], tf.shape(x)[2]
            side = tf.sqrt(1.0 - lam[:, 0, 0, 0])
            bh = tf.cast(side * tf.cast(h, tf.float32), tf.int32)
            bw = tf.cast(side * tf.cast(w, tf.float32), tf.int32)
            corner = tf.random.stateless_uniform([n, 2], seeds[2])
            top = tf.cast(corner[:, 0] * tf.cast(h - bh + 1, tf.float32), tf.int32)
            left = tf.cast(corner[:, 1] * tf.cast(w - bw + 1, tf.float32), tf.int32)
            rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
            in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])
            in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])
            box = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], x.dtype)[..., None]
            mixed = x * (1.0 - box) + other * box
        return (tf.concat([x, mixed], 0),
                tf.concat([y, tf.fill([n], tf.constant(-1, y.dtype))], 0))

    return tf.data.Dataset.zip((ds, counter)).map(add, num_parallel_calls=tf.data.AUTOTUNE)
