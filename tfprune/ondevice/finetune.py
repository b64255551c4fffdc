"""The device side of on-device fine-tuning: epochs of `train` over local images, checkpoints,
an app restart, evaluation with `infer`, channel statistics. NumPy and LiteRT only (no TF).

Batches come from `epoch_batches` (a permutation seeded by (seed, epoch)) and `augment_np`
(4-pixel zero pad + random crop + horizontal flip, CIFAR's augmentation in numpy), so the
Keras twin (`reference.keras_finetune`) sees exactly the same images in the same order.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tfprune.data.arrays import augment_np, normalize_np
from tfprune.errors import LossWatch, TfpruneError, TrainingDiverged

LATEST, PROGRESS = "latest.npz", "progress.json"


class CheckpointMismatch(TfpruneError):
    """Checkpoints made under other settings than the run asked to resume."""


def parse_schedule(spec: str) -> Callable[[int], float]:
    """`EPOCH:LR,...` (LR -1 = the previous LR x 0.1, as tfprune.training.fit) -> LR of an epoch."""
    from tfprune.training.schedules import lr_at_epoch, schedule_points

    points = schedule_points(spec)
    return lambda epoch: lr_at_epoch(points, epoch)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int):
    """Index arrays of one epoch's batches; the last one may be partial."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def training_batches(images, batch_size: int, seed: int, epoch: int, augment: bool):
    """(normalised float32 x, int y) batches of one epoch."""
    rng = np.random.default_rng([seed, epoch, 1])
    for idx in epoch_batches(len(images), batch_size, seed, epoch):
        x = augment_np(images.x[idx], rng) if augment else images.x[idx]
        yield normalize_np(x), images.y[idx].astype(np.int32)


SIGN_TEST_Z = 1.645  # one-sided 95%, normal approximation


def kept_epoch(correct: list, z: float = SIGN_TEST_Z) -> int:
    """Which epoch's weights to keep, from each epoch's per-image val correctness (boolean
    arrays; index 0: the starting weights): the best val accuracy among the epochs that beat
    the start in a paired sign test (wins - losses > z * sqrt(wins + losses), a win being an
    image the epoch gets right and the start got wrong), the earliest on a tie; 0 when none
    does. On 100 held-out images a 4-point gain can be noise; this keeps it only if it is
    not."""
    start, best = correct[0], 0
    for epoch, now in enumerate(correct[1:], 1):
        wins, losses = int(np.sum(now & ~start)), int(np.sum(~now & start))
        if wins - losses > z * np.sqrt(wins + losses) and now.sum() > correct[best].sum():
            best = epoch
    return best


def _val_results(rt, x, y) -> tuple[float, str]:
    """Val accuracy and per-image correctness as a '0'/'1' string (JSON-sized)."""
    correct = rt.correct(x, y)
    return float(correct.mean()) if len(y) else 0.0, "".join("1" if c else "0" for c in correct)


def device_finetune(open_runtime: Callable, train, test, epochs: int, schedule: str,
                    workdir, seed: int = 0, augment: bool = True, restart_after: int | None = None,
                    log: Callable = print, val=None) -> dict:
    """Fine-tune on the device for `epochs`, resuming from `workdir`'s checkpoint if any.

    `open_runtime()` makes a fresh `TrainableRuntime` (a new app process). After every epoch
    the state is checkpointed (`latest.npz`, `epoch_K.npz`); after epoch `restart_after` the
    runtime is thrown away and a new one restores the checkpoint, which must be bit-identical.
    Checkpoints made under another schedule, seed, augmentation or model are refused
    (`CheckpointMismatch`); a diverged loss (`LossWatch`: NaN, infinite or a blow-up) stops
    the run (`TrainingDiverged`) with the last finished epoch's checkpoint kept.

    With `val` (images the device holds out of training) the run ends on the weights that
    `kept_epoch` picks from each epoch's per-image val results, the starting weights
    (`epoch_0.npz`) included: an update is kept only when the held-out images say, beyond
    their noise, that it helps.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lr_at = parse_schedule(schedule)
    test_x = normalize_np(test.x)
    val_x = None if val is None else normalize_np(val.x)
    rt = open_runtime()
    settings = {"schedule": schedule, "seed": seed, "augment": augment,
                "model": rt.manifest.get("fingerprint"),
                "held_out": None if val is None else len(val),
                "keep": None if val is None else f"sign test, z {SIGN_TEST_Z}"}
    progress = {"epochs_done": 0, "history": [], "restart": None, "settings": settings}
    if (workdir / PROGRESS).exists() and (workdir / LATEST).exists():
        progress = json.loads((workdir / PROGRESS).read_text())
        made = progress.get("settings", settings)
        changed = [f"{k}: {made.get(k)!r} -> {v!r}" for k, v in settings.items()
                   if made.get(k) != v]
        if changed:
            raise CheckpointMismatch(
                f"the checkpoints in {workdir} were made with other settings ("
                + "; ".join(changed) + "); choose another output directory, or delete "
                f"{workdir} to start afresh")
        progress["settings"] = settings
        rt.restore(workdir / LATEST)
        log(f"resumed from {workdir / LATEST} after epoch {progress['epochs_done']}")
    else:
        progress["initial_test_accuracy"] = rt.evaluate(test_x, test.y)
        if val is not None:
            progress["initial_val_accuracy"], progress["initial_val_correct"] = \
                _val_results(rt, val_x, val.y)
            rt.save(workdir / "epoch_0.npz")
    bs, watch = rt.batch_size, LossWatch()
    for epoch in range(progress["epochs_done"], epochs):
        rt.set_learning_rate(lr_at(epoch))
        start, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        batches = list(training_batches(train, bs, seed, epoch, augment))
        for i, (x, y) in enumerate(batches, 1):
            loss, hit = rt.train_batch(x, y)
            loss = float(loss)
            if watch.diverged(loss):
                raise TrainingDiverged(
                    f"on-device training diverged: loss {loss:.4g} at epoch {epoch + 1}, "
                    f"batch {i} (is the learning rate too high?); "
                    + (f"{workdir / LATEST} keeps epoch {progress['epochs_done']}"
                       if progress["epochs_done"] else "no checkpoint was written"))
            loss_sum, correct, seen = loss_sum + loss * len(y), correct + hit, seen + len(y)
            if i % max(1, len(batches) // 5) == 0 or i == len(batches):
                log(f"epoch {epoch + 1}/{epochs} batch {i}/{len(batches)} loss {loss_sum / seen:.4f}"
                    f" acc {correct / seen:.3f} ({seen / (time.time() - start):.1f} img/s)")
        seconds = time.time() - start
        row = {"epoch": epoch + 1, "lr": lr_at(epoch), "loss": loss_sum / seen,
               "train_accuracy": correct / seen, "seconds": seconds, "images_per_second": seen / seconds,
               "test_accuracy": rt.evaluate(test_x, test.y)}
        if val is not None:
            row["val_accuracy"], row["val_correct"] = _val_results(rt, val_x, val.y)
        progress["history"].append(row)
        progress["epochs_done"] = epoch + 1
        rt.save(workdir / f"epoch_{epoch + 1}.npz")
        rt.save(workdir / LATEST)
        if restart_after is not None and epoch + 1 == restart_after and epoch + 1 < epochs:
            before = rt.state()
            del rt
            rt = open_runtime()
            step = rt.restore(workdir / LATEST)
            progress["restart"] = {"after_epoch": epoch + 1, "restored_step": step,
                                   "bit_identical": bool(np.array_equal(rt.state(), before))}
            log(f"simulated app restart after epoch {epoch + 1}: new interpreter, restored step "
                f"{step}, bit-identical: {progress['restart']['bit_identical']}")
        from tfprune.fileio import atomic_write_text
        atomic_write_text(workdir / PROGRESS, json.dumps(progress, indent=1))
    if val is not None:
        bits = [progress["initial_val_correct"]] + [h["val_correct"] for h in progress["history"]]
        kept = progress["kept_epoch"] = kept_epoch([np.array([b == "1" for b in c]) for c in bits])
        if kept < progress["epochs_done"]:
            rt.restore(workdir / f"epoch_{kept}.npz")
            scores = [progress["initial_val_accuracy"]] + [h["val_accuracy"]
                                                           for h in progress["history"]]
            why = ("no update beat the starting weights" if kept == 0 else
                   "the best update") + " beyond the held-out images' noise"
            log(f"kept epoch {kept} (val accuracy {scores[kept]:.3f}; the last epoch's "
                f"{scores[-1]:.3f}): {why}")
    progress["final_test_accuracy"] = rt.evaluate(test_x, test.y)
    progress["runtime"] = rt
    return progress
