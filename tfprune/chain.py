"""The main job's chain: evaluate -> prune on the subset's data -> fine-tune -> export
(float32, int8, trainable) -> validate -> report, in one run directory.

Each stage writes its outputs into the run directory and is skipped when they already exist,
so a stopped run resumes at the first unfinished stage. `run_chain` returns the summary that
`report.md` shows.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tfprune import data, train


@dataclasses.dataclass
class ChainConfig:
    model: str = "pretrained:resnet20"
    data: str = "sample"
    subset: str = "aquatic"
    criterion: str = "act_l2"
    level: float = 0.5
    target: str = "params"
    round_to: int = 1
    calibration_batches: int = 8
    bn_batches: int = 8
    finetune_epochs: int = 15
    finetune_lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 64
    calibration_samples: int = 400
    latency_runs: int = 30
    seed: int = 0


# What each exported file must pass: (file, targets, parity + latency against the Keras model).
# The trainable model is for the CPU runtime only; its own agreement with Keras training is
# tested in tests/test_ondevice_*.
VALIDATION_TARGETS = (("model_float32.tflite", ("android-cpu", "android-gpu"), True),
                      ("model_int8.tflite", ("android-cpu", "edgetpu"), True),
                      ("trainable/trainable.tflite", ("android-cpu",), False))


def _stage(run_dir: Path, name: str, outputs: tuple[str, ...], fn, log) -> None:
    if all((run_dir / o).exists() for o in outputs):
        log(f"[{name}] done before, skipped ({', '.join(outputs)})")
        return
    start = time.time()
    log(f"[{name}] ...")
    fn()
    log(f"[{name}] {time.time() - start:.1f} s")


def _write_json(path: Path, obj) -> None:
    train.atomic_write_text(path, json.dumps(obj, indent=1))


def run_chain(cfg: ChainConfig, run_dir, log=print) -> dict:
    """Run (or resume) every stage; returns the summary written to summary.json."""
    import keras

    from tfprune import convert, metrics, modelio, pruning, validate
    from tfprune.ondevice import export_trainable
    from tfprune.validate import report as validation_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    splits = data.load_subset(cfg.data, cfg.subset, cfg.seed)
    load = lambda name: keras.models.load_model(run_dir / name, compile=False)

    def baseline():
        model = modelio.load_model(cfg.model)
        model.optimizer = None
        train.atomic_save(model, run_dir / "original.keras")
        _write_json(run_dir / "original.json", {
            "test_accuracy": train.accuracy(model, splits.test), **_totals(metrics, model)})

    def prune():
        result = pruning.prune_model(
            load("original.keras"), cfg.criterion, cfg.level, cfg.target, round_to=cfg.round_to,
            seed=cfg.seed, splits=splits, calibration_batches=cfg.calibration_batches,
            batch_size=cfg.batch_size, bn_batches=cfg.bn_batches)
        from tfprune import plan as plan_mod
        plan_mod.save_plan(result.plan, run_dir / "plan.json")
        train.atomic_save(result.pruned, run_dir / "pruned.keras")
        _write_json(run_dir / "pruned.json", {
            "test_accuracy": train.accuracy(result.pruned, splits.test),
            "achieved": result.plan["achieved"], **_totals(metrics, result.pruned)})

    def finetune():
        model = load("pruned.keras")
        steps = -(-len(splits.train) // cfg.batch_size)
        schedule = train.cosine_schedule(cfg.finetune_lr, cfg.finetune_epochs, steps)
        train.compile_sgd(model, schedule, cfg.weight_decay)
        history = model.fit(
            data.as_dataset(splits.train, cfg.batch_size, training=True, seed=cfg.seed),
            validation_data=data.as_dataset(splits.val, 256), epochs=cfg.finetune_epochs,
            verbose=2).history
        model.optimizer = None
        train.atomic_save(model, run_dir / "finetuned.keras")
        _write_json(run_dir / "finetuned.json", {
            "test_accuracy": train.accuracy(model, splits.test), "history": history,
            **_totals(metrics, model)})

    def export():
        model = load("finetuned.keras")
        calibration = convert.calibration_images(splits.train, cfg.calibration_samples, cfg.seed)
        convert.write_tflite(convert.convert(model, "float32"), run_dir / "model_float32.tflite")
        convert.write_tflite(convert.convert(model, "int8", calibration=calibration),
                             run_dir / "model_int8.tflite")
        export_trainable(model, run_dir / "trainable", batch_size=32)

    def validation():
        model = load("finetuned.keras")
        parts = [validate.validate([run_dir / name], targets, keras_model=model if parity else None,
                                   images=splits.test, latency_runs=cfg.latency_runs if parity else 0)
                 for name, targets, parity in VALIDATION_TARGETS]
        rep = parts[0]
        rep.update(targets=sorted({t for p in parts for t in p["targets"]}),
                   keras_model=str(run_dir / "finetuned.keras"),
                   data={"data": cfg.data, "subset": cfg.subset, "split": "test"},
                   files=[f for p in parts for f in p["files"]],
                   failed_gates=[g for p in parts for g in p["failed_gates"]])
        rep["passed"] = not rep["failed_gates"]
        validation_report.write(rep, run_dir)

    _stage(run_dir, "evaluate", ("original.keras", "original.json"), baseline, log)
    _stage(run_dir, "prune", ("pruned.keras", "plan.json", "pruned.json"), prune, log)
    _stage(run_dir, "finetune", ("finetuned.keras", "finetuned.json"), finetune, log)
    _stage(run_dir, "export", ("model_float32.tflite", "model_int8.tflite",
                               "trainable/trainable.tflite"), export, log)
    _stage(run_dir, "validate", ("validation.json", "validation.md"), validation, log)
    summary = _summary(cfg, run_dir, splits)
    _write_json(run_dir / "summary.json", summary)
    from tfprune.chain_report import write_report
    write_report(summary, run_dir)
    return summary


def _totals(metrics, model) -> dict:
    counts = metrics.model_metrics(model)
    return {k: counts[k] for k in ("params", "macs", "bytes", "filters")}


def _summary(cfg: ChainConfig, run_dir: Path, splits) -> dict:
    read = lambda name: json.loads((run_dir / name).read_text())
    validation = read("validation.json")
    files = {Path(f["path"]).name: f for f in validation["files"]}
    return {
        "config": dataclasses.asdict(cfg),
        "subset": {"classes": len(splits.classes), "train": len(splits.train),
                   "val": len(splits.val), "test": len(splits.test)},
        "original": read("original.json"), "pruned": read("pruned.json"),
        "finetuned": {k: v for k, v in read("finetuned.json").items() if k != "history"},
        "tflite": {name: {"size_bytes": f.get("size_bytes"),
                          "latency": f.get("latency"),
                          "accuracy": (f.get("parity") or {}).get("tflite_accuracy"),
                          "gates": {g["gate"]: g["passed"] for g in f["gates"]}}
                   for name, f in files.items()},
        "validation_passed": validation["passed"],
        "failed_gates": validation["failed_gates"],
    }
