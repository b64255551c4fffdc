"""Keras training runs: SGD with momentum and weight decay, learning-rate schedules by epoch,
per-epoch atomic checkpoints that a stopped run resumes from, and a CSV log. A run whose loss
turns NaN or infinite stops at once with `TrainingDiverged`, before anything of it is saved
(a resumable run keeps its last good checkpoint)."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import keras

from tfprune.errors import LossWatch, TfpruneError, TrainingDiverged
from tfprune.fileio import atomic_write, atomic_write_text
from tfprune.training.schedules import schedule_points

CHECKPOINT = "checkpoint.keras"
STATE = "state.json"
LOG = "log.csv"
VALIDATIONS = 6  # val-split passes per fine-tune: each costs ~0.4 s of a ~1.2 s sample epoch


def step_schedule(spec: str, steps_per_epoch: int, gamma: float = 0.1):
    """The paper's schedule string `epoch:lr,...` (lr -1 = multiply the last lr by `gamma`)
    as a step-wise piecewise-constant Keras schedule."""
    points = schedule_points(spec, gamma)
    if len(points) == 1:
        return points[0][1]
    # PiecewiseConstantDecay switches after a boundary step; iteration e*steps starts epoch e.
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [e * steps_per_epoch - 1 for e, _ in points[1:]], [v for _, v in points])


def validation_every(epochs: int, times: int = VALIDATIONS) -> int:
    """The shortest period in epochs that divides `epochs` and validates at most `times`
    times, so that the last epoch is always validated."""
    return next(d for d in range(1, max(epochs, 1) + 1)
                if epochs % d == 0 and epochs // d <= times)


def cosine_schedule(peak: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0):
    """Linear warm-up to `peak`, then cosine decay to zero at the end of `epochs`."""
    warmup = min(warmup_epochs, epochs // 2) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak, epochs * steps_per_epoch - warmup,
        warmup_target=peak if warmup else None, warmup_steps=warmup)


def sgd(learning_rate, weight_decay: float, momentum: float = 0.9, nesterov: bool = False,
        ema: float = 0.0):
    """SGD with momentum and decoupled weight decay; with `ema` in (0, 1), Keras keeps an
    exponential moving average of the weights (that momentum per step), which replaces the
    weights when `fit` ends."""
    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay or None, use_ema=ema > 0,
                                ema_momentum=ema if ema > 0 else 0.99)


def compile_sgd(model: keras.Model, learning_rate, weight_decay: float, momentum: float = 0.9,
                nesterov: bool = False, ema: float = 0.0) -> keras.Model:
    """Compile for 100-way logits with SGD (`sgd`)."""
    optimizer = sgd(learning_rate, weight_decay, momentum, nesterov, ema)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


FINETUNE_BN_MOMENTUM = 0.9


def batchnorm_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batchnorm_layers(layer))
    return found


def set_batchnorm_momentum(model: keras.Model, momentum: float | None) -> list[float]:
    """Every BatchNorm of `model` at `momentum` (None: left as is); returns the old values."""
    bns = batchnorm_layers(model)
    saved = [bn.momentum for bn in bns]
    if momentum is not None:
        for bn in bns:
            bn.momentum = float(momentum)
    return saved


@contextlib.contextmanager
def batchnorm_momentum(model: keras.Model, momentum: float | None):
    """Every BatchNorm of `model` at `momentum` inside the block, restored after (None: as is).
    Keras's default 0.99 averages over ~100 steps, longer than a short fine-tune: the moving
    statistics would still describe the model before it; PyTorch's default is 0.9."""
    saved = set_batchnorm_momentum(model, momentum)
    try:
        yield
    finally:
        for bn, m in zip(batchnorm_layers(model), saved):
            bn.momentum = m


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise `TrainingDiverged` at the first batch whose loss diverged (`LossWatch`: NaN,
    infinite or a blow-up). `kept` says what the caller keeps (appended to the message)."""

    def __init__(self, kept: str = "nothing of this run was saved"):
        super().__init__()
        self.kept, self.epoch, self.watch = kept, 0, LossWatch()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if self.watch.diverged(loss):
            raise TrainingDiverged(
                f"training diverged: loss {loss:.4g} at epoch {self.epoch + 1}, batch "
                f"{batch + 1} (is the learning rate too high?); {self.kept}")


def finetune(model: keras.Model, train_images, epochs: int, peak_lr: float,
             weight_decay: float = 5e-4, batch_size: int = 64, seed: int = 0,
             val_images=None, verbose: int = 2, bn_momentum: float | None = FINETUNE_BN_MOMENTUM,
             teacher: keras.Model | None = None, distill_alpha: float = 0.9,
             distill_temperature: float = 4.0, mix: str = "none",
             transfer_images=None, taps=(), feature_weight: float = 0.0,
             ema: float = 0.0, warmup_epochs: int = 0) -> dict:
    """Fine-tune a (pruned) model on `train_images` (tfprune.data.Images): SGD with momentum,
    cosine schedule from `peak_lr`, CIFAR augmentation, BatchNorm momentum `bn_momentum`
    during the run (`batchnorm_momentum`); returns the Keras history. Raises
    `TrainingDiverged` at a non-finite loss (the model's weights are then not to be used).

    With a `teacher` (same classes as `model`) the loss is distillation
    (tfprune.training.distill): the teacher sees the same augmented batches, `mix` adds
    label-free mixup/cutmix views of each batch, and `transfer_images` (Images, labels
    ignored) join the training images without labels; `taps` (tfprune.training.taps) with a
    `feature_weight` add the feature maps' loss. `ema` > 0: the weights end as their moving
    average over the run's steps (`sgd`). `warmup_epochs`: the rate rises linearly from 0 to
    `peak_lr` over these first epochs (`cosine_schedule`). `val_images` are evaluated
    `VALIDATIONS` times at most, the last epoch always (`validation_every`). 0 epochs
    train nothing (an empty history)."""
    from tfprune import data
    from tfprune.training import distill

    if teacher is None and (mix != "none" or transfer_images is not None):
        raise TfpruneError("mixed views and transfer images have no labels: they need a teacher")
    if teacher is None and feature_weight > 0 and taps:
        raise TfpruneError("feature distillation compares with a teacher's maps: it needs one")
    if epochs == 0:
        return {}
    if transfer_images is not None and len(transfer_images):
        import numpy as np
        train_images = data.Images(
            np.concatenate([train_images.x, transfer_images.x]),
            np.concatenate([train_images.y, np.full(len(transfer_images), -1,
                                                    train_images.y.dtype)]))
    steps = -(-len(train_images) // batch_size)
    schedule = cosine_schedule(peak_lr, epochs, steps, warmup_epochs)
    trained = model
    if teacher is not None:
        trained = distill.compile_distill(model, teacher, schedule, weight_decay, 0.9,
                                          distill_alpha, distill_temperature, taps,
                                          feature_weight, ema)
    else:
        compile_sgd(model, schedule, weight_decay, ema=ema)
    ds = distill.with_mixed_views(
        data.as_dataset(train_images, batch_size, training=True, seed=seed), mix, seed)
    val = data.as_dataset(val_images, 256) if val_images is not None else None
    with batchnorm_momentum(model, bn_momentum):
        return trained.fit(ds, validation_data=val, epochs=epochs, verbose=verbose,
                           validation_freq=validation_every(epochs),
                           callbacks=[StopOnNonFinite()],
                           shuffle=False).history  # the dataset shuffles itself


class _EvaluateEach(keras.callbacks.Callback):
    """Adds `<name>_accuracy` / `<name>_loss` for extra datasets to each epoch's logs."""

    def __init__(self, datasets: dict):
        super().__init__()
        self.datasets = datasets

    def on_epoch_end(self, epoch, logs=None):
        for name, ds in self.datasets.items():
            loss, acc = self.model.evaluate(ds, verbose=0)[:2]
            logs[f"{name}_loss"], logs[f"{name}_accuracy"] = loss, acc


class _Checkpoint(keras.callbacks.Callback):
    """Saves model + optimizer state and the run state atomically after every epoch."""

    def __init__(self, workdir: Path, started: float, elapsed: float):
        super().__init__()
        self.workdir, self.started, self.elapsed = workdir, started, elapsed

    def on_epoch_end(self, epoch, logs=None):
        atomic_save(self.model, self.workdir / CHECKPOINT)
        state = {"epochs_done": epoch + 1,
                 "wall_seconds": self.elapsed + time.time() - self.started}
        atomic_write_text(self.workdir / STATE, json.dumps(state))


def top1(model: keras.Model, images, batch_size: int = 256):
    """The model's top-1 class for each of `images` (tfprune.data.Images), in order, in eager
    batches: no compile, nothing to trace, and the model is left as it was."""
    import numpy as np

    from tfprune import data

    if not len(images):
        return np.zeros(0, np.int64)
    return np.concatenate([np.argmax(model(x, training=False), -1)
                           for x, _ in data.as_dataset(images, batch_size)])


def accuracy(model: keras.Model, images, batch_size: int = 256) -> float:
    """Top-1 accuracy on `images` (`top1`); 0 for no images."""
    hits = int((top1(model, images, batch_size) == images.y).sum())
    return hits / max(1, len(images))


def atomic_save(model: keras.Model, path: Path, optimizer: bool = True) -> None:
    """`model.save` to a temp file beside `path`, then rename over it. `optimizer=False` ships
    an uncompiled copy: the weights, no optimizer slots and no compile config (loading one
    compiled would rebuild an optimizer and warn that the file has none of its variables)."""
    if not optimizer:
        shipped = keras.models.clone_model(model)
        shipped.set_weights(model.get_weights())
        model = shipped
    atomic_write(path, model.save, Path(path).suffix)


class EpochLog(keras.callbacks.Callback):
    """One CSV row per epoch (`epoch` and every key of the epoch's logs; NA where a row lacks
    a column), appended to `path`. A resumed run can log other keys than the run it resumes
    (Keras's CSVLogger then writes rows that do not match the header): a row with a new key
    rewrites the file (atomically) with that column added."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        import csv
        import io
        row = {"epoch": epoch, **{k: _csv_value(v) for k, v in (logs or {}).items()}}
        old = list(csv.DictReader(io.StringIO(self.path.read_text()))) \
            if self.path.exists() else []
        header = list(old[0]) if old else []
        if old and set(row) <= set(header):
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, header, restval="NA").writerow(row)
            return
        header += [k for k in row if k not in header]
        out = io.StringIO()
        writer = csv.DictWriter(out, header, restval="NA")
        writer.writeheader()
        writer.writerows(old + [row])
        atomic_write_text(self.path, out.getvalue())


def _csv_value(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _trim_log(path: Path, epochs_done: int) -> None:
    """Keep the CSV log's rows of the epochs the checkpoint holds: a fresh start (no
    checkpoint) empties it, and an epoch logged but killed before its checkpoint goes."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [r for r in lines[1:] if int(r.split(",", 1)[0]) < epochs_done]
    if epochs_done == 0:
        path.unlink()
    elif keep != lines:
        atomic_write_text(path, "".join(keep))


def fit_resumable(build_compiled, train_ds, epochs: int, workdir, val_ds=None,
                  extra_eval: dict | None = None, verbose: int = 2, schedule=None,
                  callbacks=()):
    """Train for `epochs`, resuming from `workdir`'s checkpoint when one exists.

    `build_compiled()` makes the compiled model for a fresh start; a resumed run loads model
    and optimizer state from the checkpoint instead, and then follows `schedule` (a learning
    rate schedule over optimizer steps) when given, so a run resumed with a different length
    continues on the schedule of its new length. `callbacks` run after the extra evaluation
    and before the CSV log, so keys they add to an epoch's logs are logged too.
    Returns (model, state dict).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state = {"epochs_done": 0, "wall_seconds": 0.0}
    if (workdir / CHECKPOINT).exists() and (workdir / STATE).exists():
        state = json.loads((workdir / STATE).read_text())
        model = keras.models.load_model(workdir / CHECKPOINT)
        if schedule is not None:
            model.optimizer.learning_rate = schedule
    else:
        model = build_compiled()
    _trim_log(workdir / LOG, state["epochs_done"])
    if state["epochs_done"] < epochs:
        kept = (f"nothing of the diverged epoch was saved; {workdir / CHECKPOINT} holds the "
                "last epoch that finished, if any")
        callbacks = [StopOnNonFinite(kept), _EvaluateEach(extra_eval or {}), *callbacks,
                     EpochLog(workdir / LOG),
                     _Checkpoint(workdir, time.time(), state["wall_seconds"])]
        model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                  initial_epoch=state["epochs_done"], callbacks=callbacks, verbose=verbose,
                  shuffle=False)  # the dataset shuffles itself
        state = json.loads((workdir / STATE).read_text())
    return model, state
