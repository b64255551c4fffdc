"""One run of the paper's experiment (Rajagopal & Bouganis, CVPRW 2020) or of its controls.

Methods, for a (subset, network, level, seed):
- `aware` (criterion C): fine-tune the pretrained model on the subset's train split
  (`finetune` phase; cached per subset, shared by all levels and criteria), score the
  fine-tuned model with C, prune it, retrain on the subset (`retrain` phase, fresh optimiser).
  `finetune_l1` is the paper's criterion: the fine-tune phase, then `l1`; a data-aware C
  (`act_l2`, `apoz`, `taylor`) scores the fine-tuned model on the subset's train split.
- `agnostic`: prune the pretrained model with `l1` at epoch 0, retrain on the FULL train split
  (`agnostic` phase). One run per (network, level, seed), evaluated on every subset; its
  `restricted` numbers (logits restricted to the subset's classes) are Control 1.
- `control2`: `l1` on the pretrained model, retrain on the subset (`control` phase).
- `control3`: `random` filters, retrain on the subset (`control` phase).
- `unpruned`: the pretrained model, evaluated on every subset.

Every trained run evaluates after each epoch on the subsets' val and test splits, with the
100-way argmax and with logits restricted to the subset's classes (`SubsetEval`); a run's
accuracy is the test accuracy at the epoch of best validation accuracy (`select`). The
subsets' splits come from `tfprune.data.split` with a fixed split seed: train/val split per
class, so a subset's val images are exactly the full split's val images of its classes and
never in any train split. Schedules are the paper's `epoch:lr` strings (`train.step_schedule`);
a phase with `steps_per_epoch` set trains a fixed number of steps per epoch whatever the
subset's size (the quick protocol's step budget; recipes: `tfprune.experiments.recipes`). Training goes
through a tf.distribute strategy (`make_strategy`: default, mirrored, multi_worker).

A run directory holds `train/` (fit_resumable checkpoints and log.csv), `pruned.keras`,
`plan.json`, `pruned_eval.json` and finally `result.json` (atomic); a killed run resumes
from its last finished epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from tfprune.training import fit as train
from tfprune.experiments.recipes import PROTOCOLS, Phase, Recipe, override, phase_of

METHODS = ("aware", "agnostic", "control2", "control3", "unpruned")
AGNOSTIC_CRITERION, CONTROL2_CRITERION, CONTROL3_CRITERION = "l1", "l1", "random"
RESULT = "result.json"


@dataclasses.dataclass
class Setup:
    """Everything a run needs besides its (method, criterion, subset, level)."""
    data: str
    network: str
    recipe: Recipe
    model: str | None = None         # model spec; default pretrained:<network>
    seed: int = 0
    split_seed: int = 0
    data_dir: str | None = None
    strategy: str = "default"
    target: str = "params"
    allocation: str = "global"
    min_channels: int = 2
    calibration_batches: int = 10    # data-aware scoring batches
    bn_batches: int = 0              # BatchNorm re-estimation after pruning (0 = paper)
    eval_batch_size: int = 500
    verbose: int = 2

    @property
    def model_spec(self) -> str:
        return self.model or f"pretrained:{self.network}"

    def splits(self, subset: str):
        return _splits(self.data, self.data_dir, subset, self.split_seed)


def make_setup(protocol_name: str, network: str, data: str, model: str | None = None,
               overrides=(), recipe_network: str | None = None, **kwargs) -> Setup:
    """A Setup with the `protocol_name` recipe of `network` (or of `recipe_network`, for a
    network without its own), edited by `overrides` (see `override`)."""
    if protocol_name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol_name!r}; choose {', '.join(PROTOCOLS)}")
    recipes, key = PROTOCOLS[protocol_name], recipe_network or network
    if key not in recipes:
        raise ValueError(f"no {protocol_name} recipe for network {key!r} (recipes: "
                         f"{', '.join(recipes)}); name one with --recipe_network")
    return Setup(data, network, override(recipes[key], overrides), model=model, **kwargs)


@functools.lru_cache(maxsize=2)
def _source(spec: str, data_dir):
    from tfprune import data
    return data.load_source(spec, data_dir)


@functools.lru_cache(maxsize=16)
def _splits(spec: str, data_dir, subset: str, seed: int):
    from tfprune import data
    return data.split(_source(spec, data_dir), subset, seed)


@functools.lru_cache(maxsize=None)
def make_strategy(name: str = "default"):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: choose default, mirrored or multi_worker")


def subset_accuracy(logits: np.ndarray, labels: np.ndarray, classes) -> tuple[float, float]:
    """(100-way argmax accuracy, accuracy with logits restricted to `classes`) over the
    images whose label is in `classes`."""
    classes = np.asarray(sorted(classes))
    mask = np.isin(labels, classes)
    if not mask.any():
        return float("nan"), float("nan")
    lg, y = np.asarray(logits)[mask], np.asarray(labels)[mask]
    full = float(np.mean(np.argmax(lg, -1) == y))
    restricted = float(np.mean(classes[np.argmax(lg[:, classes], -1)] == y))
    return full, restricted


def evaluate(model, evalsets: dict, subsets: dict, batch_size: int = 500) -> dict:
    """{f"{subset}_{split}_acc": ..., f"{subset}_{split}_acc_r": ...} for splits of
    `evalsets` ({split: Images}) and subsets ({name: classes}); one forward pass per image."""
    from tfprune import data
    out = {}
    for split, images in evalsets.items():
        ds = data.as_dataset(images, batch_size).map(lambda x, y: x)
        logits = model.predict(ds, verbose=0)
        for name, classes in subsets.items():
            out[f"{name}_{split}_acc"], out[f"{name}_{split}_acc_r"] = subset_accuracy(
                logits, images.y, classes)
    return out


def _keras_callback():
    import keras

    class SubsetEval(keras.callbacks.Callback):
        """Adds `evaluate`'s accuracies to every epoch's logs (so log.csv has them)."""

        def __init__(self, evalsets, subsets, batch_size, eval_from=0):
            super().__init__()
            self.args, self.eval_from = (evalsets, subsets, batch_size), eval_from

        def on_epoch_end(self, epoch, logs=None):
            if epoch >= self.eval_from:
                logs.update(evaluate(self.model, *self.args))
            else:  # the CSV log takes its columns from the first epoch: log them as NaN
                logs.update({f"{n}_{s}_acc{r}": float("nan") for s in self.args[0]
                             for n in self.args[1] for r in ("", "_r")})
    return SubsetEval


def select(rows: list[dict], subset: str, restricted: bool = False) -> dict:
    """Test accuracy at the (first) epoch of best validation accuracy, from log rows
    (epochs not evaluated hold NaN)."""
    suffix = "_r" if restricted else ""
    val = np.array([float(r.get(f"{subset}_val_acc{suffix}", "nan")) for r in rows])
    if not len(val) or np.isnan(val).all():
        raise ValueError(f"no evaluated epoch for subset {subset!r} in the run's log")
    best = int(np.nanargmax(val))
    return {"epoch": int(rows[best]["epoch"]), "val_accuracy": float(val[best]),
            "test_accuracy": float(rows[best][f"{subset}_test_acc{suffix}"])}


def read_log(path) -> list[dict]:
    """log.csv rows as numbers, the last row per epoch (a resumed epoch is logged again);
    the NA columns Keras's CSVLogger adds for a run without validation data are dropped."""
    import csv
    by_epoch = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items()
                                           if v not in ("NA", "")}
    return [by_epoch[e] for e in sorted(by_epoch)]


@dataclasses.dataclass
class RunData:
    """What a run trains on and where it is evaluated."""
    train_on: str
    train: object                 # Images
    evalsets: dict                # {"val": Images, "test": Images}
    subsets: dict                 # {subset name: classes}


def run_data(setup: Setup, method: str, subsets) -> RunData:
    """The images of a run: subset methods train on the subset's train split; agnostic on the
    full train split; everyone is evaluated on the subsets' val and test images."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    per = {name: setup.splits(name) for name in subsets}
    if method in ("aware", "control2", "control3"):
        if len(subsets) != 1:
            raise ValueError(f"method {method!r} runs on one subset, got {subsets}")
        s = per[subsets[0]]
        return RunData(subsets[0], s.train, {"val": s.val, "test": s.test}, {s.name: s.classes})
    full = setup.splits("all")
    union = sorted(set().union(*(s.classes for s in per.values())))
    evalsets = {k: getattr(full, k).take(np.flatnonzero(np.isin(getattr(full, k).y, union)))
                for k in ("val", "test")}
    return RunData("all", full.train, evalsets, {n: s.classes for n, s in per.items()})


def _train_phase(setup: Setup, phase: Phase, model_path: Path, train_images, workdir: Path,
                 evalset=None):
    """Retrain (or fine-tune) the model saved at `model_path` for `phase`, resumably."""
    import keras

    from tfprune import data
    r = setup.recipe
    steps = phase.steps_per_epoch or math.ceil(len(train_images) / r.batch_size)
    ds = data.as_dataset(train_images, r.batch_size, training=True, seed=setup.seed)
    if phase.steps_per_epoch:
        ds = ds.repeat().take(phase.steps_per_epoch)
    schedule = train.step_schedule(phase.lr, steps, phase.gamma)

    def build():
        model = keras.models.load_model(model_path, compile=False)
        return train.compile_sgd(model, schedule, r.weight_decay, r.momentum)

    if phase.epochs < 1 or phase.eval_from < 0:
        raise ValueError(f"phase {phase}: needs epochs >= 1 and eval_from >= 0")
    eval_from = min(phase.eval_from, phase.epochs - 1)  # the last epoch is always evaluated
    callbacks = ([_keras_callback()(*evalset, setup.eval_batch_size, eval_from)]
                 if evalset else [])
    with make_strategy(setup.strategy).scope():
        return train.fit_resumable(build, ds, phase.epochs, workdir, schedule=schedule,
                                   callbacks=callbacks, verbose=setup.verbose)


def _save_model(model, path: Path) -> None:
    train.atomic_save(model, path, optimizer=False)


def finetuned(setup: Setup, root: Path, subset: str) -> Path:
    """The aware fine-tune phase for (network, subset, seed), run once and cached."""
    import keras

    from tfprune.models import loader as modelio
    wd = Path(root) / "finetune" / f"{setup.network}_{safe_name(subset)}_s{setup.seed}"
    out = wd / "finetuned.keras"
    if not out.exists():
        wd.mkdir(parents=True, exist_ok=True)
        base = wd / "base.keras"
        if not base.exists():
            _save_model(modelio.load_model(setup.model_spec), base)
        keras.utils.set_random_seed(setup.seed)
        model, _ = _train_phase(setup, setup.recipe.finetune, base,
                                setup.splits(subset).train, wd / "train")
        _save_model(model, out)
    return out


def safe_name(name: str) -> str:
    """`name` (a subset spec such as `fish,shark`) as a file-name part."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def run(setup: Setup, workdir, method: str, subsets, level: float = 0.0,
        criterion: str | None = None, root=None) -> dict:
    """One run; writes `workdir/result.json` (atomically) and returns it. A finished run
    returns its stored result; a killed one resumes. `root` holds the shared fine-tune cache
    (default: workdir's parent). `subsets`: one name (subset methods) or several (agnostic,
    unpruned)."""
    import keras

    from tfprune.models import loader as modelio
    from tfprune import pruner as pruning
    from tfprune.core import plan as plan_mod
    workdir = Path(workdir)
    if method == "aware" and not criterion:
        raise ValueError("method 'aware' needs a criterion (e.g. finetune_l1, act_l2)")
    if (workdir / RESULT).exists():
        return json.loads((workdir / RESULT).read_text())
    started = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    rd = run_data(setup, method, subsets)
    result = {"method": method, "criterion": criterion, "network": setup.network,
              "level": level, "seed": setup.seed, "model": setup.model_spec,
              "train_on": rd.train_on, "train_images": len(rd.train),
              "eval_images": {n: {k: int(np.isin(v.y, c).sum()) for k, v in rd.evalsets.items()}
                              for n, c in rd.subsets.items()},
              "recipe": dataclasses.asdict(setup.recipe), "bn_batches": setup.bn_batches}
    keras.utils.set_random_seed(setup.seed)
    if method == "unpruned":
        metrics = evaluate(modelio.load_model(setup.model_spec), rd.evalsets, rd.subsets,
                           setup.eval_batch_size)
        result["subsets"] = {n: _point(metrics, n) for n in rd.subsets}
        return _finish(workdir, result, started)

    pruned_path = workdir / "pruned.keras"
    if not pruned_path.exists():
        splits = setup.splits(rd.train_on)
        if method == "aware":
            base = keras.models.load_model(finetuned(setup, workdir.parent if root is None
                                                     else root, rd.train_on), compile=False)
            crit = "l1" if criterion == "finetune_l1" else criterion
        else:
            base = modelio.load_model(setup.model_spec)
            crit = {"agnostic": AGNOSTIC_CRITERION, "control2": CONTROL2_CRITERION,
                    "control3": CONTROL3_CRITERION}[method]
        res = pruning.prune_model(
            base, crit, level, setup.target, setup.allocation, setup.min_channels,
            seed=setup.seed, splits=splits, calibration_batches=setup.calibration_batches,
            batch_size=setup.recipe.batch_size, bn_batches=setup.bn_batches,
            options={"progress": False})
        res.plan["criterion"] = criterion or crit
        pruned_eval = {"achieved": res.plan["achieved"], "params_before": int(base.count_params()),
                       "params_after": int(res.pruned.count_params()),
                       **evaluate(res.pruned, rd.evalsets, rd.subsets, setup.eval_batch_size)}
        plan_mod.save_plan(res.plan, workdir / "plan.json")
        train.atomic_write_text(workdir / "pruned_eval.json", json.dumps(pruned_eval))
        _save_model(res.pruned, pruned_path)
    pruned_eval = json.loads((workdir / "pruned_eval.json").read_text())
    phase = phase_of(setup.recipe, method)
    keras.utils.set_random_seed(setup.seed)
    _, state = _train_phase(setup, phase, pruned_path, rd.train, workdir / "train",
                            (rd.evalsets, rd.subsets))
    rows = read_log(workdir / "train" / train.LOG)
    result.update(achieved=pruned_eval["achieved"], params_before=pruned_eval["params_before"],
                  params_after=pruned_eval["params_after"], train_seconds=state["wall_seconds"],
                  history=rows)
    result["subsets"] = {n: {**select(rows, n), "restricted": select(rows, n, True),
                             "pruned": _point(pruned_eval, n)} for n in rd.subsets}
    return _finish(workdir, result, started)


def _point(metrics: dict, subset: str) -> dict:
    return {"val_accuracy": metrics[f"{subset}_val_acc"],
            "test_accuracy": metrics[f"{subset}_test_acc"],
            "restricted": {"val_accuracy": metrics[f"{subset}_val_acc_r"],
                           "test_accuracy": metrics[f"{subset}_test_acc_r"]}}


def _finish(workdir: Path, result: dict, started: float) -> dict:
    result["seconds_this_session"] = round(time.time() - started, 1)
    train.atomic_write_text(workdir / RESULT, json.dumps(result, indent=1))
    return result
