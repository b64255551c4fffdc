"""The main job's chain: evaluate -> prune on the subset's data -> fine-tune -> export
(float32, int8, trainable) -> validate -> bundle -> on-device fine-tuning -> report, in one
run directory. The unpruned model is exported and validated too (`original/`), so the report
sets both side by side.

Each stage writes its outputs into the run directory and is skipped when they already exist,
so a stopped run resumes at the first unfinished stage. `run_chain` returns the summary that
`report.md` shows. The bundle stage calls the `bundler` it is given (the app passes
`android_export.write_bundle`; the library does not import the packaging layer above it).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tfprune import data
from tfprune.litert import targets as exports
from tfprune.litert.validate import gate_failed
from tfprune.training import fit as train


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
    device_batch_size: int = 32
    bundle_model: str = "float32"
    device_epochs: int = 2
    device_lr: float = 0.002
    allow_failed_validation: bool = False
    seed: int = 0


# The files of a run (targets per kind: tfprune.litert.targets); the unpruned model's go to original/.
INFERENCE_FILES = (("model_float32.tflite", "float32"), ("model_int8.tflite", "int8"))
SHIPPED_FILES = INFERENCE_FILES + (("trainable/trainable.tflite", "trainable"),)
BUNDLE_MODELS = exports.INFERENCE_KINDS


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


def run_chain(cfg: ChainConfig, run_dir, log=print, bundler=None) -> dict:
    """Run (or resume) every stage; returns the summary written to summary.json.
    `bundler(out_dir, **files)` packages the validated models (android_export.write_bundle);
    without one the bundle stage is left out and the device stage runs trainable/."""
    import keras

    from tfprune.core import counts as metrics
    from tfprune.models import loader as modelio
    from tfprune import pruner as pruning
    from tfprune.ondevice import export_trainable
    from tfprune.litert.validate import report as validation_report

    if cfg.bundle_model not in BUNDLE_MODELS:
        raise ValueError(f"bundle_model must be one of {BUNDLE_MODELS}, got {cfg.bundle_model!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    splits = data.load_subset(cfg.data, cfg.subset, cfg.seed)
    load = lambda name: keras.models.load_model(run_dir / name, compile=False)

    def baseline():
        model = modelio.load_model(cfg.model)
        train.atomic_save(model, run_dir / "original.keras", optimizer=False)
        _write_json(run_dir / "original.json", {
            "test_accuracy": train.accuracy(model, splits.test), **_totals(metrics, model)})

    def prune():
        result = pruning.prune_model(
            load("original.keras"), cfg.criterion, cfg.level, cfg.target, round_to=cfg.round_to,
            seed=cfg.seed, splits=splits, calibration_batches=cfg.calibration_batches,
            batch_size=cfg.batch_size, bn_batches=cfg.bn_batches)
        from tfprune.core import plan as plan_mod
        plan_mod.save_plan(result.plan, run_dir / "plan.json")
        train.atomic_save(result.pruned, run_dir / "pruned.keras")
        _write_json(run_dir / "pruned.json", {
            "test_accuracy": train.accuracy(result.pruned, splits.test),
            "achieved": result.plan["achieved"], **_totals(metrics, result.pruned)})

    def finetune():
        model = load("pruned.keras")
        history = train.finetune(model, splits.train, cfg.finetune_epochs, cfg.finetune_lr,
                                 cfg.weight_decay, cfg.batch_size, cfg.seed, splits.val)
        train.atomic_save(model, run_dir / "finetuned.keras", optimizer=False)
        _write_json(run_dir / "finetuned.json", {
            "test_accuracy": train.accuracy(model, splits.test), "history": history,
            **_totals(metrics, model)})

    def export_inference(model, out: Path):
        for name, kind in INFERENCE_FILES:
            exports.export_inference(model, kind, out / name, train_images=splits.train,
                                     calibration_samples=cfg.calibration_samples, seed=cfg.seed)

    def export():
        model = load("finetuned.keras")
        export_inference(model, run_dir)
        export_trainable(model, run_dir / "trainable", batch_size=cfg.device_batch_size)

    def validate_into(out: Path, keras_name: str, files):
        validation_report.write(exports.validate_exports(
            [(out / name, kind) for name, kind in files], keras_model=load(keras_name),
            images=splits.test, latency_runs=cfg.latency_runs,
            keras_source=str(run_dir / keras_name),
            data={"data": cfg.data, "subset": cfg.subset, "split": "test"}), out)

    def baseline_export():
        export_inference(load("original.keras"), run_dir / "original")
        validate_into(run_dir / "original", "original.keras", INFERENCE_FILES)

    def bundle():
        bundler(run_dir / "bundle", model_tflite=run_dir / f"model_{cfg.bundle_model}.tflite",
                trainable_dir=run_dir / "trainable",
                validation=json.loads((run_dir / "validation.json").read_text()),
                class_names=splits.class_names, subset_classes=list(splits.classes),
                source={"model": cfg.model, "data": cfg.data, "subset": cfg.subset,
                        "criterion": cfg.criterion, "level": cfg.level, "target": cfg.target},
                allow_failed_validation=cfg.allow_failed_validation)

    def device():
        from tfprune.ondevice import finetune as device_ft
        from tfprune.ondevice.runtime import TrainableRuntime

        trainable = (run_dir / "bundle" if bundled else run_dir / "trainable") / "trainable.tflite"
        manifest = run_dir / "trainable" / "trainable.json"
        result = device_ft.device_finetune(
            lambda: TrainableRuntime(trainable, manifest), splits.train, splits.test,
            cfg.device_epochs, f"0:{cfg.device_lr}", run_dir / "device", seed=cfg.seed,
            restart_after=max(1, cfg.device_epochs // 2), log=log)
        result.pop("runtime")
        _write_json(run_dir / "device.json", {"trainable": str(trainable), **result})

    _stage(run_dir, "evaluate", ("original.keras", "original.json"), baseline, log)
    _stage(run_dir, "prune", ("pruned.keras", "plan.json", "pruned.json"), prune, log)
    _stage(run_dir, "finetune", ("finetuned.keras", "finetuned.json"), finetune, log)
    _stage(run_dir, "export", ("model_float32.tflite", "model_int8.tflite",
                               "trainable/trainable.tflite"), export, log)
    _stage(run_dir, "validate", ("validation.json", "validation.md"),
           lambda: validate_into(run_dir, "finetuned.keras", SHIPPED_FILES), log)
    _stage(run_dir, "baseline", tuple(f"original/{n}" for n in (
        "model_float32.tflite", "model_int8.tflite", "validation.json")), baseline_export, log)
    # only the bundled files' gates decide (as in write_bundle); a failed int8 gate does not
    # hold back a float32 bundle, though the run still exits non-zero
    report = json.loads((run_dir / "validation.json").read_text())
    passed = not any(gate_failed(g) for name in (f"model_{cfg.bundle_model}.tflite",
                                                 "trainable/trainable.tflite")
                     for f in exports.report_entries(report, run_dir / name) for g in f["gates"])
    bundled = bool(bundler) and (passed or cfg.allow_failed_validation)
    if bundled:
        _stage(run_dir, "bundle", ("bundle/manifest.json",), bundle, log)
    elif bundler:
        log("[bundle] refused: a bundled file failed the validation gate (see validation.md); "
            "allow_failed_validation bundles anyway")
    if cfg.device_epochs > 0:
        _stage(run_dir, "device", ("device.json",), device, log)
    summary = _summary(cfg, run_dir, splits)
    _write_json(run_dir / "summary.json", summary)
    from tfprune.jobs.main_report import write_report
    write_report(summary, run_dir)
    return summary


def _totals(metrics, model) -> dict:
    counts = metrics.model_metrics(model)
    return {k: counts[k] for k in ("params", "macs", "bytes", "filters")}


def _tflite_rows(validation: dict) -> dict:
    return {Path(f["path"]).name: {
        "size_bytes": f.get("size_bytes"), "latency": f.get("latency"),
        "accuracy": (f.get("parity") or {}).get("tflite_accuracy"),
        "gates": {g["gate"]: g.get("status", "pass" if g["passed"] else "fail") for g in f["gates"]},
        "gpu_check": (f.get("targets", {}).get("android-gpu") or {}).get("summary")}
        for f in validation["files"]}


def _summary(cfg: ChainConfig, run_dir: Path, splits) -> dict:
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).exists() else None
    validation = read("validation.json")
    bundle, device = read("bundle/manifest.json"), read("device.json")
    return {
        "config": dataclasses.asdict(cfg),
        "subset": {"classes": len(splits.classes), "train": len(splits.train),
                   "val": len(splits.val), "test": len(splits.test)},
        "original": read("original.json"), "pruned": read("pruned.json"),
        "finetuned": {k: v for k, v in read("finetuned.json").items() if k != "history"},
        "tflite": _tflite_rows(validation),
        "original_tflite": _tflite_rows(read("original/validation.json")),
        "validation_passed": validation["passed"],
        "failed_gates": validation["failed_gates"],
        "bundle": bundle and {"dir": str(run_dir / "bundle"),
                              "files": {k: v.get("size_bytes") for k, v in bundle["files"].items()}},
        "device": device and {k: device.get(k) for k in (
            "trainable", "initial_test_accuracy", "final_test_accuracy", "epochs_done",
            "history", "restart")},
    }
