"""Do adapted models beat the honest baseline on the device's own classes? (issue #14)

The bar is the original model restricted to the subset's classes (its logits of those
classes, no training). Four parts, each appending to benchmarks/results/adaptation.json
(a finished row is skipped on a re-run) and re-rendering adaptation.md:

- `main`: the main job's default (`pipelines.run`: sample data, aquatic, 30% latency), timed,
  with the shipped model, the on-device stage, the bar and `l1` from its summary.
- `recipes`: fine-tuning recipes on the main job's own pruned model, chosen on the val
  split (test reported beside it): BatchNorm momentum 0.99 vs 0.9, cross-entropy vs
  distillation, epochs, mixed views; fine-tuning seconds with and without the teacher.
- `levels`: a subset of the full data (`--data=npz:...`) at several parameter levels,
  `act_l2` against `l1` with the same fine-tuning (distillation of logits and, with
  `--features`, feature maps), against the bar.
- `phone`: the main job's chain (prune, then fine-tune; `tfprune.jobs.main_job`) on a phone's
  data the clean base never saw: `--train_per_class` images a class from the subset's val
  split (held out of the base's pretraining) are the device's, the next 50 a class are val,
  the official test images are test. `--phone_recipes` (names of PHONE_RECIPES: settings of
  the main job) x `--seeds` (which device images, and the training seed); rows also give the
  student's top-1 agreement with the teacher (the bar) on each split.

python -m benchmarks.adaptation --part=main
python -m benchmarks.adaptation --part=recipes
python -m benchmarks.adaptation --part=levels --data=npz:/work/shared/data/cifar100.npz \
    --subset=aquatic --levels=0.5,0.7,0.9 --epochs=15
python -m benchmarks.adaptation --part=phone --data=npz:/work/shared/data/cifar100.npz \
    --subset=aquatic --train_per_class=50 --phone_recipes=lr0.01,lr0.1 --seeds=0,1
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

from benchmarks import adaptation_report

flags.DEFINE_enum("part", "main", ["main", "recipes", "levels", "phone", "render"],
                  "What to run.")
flags.DEFINE_string("data", "sample", "Data of the levels and phone parts.")
flags.DEFINE_string("subset", "aquatic", "Subset of the levels and phone parts.")
flags.DEFINE_list("levels", ["0.5", "0.7", "0.9"], "Parameter levels of the levels part.")
flags.DEFINE_list("criteria", ["act_l2", "l1"], "Criteria of the levels part.")
flags.DEFINE_integer("epochs", 15, "Fine-tuning epochs of the levels part.", lower_bound=1)
flags.DEFINE_integer("train_per_class", 0, "levels: keep this many training images per class "
                     "(seeded), as on a phone; 0: all. phone: the device's images a class.",
                     lower_bound=0)
flags.DEFINE_integer("reconstruct_images", 1000, "levels: least-squares reconstruction on up "
                     "to this many training images after pruning (0: off).", lower_bound=0)
flags.DEFINE_enum("target", "params", ["params", "latency"], "levels: what --levels count "
                  "(latency: litert-float32-1t, round_to=auto).")
flags.DEFINE_float("lr", 0.01, "levels: peak fine-tuning learning rate (cosine).",
                   lower_bound=0.0)
flags.DEFINE_enum("mix", "none", ["none", "mixup", "cutmix"], "levels: label-free mixed views "
                  "of every batch (the main job's default is cutmix).")
flags.DEFINE_float("weight_decay", 5e-4, "levels: the fine-tune's L2 weight decay.",
                   lower_bound=0.0)
flags.DEFINE_float("alpha", 0.9, "levels: distillation weight (1 - alpha: cross-entropy on "
                   "the labels).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string("round_to", "auto", "levels: channel steps of the plans (auto: the "
                    "runtime's tile; 90% of params needs smaller steps, e.g. 4).")
flags.DEFINE_float("features", 20.0, "levels: feature-map distillation weight (the main job's "
                   "--distill_features; 0: logits only, as rows measured before it).",
                   lower_bound=0.0)
flags.DEFINE_integer("transfer_images", 0, "levels: this many of the source's other training "
                     "images join without labels, taught by the teacher alone (0: none).",
                     lower_bound=0)
flags.DEFINE_integer("teacher_epochs", 0, "levels: first fine-tune the teacher (the restricted "
                     "original) this many epochs on the training split against its untouched "
                     "self (alpha 0.5, lr 0.01, no mixed views); the bar stays the untouched "
                     "model (0: the bar is the teacher).", lower_bound=0)
flags.DEFINE_bool("prune_tuned", False, "levels: with --teacher_epochs, prune the tuned teacher "
                  "instead of the original (the student starts from its weights).")
flags.DEFINE_integer("level_seed", 0, "levels: the training seed (initial state, batches, "
                     "augmentation).", lower_bound=0)
flags.DEFINE_integer("level_steps", 1, "levels: reach the level in this many prunes of equal "
                     "params, the epochs split between them (each prune scores the fine-tuned "
                     "student; --target=params only).", lower_bound=1)
flags.DEFINE_enum("allocation", "global", ["global", "uniform"], "levels: one global ranking "
                  "of filters, or the same fraction of every layer.")
flags.DEFINE_list("level_blocks", [], "levels: residual branches (their Add layers) removed "
                  "whole before the channels; --levels still counts from the model with them.")
flags.DEFINE_list("recipes", [], "Recipe names of the recipes part (default: all).")
flags.DEFINE_list("phone_recipes", ["default"], "phone: names of PHONE_RECIPES.")
flags.DEFINE_list("seeds", ["0"], "phone: seeds (device images and training).")
flags.DEFINE_bool("resume", False, "main: resume the run in WORKDIR/main instead of a fresh "
                  "run (its wall time is then the sum of its stages' recorded times).")
flags.DEFINE_string("baseline_criterion", "l1", "main: the chain's baseline criterion (empty: "
                    "none, e.g. when it is measured by --part=levels instead).")
flags.DEFINE_string("workdir", "runs/adaptation", "Where runs and models go.")
flags.DEFINE_string("results", "benchmarks/results/adaptation", "JSON/Markdown path stem.")
FLAGS = flags.FLAGS

# name: (epochs, bn momentum, distill alpha, mix)
RECIPES = {
    "ce15_bn099": (15, None, 0.0, "none"),
    "ce15_bn09": (15, 0.9, 0.0, "none"),
    "kd15_bn099": (15, None, 0.9, "none"),
    "kd15_bn09": (15, 0.9, 0.9, "none"),
    "kd40_bn09": (40, 0.9, 0.9, "none"),
    "kd80_bn09": (80, 0.9, 0.9, "none"),
    "kd80_bn09_mixup": (80, 0.9, 0.9, "mixup"),
    "ce80_bn09": (80, 0.9, 0.0, "none"),
}

# name: main job settings (tfprune.jobs.main_job.ChainConfig fields) changed from PHONE_BASE;
# names starting "default" change the main job's defaults instead
PHONE_BASE = {"level": 0.5, "finetune_epochs": 80, "finetune_lr": 0.01, "distill_alpha": 0.9,
              "distill_temperature": 4.0, "distill_features": 20.0, "distill_mix": "none",
              "finetune_warmup": 0}
PHONE_RECIPES = {
    "default": {},
    # the data-agnostic rival: the main job with l1 filters, the same fine-tuning
    "default_l1": {"criterion": "l1"},
    "lr0.01": {"finetune_lr": 0.01},
    "lr0.03": {"finetune_lr": 0.03},
    "lr0.1": {"finetune_lr": 0.1},
    "lr0.3": {"finetune_lr": 0.3},
    "T2": {"distill_temperature": 2.0},
    "logits_only": {"distill_features": 0.0},
    "lr0.1_cutmix": {"finetune_lr": 0.1, "distill_mix": "cutmix"},
    "lr0.1_40ep": {"finetune_lr": 0.1, "finetune_epochs": 40},
    "lr0.1_160ep": {"finetune_lr": 0.1, "finetune_epochs": 160},
    "lr0.1_cutmix_160ep": {"finetune_lr": 0.1, "distill_mix": "cutmix", "finetune_epochs": 160},
    "lr0.1_cutmix_alpha1": {"finetune_lr": 0.1, "distill_mix": "cutmix", "distill_alpha": 1.0},
    "lr0.1_cutmix_bs32": {"finetune_lr": 0.1, "distill_mix": "cutmix", "batch_size": 32},
    "lr0.1_cutmix_ema": {"finetune_lr": 0.1, "distill_mix": "cutmix", "finetune_ema": 0.99},
    # the default's fine-tuning on a 50% params cut (tile-aligned) or a 30% latency cut
    # instead of the 50% latency cut the recipes above were measured on
    "params50": {"finetune_lr": 0.1, "distill_mix": "cutmix", "target": "params", "level": 0.5},
    "latency30": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.3},
    "latency50": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.5},
    # the default (latency30) in fewer epochs, for the main job's 5-minute goal
    "latency30_60ep": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.3,
                       "finetune_epochs": 60},
    # never below one whole kernel tile (16 channels on litert-float32-1t): the 16-channel
    # stage stays whole and the cut goes elsewhere
    "latency30_min16": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.3,
                        "min_channels": 16},
    "latency30_min16_60ep": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.3,
                             "min_channels": 16, "finetune_epochs": 60},
    # the default with the rate warmed up linearly over the first epochs (a peak of 0.1 from
    # the first step took the reconstructed model from 61% to 20% val in epoch 1)
    "default_warm3": {"finetune_warmup": 3},
    # whole residual branches removed first (their ops too, tfprune.core.depth), then channels
    "default_auto": {"blocks": "auto"},
    "default_blocks3": {"blocks": 3, "level": 0.0},
    "default_blocks2": {"blocks": 2, "level": 0.15},
    "default_blocks1": {"blocks": 1, "level": 0.25},
    "default_warm6": {"finetune_warmup": 6},
    "latency30_48ep": {"finetune_lr": 0.1, "distill_mix": "cutmix", "level": 0.3,
                       "finetune_epochs": 48},
    # 16 epochs of the device's 500 images and 3,600 of the host's (--data's train pool less
    # the device's own), which only the teacher labels: 65,600 student passes, the default's
    # 80,000 (80 epochs of 500 images and their cutmix copies) less a fifth
    "lr0.1_transfer3600_16ep": {"finetune_lr": 0.1, "finetune_epochs": 16,
                                "transfer_data": "--data", "transfer_images": 3600},
    "lr0.1_transfer7700_8ep": {"finetune_lr": 0.1, "finetune_epochs": 8,
                               "transfer_data": "--data", "transfer_images": 7700},
    # the main job's defaults with the host's images as above, in the default's student passes
    # (60 epochs of 500 images and their cutmix copies: 60,000; here 14 epochs of 4,100)
    "default_transfer3600_14ep": {"finetune_epochs": 14, "distill_mix": "none",
                                  "transfer_data": "--data", "transfer_images": 3600},
    # the defaults without the feature-map term, which on full splits mostly cost act_l2
    # 1-2 val points
    "default_f0": {"distill_features": 0.0},
}
PHONE_VAL_PER_CLASS = 50
PRUNE_SETTINGS = ("target", "level", "round_to", "min_channels", "runtime", "criterion",
                  "reconstruct_images", "blocks", "block_criterion")
# main-job settings added after rows were recorded: at these values they reproduce those
# rows, so a digest leaves them out (rows keep their names)
NEUTRAL = {"blocks": 0, "block_criterion": "auto"}


def _load(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def _save(rows: list) -> None:
    from tfprune import fileio
    stem = Path(FLAGS.results)
    fileio.atomic_write_text(stem.with_suffix(".json"), json.dumps(rows, indent=1))
    fileio.atomic_write_text(stem.with_suffix(".md"), adaptation_report.render(rows, PHONE_BASE))


def _add(row: dict) -> None:
    rows = [r for r in _load(Path(FLAGS.results).with_suffix(".json")) if r["id"] != row["id"]]
    _save(rows + [row])


def _base() -> str:
    """The pretrained base the rows were measured on, by its card's test accuracy."""
    from tfprune.models import cards, loader
    return f"{cards.read_card(loader.pretrained_path('resnet20'))['test_accuracy']:.2%}"


def _host() -> str:
    """The CPU the row ran on, short: the latency target's plans, and so the pruned models,
    differ between CPU generations (rows from before this was recorded: `earlier`)."""
    from tfprune.latency.runtimes import environment
    cpu = environment()["cpu"]
    return cpu.split(";")[0].replace(" (", ", ") if "(" in cpu else cpu


def _digest(cfg, keys=None) -> str:
    """Eight hex digits naming a main-job config: its fields `keys`, or all but data, subset
    and seed."""
    import dataclasses
    import hashlib

    fields = {k: v for k, v in dataclasses.asdict(cfg).items()
              if (k in keys if keys else k not in ("data", "subset", "seed"))
              and not (k in NEUTRAL and NEUTRAL[k] == v)}
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _done(row_id: str) -> bool:
    return any(r["id"] == row_id for r in _load(Path(FLAGS.results).with_suffix(".json")))


def part_main() -> None:
    from tfprune.jobs import main_job
    import android_export

    out = Path(FLAGS.workdir) / "main"
    if out.exists() and not FLAGS.resume:
        import shutil
        shutil.rmtree(out)
    start = time.time()
    s = main_job.run_chain(main_job.ChainConfig(baseline_criterion=FLAGS.baseline_criterion),
                           out, bundler=android_export.write_bundle)
    stages = s.get("stage_seconds") or {}
    seconds = time.time() - start if not FLAGS.resume else (
        sum(stages.values()) if stages else None)
    _add({"id": "main", "part": "main", "base": _base(), "wall_seconds": seconds,
          "config": s["config"],
          "bar": s["restricted"]["test_accuracy"], "original": s["original"]["test_accuracy"],
          "shipped": s["finetuned"]["test_accuracy"],
          "device": s["device"] and s["device"]["final_test_accuracy"],
          "l1": s["l1"] and s["l1"]["test_accuracy"], "baselines": s["baselines"],
          "finetune_seconds": s["finetuned"]["seconds"], "stage_seconds": stages,
          "l1_finetune_seconds": s["l1"] and s["l1"]["finetune_seconds"],
          "device_images_per_second": s["device"] and s["device"]["history"][-1][
              "images_per_second"],
          "validation_passed": s["validation_passed"], "test_images": s["subset"]["test"]})


def _finetune(model, teacher, splits, epochs, bn, alpha, mix, taps=(), features: float = 0.0,
              lr: float = 0.01, transfer=None, seed: int = 0, wd: float = 5e-4) -> dict:
    """The benchmark's fine-tune of `model` (in place); its Keras history."""
    from tfprune.training import fit as train
    return train.finetune(model, splits.train, epochs, lr, wd, 64, seed, None,
                          verbose=2, bn_momentum=bn,
                          teacher=teacher if alpha or features else None,
                          distill_alpha=alpha, mix=mix, taps=taps, feature_weight=features,
                          transfer_images=transfer)


def _finetune_row(row_id, model, teacher, splits, epochs, bn, alpha, mix, extra,
                  taps=(), features: float = 0.0, lr: float = 0.01, transfer=None,
                  seed: int = 0, wd: float = 5e-4) -> dict:
    from tfprune.training import fit as train
    start = time.time()
    history = _finetune(model, teacher, splits, epochs, bn, alpha, mix, taps, features, lr,
                        transfer, seed, wd)
    seconds = time.time() - start
    return {"id": row_id, "epochs": epochs, "bn_momentum": bn or 0.99, "distill_alpha": alpha,
            "distill_features": features, "mix": mix, "lr": lr, "weight_decay": wd,
            "finetune_seconds": seconds,
            "final_loss": history["loss"][-1],
            "val": train.accuracy(model, splits.val), "test": train.accuracy(model, splits.test),
            **extra}


def part_recipes() -> None:
    import keras

    from tfprune import data
    from tfprune.training import fit as train

    run = Path(FLAGS.workdir) / "main"
    if not (run / "pruned.keras").exists():
        raise SystemExit(f"run --part=main first ({run}/pruned.keras is missing)")
    splits = data.relabel(data.load_subset("sample", "aquatic", 0))
    teacher = keras.models.load_model(run / "restricted.keras", compile=False)
    bar = {"val": train.accuracy(teacher, splits.val), "test": train.accuracy(teacher, splits.test)}
    base = _base()
    for name in FLAGS.recipes or RECIPES:
        row_id = f"recipe:{name}:{base}"
        if _done(row_id):
            continue
        keras.utils.set_random_seed(0)
        model = keras.models.load_model(run / "pruned.keras", compile=False)
        epochs, bn, alpha, mix = RECIPES[name]
        row = _finetune_row(row_id, model, teacher, splits, epochs, bn, alpha, mix,
                            {"part": "recipes", "recipe": name, "base": base,
                             "bar_val": bar["val"], "bar_test": bar["test"]})
        print(json.dumps(row))
        _add(row)


def part_levels() -> None:
    import keras

    from tfprune import data, pruner
    from tfprune.core import counts, head
    from tfprune.latency import plan_terms
    from tfprune.models import loader
    from tfprune.training import fit as train
    from tfprune.training import taps

    if FLAGS.level_steps > 1 and (FLAGS.level_blocks or FLAGS.target != "params"):
        raise SystemExit("--level_steps: with --target=params and no --level_blocks only")
    if FLAGS.prune_tuned and not FLAGS.teacher_epochs:
        raise SystemExit("--prune_tuned: with --teacher_epochs only")
    full = data.load_subset(FLAGS.data, FLAGS.subset, 0)
    if FLAGS.train_per_class:
        import dataclasses
        import numpy as np
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(full.train.y == c))[:FLAGS.train_per_class]
            for c in full.classes]))
        full = dataclasses.replace(full, train=full.train.take(keep))
    splits = data.relabel(full)
    transfer = (data.transfer_images(FLAGS.data, splits, FLAGS.transfer_images, 17)[0]
                if FLAGS.transfer_images else None)
    original = loader.load_model("pretrained:resnet20")
    teacher = head.slice_head(original, full.classes)
    bar = {"val": train.accuracy(teacher, splits.val), "test": train.accuracy(teacher, splits.test)}
    tuned = {}
    if FLAGS.teacher_epochs:
        untouched, teacher = teacher, _tuned_teacher(teacher, splits)
        tuned = {"teacher_epochs": FLAGS.teacher_epochs,
                 "teacher_val": train.accuracy(teacher, splits.val),
                 "teacher_test": train.accuracy(teacher, splits.test)}
        print(json.dumps(tuned))
    # a copy: the distiller freezes its teacher, and surgery keeps a layer's `trainable`
    source = _tuned_teacher(untouched, splits) if FLAGS.prune_tuned else original
    base = _base()
    round_to, cost = plan_terms(source, FLAGS.target, FLAGS.round_to, "litert-float32-1t")
    # round_to=auto steps by the host's kernel tile: rows name it (before: `auto`, tile 16)
    tile = cost.tile if FLAGS.round_to == "auto" else None
    for level in (float(v) for v in FLAGS.levels):
        for criterion in FLAGS.criteria:
            row_id = (f"level:{FLAGS.data}:{FLAGS.subset}:{level}:{criterion}:{FLAGS.epochs}:"
                      f"{FLAGS.target}:{FLAGS.train_per_class}:{FLAGS.reconstruct_images}:"
                      f"{base}" + (f":f{FLAGS.features:g}" if FLAGS.features else "")
                      + (f":r{FLAGS.round_to}" if FLAGS.round_to != "auto" else f":tile{tile}")
                      + (f":lr{FLAGS.lr:g}" if FLAGS.lr != 0.01 else "")
                      + (f":{FLAGS.mix}" if FLAGS.mix != "none" else "")
                      + (f":a{FLAGS.alpha:g}" if FLAGS.alpha != 0.9 else "")
                      + (f":wd{FLAGS.weight_decay:g}" if FLAGS.weight_decay != 5e-4 else "")
                      + (f":t{FLAGS.transfer_images}" if FLAGS.transfer_images else "")
                      + (f":s{FLAGS.level_seed}" if FLAGS.level_seed else "")
                      + (f":teach{FLAGS.teacher_epochs}" if FLAGS.teacher_epochs else "")
                      + (":src" if FLAGS.prune_tuned else "")
                      + (f":b{'+'.join(FLAGS.level_blocks)}" if FLAGS.level_blocks else "")
                      + (f":{FLAGS.allocation}" if FLAGS.allocation != "global" else "")
                      + (f":steps{FLAGS.level_steps}" if FLAGS.level_steps > 1 else ""))
            if _done(row_id):
                continue
            keras.utils.set_random_seed(FLAGS.level_seed)
            model, kept = source, None
            between = FLAGS.epochs // FLAGS.level_steps   # epochs after each prune but the last
            for step in range(1, FLAGS.level_steps + 1):
                goal = level * step / FLAGS.level_steps      # of the teacher's params
                if step > 1:
                    _finetune(model, teacher, splits, between, 0.9, FLAGS.alpha, FLAGS.mix,
                              kept, FLAGS.features, FLAGS.lr, transfer, FLAGS.level_seed,
                              FLAGS.weight_decay)
                    round_to, cost = plan_terms(model, FLAGS.target, FLAGS.round_to,
                                                "litert-float32-1t")
                slices_head = step == 1 and source is original   # 100-way: cut to the subset
                result = pruner.prune_model(
                    model, criterion, _channel_level(teacher, goal) if step == 1
                    else 1 - (1 - goal) * teacher.count_params() / model.count_params(),
                    FLAGS.target, allocation=FLAGS.allocation, blocks=FLAGS.level_blocks,
                    round_to=round_to, cost=cost, splits=splits, calibration_batches=8,
                    bn_batches=8, head_classes=full.classes if slices_head else None,
                    class_names=full.class_names if slices_head else None,
                    reconstruct_images=FLAGS.reconstruct_images)
                model, kept = result.pruned, taps.compose(kept, taps.feature_taps(
                    result.pruned, result.plan))
            pruned_acc = {"pruned_val": train.accuracy(result.pruned, splits.val),
                          "pruned_test": train.accuracy(result.pruned, splits.test)}
            row = _finetune_row(row_id, result.pruned, teacher, splits,
                                FLAGS.epochs - (FLAGS.level_steps - 1) * between, 0.9,
                                FLAGS.alpha,
                                FLAGS.mix, {"part": "levels", "data": FLAGS.data,
                                         "subset": FLAGS.subset, "level": level,
                                         "base": base,
                                         "criterion": criterion, "bar_val": bar["val"],
                                         "target": FLAGS.target, "round_to": FLAGS.round_to,
                                         "tile": tile, "allocation": FLAGS.allocation,
                                         "train_per_class": FLAGS.train_per_class,
                                         "reconstruct_images": FLAGS.reconstruct_images,
                                         **pruned_acc,
                                         "bar_test": bar["test"],
                                         "params": counts.model_metrics(result.pruned)["params"],
                                         "train_images": len(splits.train),
                                         "transfer_images": FLAGS.transfer_images,
                                         "seed": FLAGS.level_seed,
                                         "blocks": FLAGS.level_blocks,
                                         "level_steps": FLAGS.level_steps,
                                         "epochs": FLAGS.epochs, **tuned,
                                         "prune_tuned": FLAGS.prune_tuned},
                                taps=kept,
                                features=FLAGS.features, lr=FLAGS.lr, transfer=transfer,
                                seed=FLAGS.level_seed, wd=FLAGS.weight_decay)
            print(json.dumps(row))
            _add(row)


def _tuned_teacher(bar, splits):
    """`bar` fine-tuned --teacher_epochs on `splits.train`, distilling from its untouched self;
    cached in the workdir by base, data, subset, training images and epochs."""
    import hashlib

    import keras

    from tfprune.training import fit as train
    key = hashlib.sha1(f"{_base()}:{FLAGS.data}:{FLAGS.subset}:{FLAGS.train_per_class}:"
                       f"{FLAGS.teacher_epochs}".encode()).hexdigest()[:10]
    path = Path(FLAGS.workdir) / f"teacher_{key}.keras"
    if not path.exists():
        tuned = keras.models.clone_model(bar)
        tuned.set_weights(bar.get_weights())
        keras.utils.set_random_seed(0)
        train.finetune(tuned, splits.train, FLAGS.teacher_epochs, 0.01, verbose=2,
                       teacher=bar, distill_alpha=0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        train.atomic_save(tuned, path, optimizer=False)
    return keras.models.load_model(path, compile=False)


def _channel_level(teacher, level: float) -> float:
    """The channels' share of `level` (of `teacher`'s params) once --level_blocks are gone."""
    if not FLAGS.level_blocks:
        return level
    from tfprune.core import depth
    left = depth.remove_branches(teacher, FLAGS.level_blocks).count_params()
    return max(0.0, depth.channel_level(level, teacher.count_params(), left))


def _phone_splits(seed: int):
    """The subset's splits with the device's images and val drawn from its val split."""
    import dataclasses

    import numpy as np

    from tfprune import data
    full = data.load_subset(FLAGS.data, FLAGS.subset, 0)  # seed 0: the base's held-out split
    rng = np.random.default_rng([seed, 99])
    device, val = [], []
    for c in full.classes:
        order = rng.permutation(np.flatnonzero(full.val.y == c))
        if len(order) < FLAGS.train_per_class + PHONE_VAL_PER_CLASS:
            raise SystemExit(f"--train_per_class {FLAGS.train_per_class}: class {c} has "
                             f"{len(order)} val images, {PHONE_VAL_PER_CLASS} more are needed")
        device.append(order[:FLAGS.train_per_class])
        val.append(order[FLAGS.train_per_class:FLAGS.train_per_class + PHONE_VAL_PER_CLASS])
    return dataclasses.replace(full, train=full.val.take(np.sort(np.concatenate(device))),
                               val=full.val.take(np.sort(np.concatenate(val))))


def _agreement(model, teacher, images) -> tuple[dict, float]:
    """`model`'s top-1 accuracy on `images` and its top-1 agreement with `teacher`, and the
    teacher's accuracy (each model run once)."""
    from tfprune.training import fit as train

    student, bar = train.top1(model, images), train.top1(teacher, images)
    return ({"accuracy": float((student == images.y).mean()),
             "agreement": float((student == bar).mean())}, float((bar == images.y).mean()))


def part_phone() -> None:
    import dataclasses
    import shutil

    import keras

    from tfprune import data
    from tfprune.jobs import main_job

    if not FLAGS.train_per_class:
        raise SystemExit("--part=phone needs --train_per_class (the device's images a class)")
    base = _base()
    for seed in (int(v) for v in FLAGS.seeds):
        splits = _phone_splits(seed)
        for name in FLAGS.phone_recipes:
            if name not in PHONE_RECIPES:
                raise SystemExit(f"--phone_recipes: unknown recipe {name!r}; choose from "
                                 f"{', '.join(PHONE_RECIPES)}")
            defaults = name.startswith("default")
            settings = PHONE_RECIPES[name] if defaults \
                else {**PHONE_BASE, **PHONE_RECIPES[name]}
            settings = {k: FLAGS.data if v == "--data" else v for k, v in settings.items()}
            cfg = dataclasses.replace(main_job.ChainConfig(), data=FLAGS.data,
                                      subset=FLAGS.subset, seed=seed, **settings)
            # the defaults change between sessions: their runs are named by the config
            digest = _digest(cfg) if defaults else None
            row_id = (f"phone:{FLAGS.data}:{FLAGS.subset}:{FLAGS.train_per_class}:{seed}:"
                      f"{name}:{base}:{_host()}" + (f":{digest}" if digest else ""))
            # recipes that prune alike share the pruned model
            pruning = f"_defaults{_digest(cfg, PRUNE_SETTINGS)}" if defaults else "".join(
                f"_{k}{v}" for k, v in settings.items() if k in PRUNE_SETTINGS)
            shared = (Path(FLAGS.workdir) /
                      f"phone_{FLAGS.subset}_{FLAGS.train_per_class}_s{seed}{pruning}")
            out = shared / (f"{name}_{digest}" if digest else name)
            if _done(row_id):
                _measure_speedup(row_id, out)
                continue
            shared.mkdir(parents=True, exist_ok=True)
            run = main_job.Run(cfg, shared, splits, data.relabel(splits))
            keras.utils.set_random_seed(seed)
            if not (shared / "restricted.json").exists():
                main_job.evaluate(run)
            if not (shared / "pruned.json").exists():
                main_job.prune(run)
            pruned = run.read("pruned.json")
            out.mkdir(exist_ok=True)
            for f in ("restricted.keras", "pruned.keras", "plan.json"):
                shutil.copy(shared / f, out / f)
            run = dataclasses.replace(run, dir=out)
            if not (out / "finetuned.json").exists():  # a killed benchmark resumes here
                main_job.finetune(run)
            model, teacher = run.load("finetuned.keras"), run.load("restricted.keras")
            row = {"id": row_id, "part": "phone", "base": base, "data": FLAGS.data,
                   "subset": FLAGS.subset, "train_per_class": FLAGS.train_per_class,
                   "seed": seed, "recipe": name, "settings": PHONE_RECIPES[name],
                   "finetune": {k: getattr(cfg, k) for k in PHONE_BASE},
                   "finetune_seconds": run.read("finetuned.json")["seconds"],
                   "pruned_test": pruned["test_accuracy"], "host": _host(),
                   "params": pruned["params"], **_macs(shared),
                   "speedup": _speedup(teacher, model)}
            for split in ("train", "val", "test"):
                row[split], row[f"bar_{split}"] = _agreement(
                    model, teacher, getattr(run.head_splits, split))
            print(json.dumps(row))
            _add(row)


def _speedup(before, after, rounds: int = 15) -> float:
    """Measured speed-up of `after` over `before`, float32 LiteRT, 1 thread, side by side."""
    from tfprune.latency import timing
    per_round = timing.time_interleaved(
        {"before": timing.to_tflite(before, "float32"),
         "after": timing.to_tflite(after, "float32")}, 1, rounds=rounds, invokes=20)
    return 1.0 / timing.paired_ratio(per_round, "after", "before")


def _macs(shared: Path) -> dict:
    """MACs of the pruned model and of the bar, from the run's records."""
    return {"macs": json.loads((shared / "pruned.json").read_text())["macs"],
            "bar_macs": json.loads((shared / "restricted.json").read_text())["macs"]}


def _measure_speedup(row_id: str, out: Path) -> None:
    """A finished row recorded before speed-ups (or MACs) were: add them from its run."""
    import keras
    row = next(r for r in _load(Path(FLAGS.results).with_suffix(".json")) if r["id"] == row_id)
    extra = {}
    if "speedup" not in row and (out / "finetuned.keras").exists():
        load = lambda name: keras.models.load_model(out / name, compile=False)
        extra["speedup"] = _speedup(load("restricted.keras"), load("finetuned.keras"))
    if "macs" not in row and (out.parent / "restricted.json").exists():
        extra.update(_macs(out.parent))
    if extra:
        _add(dict(row, **extra))


def main(argv):
    del argv
    from tfprune import console
    console.quiet_logs()
    if FLAGS.level_blocks and FLAGS.target != "params":
        raise app.UsageError("--level_blocks counts the level in params: it needs "
                             "--target=params")
    {"main": part_main, "recipes": part_recipes, "levels": part_levels, "phone": part_phone,
     "render": lambda: _save(_load(Path(FLAGS.results).with_suffix(".json")))}[FLAGS.part]()


if __name__ == "__main__":
    app.run(main)
