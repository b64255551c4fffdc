"""Optimiser update rules over tf.Variables, written to match Keras 3 step for step.

SGD: decoupled weight decay `w -= lr * wd * w`, then `m = momentum * m - lr * g; w += m`
(Keras `SGD(momentum=..., weight_decay=...)`). Adam: Keras `Adam(weight_decay=...)` with bias
correction folded into the step size. Only builtin TFLite ops (MUL, ADD, SQRT, POW, DIV).
"""
from __future__ import annotations

import tensorflow as tf

from tfprune.errors import TfpruneError

OPTIMIZERS = ("sgd", "adam")


class Optimizer(tf.Module):
    """Slots and hyper-parameters; `apply(grads, variables)` performs one update."""

    def __init__(self, kind: str, variables: list[tf.Variable], learning_rate: float,
                 momentum: float = 0.9, weight_decay: float = 0.0, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(name="optimizer")
        if kind not in OPTIMIZERS:
            raise TfpruneError(f"optimizer {kind!r} is not one of {', '.join(OPTIMIZERS)}")
        self.kind, self.momentum, self.weight_decay = kind, float(momentum), float(weight_decay)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="learning_rate")
        self.iterations = tf.Variable(0.0, trainable=False, name="iterations")
        names = ("momentum",) if kind == "sgd" and momentum else ("m", "v") if kind == "adam" else ()
        self.slot_names = names
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False, name=f"{v.name.split(':')[0]}_{n}")
                       for v in variables] for n in names]

    def slot_variables(self) -> list[tuple[str, int, tf.Variable]]:
        """(slot name, index of its model variable, slot variable) for every slot."""
        return [(n, i, v) for n, vs in zip(self.slot_names, self.slots) for i, v in enumerate(vs)]

    def apply(self, grads, variables):
        lr = self.learning_rate.read_value()
        if self.weight_decay:
            for v in variables:
                v.assign_sub(v * (self.weight_decay * lr))
        if self.kind == "sgd":
            for i, (g, v) in enumerate(zip(grads, variables)):
                if self.momentum:
                    m = self.slots[0][i]
                    m.assign(m * self.momentum - g * lr)
                    v.assign_add(m)
                else:
                    v.assign_sub(g * lr)
        else:
            t = self.iterations + 1.0
            alpha = lr * tf.sqrt(1.0 - tf.pow(self.beta_2, t)) / (1.0 - tf.pow(self.beta_1, t))
            for i, (g, v) in enumerate(zip(grads, variables)):
                m, s = self.slots[0][i], self.slots[1][i]
                m.assign_add((g - m) * (1.0 - self.beta_1))
                s.assign_add((g * g - s) * (1.0 - self.beta_2))
                v.assign_sub(m * alpha / (tf.sqrt(s) + self.epsilon))
        self.iterations.assign_add(1.0)
