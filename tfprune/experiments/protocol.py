"""One run of the paper's experiment (Rajagopal & Bouganis, CVPRW 2020) or of its controls.

Methods, for a (subset, network, level, seed):
- `aware` (criterion C): fine-tune the pretrained model on the subset's train split
  (`finetune` phase; cached per subset, shared by all levels and criteria), score the
  fine-tuned model with C, prune it, retrain on the subset (`retrain` phase, fresh optimiser).
  `finetune_l1` is the paper's criterion: the fine-tune phase, then `l1`; a data-aware C
  (`act_l2`, `apoz`, `taylor`) scores the fine-tuned model on the subset's train split.
- `adapt` (criterion C): the main job's recipe: as `aware` up to the cut, then least-squares
  reconstruction of the pruned model (`tfprune.core.reconstruct`), the classifier sliced to
  the subset's classes (`tfprune.core.head`) and retrained with distillation from the
  original model restricted to the subset (`tfprune.training.distill`).
- `agnostic`: prune the pretrained model with `l1` at epoch 0, retrain on the FULL train split
  (`agnostic` phase). One run per (network, level, seed), evaluated on every subset; its
  `restricted` numbers (logits restricted to the subset's classes) are Control 1.
- `control2`: `l1` on the pretrained model, retrain on the subset (`control` phase).
- `control3`: `random` filters, retrain on the subset (`control` phase).
- `control4`: the agnostic run's final model (Control 1's, no further pruning) fine-tuned
  on the subset (`control` phase): "ship a pruned model, then fine-tune on the device".
- `unpruned`: the pretrained model, evaluated on every subset.

`l1` filters (`finetune_l1`, agnostic, control2) are ranked by raw mean |w| across layers
as in the paper (`Setup.l1_normalizer="none"`); other criteria divide by each layer's mean
(`normalizer="mean"`); a run may name its normalizer (the `mean` variant of the paper's L1).
While training, every BatchNorm layer uses `recipe.bn_momentum` (0.9 in v2 and paper).

Every trained run evaluates after each evaluated epoch on the subsets' val and test splits,
with the 100-way argmax and with logits restricted to the subset's classes (`SubsetEval`,
which also keeps each test image's correctness per epoch in `correct/`); a run's accuracy is
the test accuracy at the epoch of best validation accuracy (`select`), and it is
`converged` when the last epoch gained less than 0.5 pp of validation accuracy over the one
before (`convergence`). result.json stores the selected epoch's per-image test correctness
(packed bits) for the paired bootstrap of tfprune.experiments.stats. The subsets' splits come
from `tfprune.data.split` with a fixed split seed: train/val split per class, so a subset's
val images are exactly the full split's val images of its classes and never in any train
split. Schedules are the paper's `epoch:lr` strings (`train.step_schedule`); a phase with
`steps_per_epoch` set trains a fixed number of steps per epoch whatever the subset's size
(the v1 quick protocol; recipes: `tfprune.experiments.recipes`). Training goes through a
tf.distribute strategy (`make_strategy`: default, mirrored, multi_worker).

A run directory holds `train/` (fit_resumable checkpoints and log.csv), `correct/`,
`pruned.keras`, `plan.json`, `pruned_eval.json` and finally `result.json` (atomic); a killed
run resumes from its last finished epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from tfprune import fileio
from tfprune.errors import TfpruneError
from tfprune.training import fit as train
from tfprune.experiments.recipes import (PROTOCOLS, Phase, Recipe, epoch_recipes, override,
                                         phase_of)

METHODS = ("aware", "adapt", "agnostic", "control2", "control3", "control4", "unpruned")
SUBSET_METHODS = ("aware", "adapt", "control2", "control3", "control4")
CRITERION_METHODS = ("aware", "adapt")
AGNOSTIC_CRITERION, CONTROL2_CRITERION, CONTROL3_CRITERION = "l1", "l1", "random"
L1_CRITERIA = ("l1", "finetune_l1")
NORMALIZERS = ("none", "mean", "max")
CONVERGED_GAIN = 0.005  # last-epoch validation gain under 0.5 pp: converged
RESULT = "result.json"
CORRECT = "correct"


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
    l1_normalizer: str = "none"      # how l1 scores compare across layers (paper: raw)
    distill_alpha: float = 0.9       # adapt: weight of the distillation term
    distill_temperature: float = 4.0
    reconstruct_images: int = 1000   # adapt: least-squares reconstruction after pruning
    verbose: int = 2

    @property
    def model_spec(self) -> str:
        return self.model or f"pretrained:{self.network}"

    def splits(self, subset: str):
        return _splits(self.data, self.data_dir, subset, self.split_seed)

    def normalizer(self, criterion: str, explicit: str | None = None) -> str:
        """The normalizer a run ranks `criterion`'s scores with (see module doc)."""
        chosen = explicit or (self.l1_normalizer if criterion in L1_CRITERIA else "mean")
        if chosen not in NORMALIZERS:
            raise TfpruneError(f"unknown normalizer {chosen!r}; choose {', '.join(NORMALIZERS)}")
        return chosen


def make_setup(protocol_name: str, network: str, data: str, model: str | None = None,
               overrides=(), recipe_network: str | None = None,
               epochs: tuple[int, int] | None = None, **kwargs) -> Setup:
    """A Setup with the `protocol_name` recipe of `network` (or of `recipe_network`, for a
    network without its own), edited by `overrides` (see `override`). `epochs` = (E1, E2)
    sets the v2 protocol's epoch budget (default `recipes.V2_EPOCHS`)."""
    if protocol_name not in PROTOCOLS:
        raise TfpruneError(f"unknown protocol {protocol_name!r}; choose {', '.join(PROTOCOLS)}")
    if epochs is not None and protocol_name != "v2":
        raise TfpruneError(f"an epoch budget (E1, E2) = {tuple(epochs)} applies to protocol v2 "
                         f"only, not {protocol_name!r}")
    recipes = epoch_recipes(*epochs) if epochs is not None else PROTOCOLS[protocol_name]
    key = recipe_network or network
    if key not in recipes:
        raise TfpruneError(f"no {protocol_name} recipe for network {key!r} (recipes: "
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
    raise TfpruneError(f"unknown strategy {name!r}: choose default, mirrored or multi_worker")


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


def correctness(logits: np.ndarray, labels: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (100-way argmax right, restricted argmax right) over the images whose label
    is in `classes`, in their order: `subset_accuracy`'s means, image by image."""
    classes = np.asarray(sorted(classes))
    mask = np.isin(labels, classes)
    lg, y = np.asarray(logits)[mask], np.asarray(labels)[mask]
    return np.argmax(lg, -1) == y, classes[np.argmax(lg[:, classes], -1)] == y


def full_logits(logits: np.ndarray, head_classes, width: int) -> np.ndarray:
    """A k-class head's logits (`head_classes` in its output order) as `width`-class logits,
    the other classes at -1e9: a subset-head model is evaluated like any other."""
    out = np.full((len(logits), width), -1e9, dtype=np.float32)
    out[:, np.asarray(head_classes)] = logits
    return out


def evaluate(model, evalsets: dict, subsets: dict, batch_size: int = 500,
             head_classes=None, correct: dict | None = None) -> dict:
    """{f"{subset}_{split}_acc": ..., f"{subset}_{split}_acc_r": ...} for splits of
    `evalsets` ({split: Images}) and subsets ({name: classes}); one forward pass per image.
    `head_classes`: the model outputs logits of these classes only. `correct` (a dict) gets
    each test image's correctness, `{subset}` and `{subset}_r` (see `correctness`)."""
    from tfprune import data
    out = {}
    for split, images in evalsets.items():
        ds = data.as_dataset(images, batch_size).map(lambda x, y: x)
        logits = model.predict(ds, verbose=0)
        if head_classes is not None:
            width = max(int(np.max(images.y)), int(np.max(head_classes))) + 1
            logits = full_logits(logits, head_classes, width)
        for name, classes in subsets.items():
            out[f"{name}_{split}_acc"], out[f"{name}_{split}_acc_r"] = subset_accuracy(
                logits, images.y, classes)
            if correct is not None and split == "test":
                correct[name], correct[f"{name}_r"] = correctness(logits, images.y, classes)
    return out


def pack_bits(flags: np.ndarray) -> dict:
    return {"n": int(len(flags)), "hex": np.packbits(np.asarray(flags, bool)).tobytes().hex()}


def unpack_bits(packed: dict) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(packed["hex"]), np.uint8))
    return bits[:packed["n"]].astype(bool)


def _keras_callback():
    import keras

    class SubsetEval(keras.callbacks.Callback):
        """Adds `evaluate`'s accuracies to every epoch's logs (so log.csv has them) and keeps
        the test images' correctness in `correct_dir/e{epoch}.npz`."""

        def __init__(self, evalsets, subsets, batch_size, eval_from=0, correct_dir=None,
                     head_classes=None):
            super().__init__()
            self.args, self.eval_from = (evalsets, subsets, batch_size), eval_from
            self.correct_dir, self.head_classes = correct_dir, head_classes

        def on_epoch_end(self, epoch, logs=None):
            if epoch >= self.eval_from:
                correct = {}
                logs.update(evaluate(self.model, *self.args, head_classes=self.head_classes,
                                     correct=correct))
                if self.correct_dir is not None:
                    _save_correct(self.correct_dir, epoch, correct)
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
        raise TfpruneError(f"no evaluated epoch for subset {subset!r} in the run's log")
    best = int(np.nanargmax(val))
    return {"epoch": int(rows[best]["epoch"]), "val_accuracy": float(val[best]),
            "test_accuracy": float(rows[best][f"{subset}_test_acc{suffix}"])}


def convergence(rows: list[dict], subset: str, restricted: bool = False) -> dict:
    """`last_epoch_gain`: validation accuracy of the last epoch minus the one before;
    `converged`: that gain is under `CONVERGED_GAIN` (None when the last two epochs were not
    both evaluated)."""
    key = f"{subset}_val_acc" + ("_r" if restricted else "")
    val = [float(r.get(key, "nan")) for r in rows[-2:]]
    if len(val) < 2 or np.isnan(val).any():
        return {"last_epoch_gain": None, "converged": None}
    gain = val[1] - val[0]
    return {"last_epoch_gain": gain, "converged": bool(gain < CONVERGED_GAIN)}


def _save_correct(directory: Path, epoch: int, correct: dict) -> None:
    import io
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **correct)
    tmp = directory / f".e{epoch:03d}.tmp"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(directory / f"e{epoch:03d}.npz")


def load_correct(directory: Path, epoch: int) -> dict | None:
    path = Path(directory) / f"e{epoch:03d}.npz"
    if not path.exists():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def read_log(path) -> list[dict]:
    """log.csv rows as numbers, the last row per epoch (a resumed epoch is logged again);
    the NA columns Keras's CSVLogger adds for a run without validation data are dropped."""
    import csv
    by_epoch = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if None in row or None in row.values():
                raise TfpruneError(f"{path}: the row of epoch {row['epoch']} does not match "
                                   "the header (a log from before tfprune.training.fit."
                                   "EpochLog, of a run resumed with other metrics)")
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
        raise TfpruneError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    per = {name: setup.splits(name) for name in subsets}
    if method in SUBSET_METHODS:
        if len(subsets) != 1:
            raise TfpruneError(f"method {method!r} runs on one subset, got {subsets}")
        s = per[subsets[0]]
        return RunData(subsets[0], s.train, {"val": s.val, "test": s.test}, {s.name: s.classes})
    full = setup.splits("all")
    union = sorted(set().union(*(s.classes for s in per.values())))
    evalsets = {k: getattr(full, k).take(np.flatnonzero(np.isin(getattr(full, k).y, union)))
                for k in ("val", "test")}
    return RunData("all", full.train, evalsets, {n: s.classes for n, s in per.items()})


def _train_phase(setup: Setup, phase: Phase, model_path: Path, train_images, workdir: Path,
                 evalset=None, build_model=None, head_classes=None):
    """Retrain (or fine-tune) the model saved at `model_path` for `phase`, resumably.
    `build_model(model, schedule)`: compile it another way (default: SGD, cross-entropy);
    `head_classes`: the model's logits are these classes only (evaluation maps them back)."""
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
        train.set_batchnorm_momentum(model, r.bn_momentum)
        if build_model is not None:
            return build_model(model, schedule)
        return train.compile_sgd(model, schedule, r.weight_decay, r.momentum)

    if phase.epochs < 1 or phase.eval_from < 0:
        raise TfpruneError(f"phase {phase}: needs epochs >= 1 and eval_from >= 0")
    eval_from = min(phase.eval_from, phase.epochs - 1)  # the last epoch is always evaluated
    callbacks = ([_keras_callback()(*evalset, setup.eval_batch_size, eval_from,
                                    Path(workdir).parent / CORRECT, head_classes)]
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


def _evaluate_missing(workdir: Path, pruned_path: Path, rd: RunData, batch_size: int) -> None:
    """Add to pruned_eval.json the subsets of `rd` it lacks (a shared run resumed by a
    stage with other subsets)."""
    import keras
    pruned_eval = json.loads((workdir / "pruned_eval.json").read_text())
    missing = {n: c for n, c in rd.subsets.items() if f"{n}_test_acc" not in pruned_eval}
    if missing:
        model = keras.models.load_model(pruned_path, compile=False)
        pruned_eval.update(evaluate(model, rd.evalsets, missing, batch_size))
        fileio.atomic_write_text(workdir / "pruned_eval.json", json.dumps(pruned_eval))


def _prune(setup: Setup, workdir: Path, method: str, rd: RunData, level: float,
           criterion: str | None, normalizer: str | None, root, start_from):
    """Write the run's pruned.keras, plan.json and pruned_eval.json (skipped when present)."""
    import shutil

    import keras

    from tfprune import pruner as pruning
    from tfprune.core import plan as plan_mod
    from tfprune.models import loader as modelio
    pruned_path = workdir / "pruned.keras"
    if pruned_path.exists():
        _evaluate_missing(workdir, pruned_path, rd, setup.eval_batch_size)
        return pruned_path
    if method == "control4":  # the agnostic run's final model, not pruned again
        source = Path(start_from or "")
        if not (source / "train" / train.CHECKPOINT).exists() or not (
                source / RESULT).exists():
            raise TfpruneError(f"control4 starts from the finished agnostic run of the same "
                             f"network, level and seed, which is missing: {source}")
        model = keras.models.load_model(source / "train" / train.CHECKPOINT, compile=False)
        before = json.loads((source / "pruned_eval.json").read_text())
        if (source / "plan.json").exists():
            shutil.copyfile(source / "plan.json", workdir / "plan.json")
        pruned_eval = {k: before[k] for k in ("achieved", "params_before", "params_after")}
        pruned_eval.update(evaluate(model, rd.evalsets, rd.subsets, setup.eval_batch_size),
                           start_from=str(source))
        fileio.atomic_write_text(workdir / "pruned_eval.json", json.dumps(pruned_eval))
        _save_model(model, pruned_path)
        return pruned_path
    splits = setup.splits(rd.train_on)
    if method in CRITERION_METHODS:
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
        batch_size=setup.recipe.batch_size, normalizer=setup.normalizer(crit, normalizer),
        bn_batches=setup.bn_batches, options={"progress": False},
        reconstruct_images=setup.reconstruct_images if method == "adapt" else 0)
    res.plan["criterion"] = criterion or crit
    pruned_eval = {"achieved": res.plan["achieved"], "params_before": int(base.count_params()),
                   "params_after": int(res.pruned.count_params()),
                   **evaluate(res.pruned, rd.evalsets, rd.subsets, setup.eval_batch_size)}
    plan_mod.save_plan(res.plan, workdir / "plan.json")
    fileio.atomic_write_text(workdir / "pruned_eval.json", json.dumps(pruned_eval))
    _save_model(res.pruned, pruned_path)
    return pruned_path


def _adapt_inputs(setup: Setup, workdir: Path, pruned_path: Path, rd: RunData):
    """The `adapt` method's k-class model file, label-remapped train images and compile
    function."""
    import keras

    from tfprune.data.sources import Images
    from tfprune.models import loader as modelio
    from tfprune.core.head import slice_head
    from tfprune.training.distill import compile_distill
    classes = list(rd.subsets[rd.train_on])
    head_path = workdir / "head.keras"
    if not head_path.exists():
        pruned = keras.models.load_model(pruned_path, compile=False)
        _save_model(slice_head(pruned, classes), head_path)
    teacher = slice_head(modelio.load_model(setup.model_spec), classes)
    teacher.trainable = False
    remap = np.full(int(max(np.max(rd.train.y), max(classes))) + 1, -1)
    remap[classes] = np.arange(len(classes))
    images = Images(rd.train.x, remap[rd.train.y])
    r = setup.recipe

    def build(model, schedule):
        return compile_distill(model, teacher, schedule, r.weight_decay, r.momentum,
                               setup.distill_alpha, setup.distill_temperature)
    return head_path, images, build, classes


def run(setup: Setup, workdir, method: str, subsets, level: float = 0.0,
        criterion: str | None = None, root=None, normalizer: str | None = None,
        start_from=None) -> dict:
    """One run; writes `workdir/result.json` (atomically) and returns it. A finished run
    returns its stored result; a killed one resumes. `root` holds the shared fine-tune cache
    (default: workdir's parent). `subsets`: one name (subset methods) or several (agnostic,
    unpruned). `normalizer`: the run's score normalizer (default `Setup.normalizer`);
    `start_from`: control4's agnostic run directory."""
    import keras

    from tfprune.models import loader as modelio
    workdir = Path(workdir)
    if method in CRITERION_METHODS and not criterion:
        raise TfpruneError(f"method {method!r} needs a criterion (e.g. finetune_l1, act_l2)")
    if (workdir / RESULT).exists():
        return json.loads((workdir / RESULT).read_text())
    started = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    rd = run_data(setup, method, subsets)
    crit = (criterion if method in CRITERION_METHODS else
            {"agnostic": AGNOSTIC_CRITERION, "control2": CONTROL2_CRITERION,
             "control3": CONTROL3_CRITERION}.get(method))
    result = {"method": method, "criterion": criterion, "network": setup.network,
              "level": level, "seed": setup.seed, "model": setup.model_spec,
              "normalizer": setup.normalizer(crit, normalizer) if crit else None,
              "normalizer_variant": normalizer,
              "train_on": rd.train_on, "train_images": len(rd.train),
              "eval_images": {n: {k: int(np.isin(v.y, c).sum()) for k, v in rd.evalsets.items()}
                              for n, c in rd.subsets.items()},
              "recipe": dataclasses.asdict(setup.recipe), "bn_batches": setup.bn_batches}
    keras.utils.set_random_seed(setup.seed)
    if method == "unpruned":
        correct = {}
        metrics = evaluate(modelio.load_model(setup.model_spec), rd.evalsets, rd.subsets,
                           setup.eval_batch_size, correct=correct)
        result["subsets"] = {n: {**_point(metrics, n), **_packed(correct, n)}
                             for n in rd.subsets}
        return _finish(workdir, result, started)

    pruned_path = _prune(setup, workdir, method, rd, level, criterion, normalizer, root,
                         start_from)
    pruned_eval = json.loads((workdir / "pruned_eval.json").read_text())
    phase = phase_of(setup.recipe, method)
    train_images, build, head = rd.train, None, None
    if method == "adapt":
        pruned_path, train_images, build, head = _adapt_inputs(setup, workdir, pruned_path, rd)
    keras.utils.set_random_seed(setup.seed)
    _, state = _train_phase(setup, phase, pruned_path, train_images, workdir / "train",
                            (rd.evalsets, rd.subsets), build, head)
    rows = read_log(workdir / "train" / train.LOG)
    result.update(achieved=pruned_eval["achieved"], params_before=pruned_eval["params_before"],
                  params_after=pruned_eval["params_after"], train_seconds=state["wall_seconds"],
                  history=rows)
    if "start_from" in pruned_eval:
        result["start_from"] = pruned_eval["start_from"]
    result["subsets"] = {n: _selected(workdir, rows, n) | {"pruned": _point(pruned_eval, n)}
                         for n in rd.subsets}
    return _finish(workdir, result, started)


def _selected(workdir: Path, rows: list[dict], subset: str) -> dict:
    """A subset's selected epochs (argmax and restricted) with convergence and the selected
    epoch's per-image test correctness."""
    out = {}
    for restricted in (False, True):
        sel = {**select(rows, subset, restricted), **convergence(rows, subset, restricted)}
        correct = load_correct(workdir / CORRECT, sel["epoch"])
        key = f"{subset}_r" if restricted else subset
        if correct is not None and key in correct:
            sel["test_correct"] = pack_bits(correct[key])
        if restricted:
            out["restricted"] = sel
        else:
            out.update(sel)
    return out


def _packed(correct: dict, subset: str) -> dict:
    return {"test_correct": pack_bits(correct[subset]),
            "restricted_test_correct": pack_bits(correct[f"{subset}_r"])}


def _point(metrics: dict, subset: str) -> dict:
    return {"val_accuracy": metrics[f"{subset}_val_acc"],
            "test_accuracy": metrics[f"{subset}_test_acc"],
            "restricted": {"val_accuracy": metrics[f"{subset}_val_acc_r"],
                           "test_accuracy": metrics[f"{subset}_test_acc_r"]}}


def _finish(workdir: Path, result: dict, started: float) -> dict:
    result["seconds_this_session"] = round(time.time() - started, 1)
    fileio.atomic_write_text(workdir / RESULT, json.dumps(result, indent=1))
    return result
