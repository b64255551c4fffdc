"""The main job's chain: evaluate -> prune on the subset's data -> fine-tune -> export
(float32, int8, trainable) -> validate -> baselines -> side-by-side timing -> bundle ->
on-device fine-tuning -> report, in one run directory.

With `head="subset"` (the default) the classifier is cut to the subset's classes before
pruning (tfprune.core.head; labels 0..k-1 in subset order, `tfprune.data.relabel`), and the
fine-tune distils from the original model restricted to those classes (`restricted.keras`,
the bar to beat) unless `distill_alpha` is 0, on the logits and (`distill_features`) on the
residual streams' feature maps at the channels the plan kept. The report sets the shipped
model against the original (100-way and restricted), and against data-agnostic `l1` filters
pruned to the same level with the same fine-tuning (`l1/`).

Each stage is a module-level function of a `Run` (config, directory, splits, log) that writes
its outputs into the run directory; `run_chain` skips a stage whose outputs exist, so a
stopped run resumes at the first unfinished stage. The bundle stage calls the `bundler` it
is given (the app passes `android_export.write_bundle`; the library does not import the
packaging layer above it).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from tfprune import data, fileio, shipping
from tfprune.litert import targets as exports
from tfprune.litert.validate import gate_failed
from tfprune.training import fit as train
from tfprune.errors import TfpruneError
from tfprune.jobs.main_report import verdict

F32_1T = "litert-float32-1t"  # the baselines' latency column and the verdict's speed-up


@dataclasses.dataclass
class ChainConfig:
    model: str = "pretrained:resnet20"
    data: str = "sample"
    subset: str = "aquatic"
    head: str = "subset"
    criterion: str = "act_l2"
    level: float = 0.3
    target: str = "latency"
    round_to: int | str = "auto"
    min_channels: int = 2
    blocks: int | str = 0
    block_criterion: str = "auto"
    runtime: str = "litert-float32-1t"
    calibration_batches: int = 8
    bn_batches: int = 8
    reconstruct_images: int = 1000
    finetune_epochs: int = 60
    finetune_lr: float = 0.1
    finetune_ema: float = 0.0
    finetune_warmup: int = 0
    weight_decay: float = 5e-4
    batch_size: int = 64
    distill_alpha: float = 0.9
    distill_temperature: float = 4.0
    distill_features: float = 20.0
    distill_mix: str = "cutmix"
    transfer_data: str = ""
    transfer_images: int = 0
    baseline_criterion: str = "l1"
    calibration_samples: int = 400
    latency_runs: int = 30
    device_batch_size: int = 32
    bundle_model: str = "float32"
    device_epochs: int = 2
    device_lr: float = 0.002
    allow_failed_validation: bool = False
    seed: int = 0


HEADS = ("subset", "full")
STAGES = "stages.json"  # seconds each stage took when it ran (a resumed run keeps the first)
BUNDLE_MODELS = exports.INFERENCE_KINDS


@dataclasses.dataclass
class Run:
    """What every stage works on: the config, the run directory, the subset's splits (labels
    of the full class space) and the splits the adapted model uses (relabelled for a subset
    head), and the log."""

    cfg: ChainConfig
    dir: Path
    splits: data.Splits
    head_splits: data.Splits
    log: Callable = print
    bundler: Callable | None = None

    def load(self, name: str):
        import keras
        return keras.models.load_model(self.dir / name, compile=False)

    def read(self, name: str):
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_json(self, name: str, obj) -> None:
        (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_text(self.dir / name, json.dumps(obj, indent=1))

    @property
    def subset_head(self) -> bool:
        return self.cfg.head == "subset"

    @property
    def teacher_name(self) -> str:
        return "restricted.keras" if self.subset_head else "original.keras"


def _totals(model) -> dict:
    from tfprune.core import counts as metrics
    counts = metrics.model_metrics(model)
    return {k: counts[k] for k in ("params", "macs", "bytes", "filters")}


def _export_for_speed(run: Run, model, role: str) -> None:
    """`model` as the float32 LiteRT file the speed stage times for `role` (SIDE_BY_SIDE)."""
    from tfprune.latency.report import SIDE_BY_SIDE
    exports.export_inference(model, "float32", run.dir / SIDE_BY_SIDE["float32"][role])


def evaluate(run: Run) -> None:
    """original.keras and its 100-way accuracy; restricted.keras (the original cut to the
    subset's classes: the bar, and the distillation teacher) with its accuracy and latency."""
    from tfprune.core import head
    from tfprune.models import loader

    model = loader.load_model(run.cfg.model)
    train.atomic_save(model, run.dir / "original.keras", optimizer=False)
    restricted = head.slice_head(model, run.splits.classes)
    train.atomic_save(restricted, run.dir / "restricted.keras", optimizer=False)
    _export_for_speed(run, restricted, "bar")
    run.write_json("restricted.json", {
        "test_accuracy": train.accuracy(restricted, data.relabel(run.splits).test),
        **_totals(restricted)})
    run.write_json("original.json", {"test_accuracy": train.accuracy(model, run.splits.test),
                                     **_totals(model)})


def _prune(run: Run, criterion: str, blocks=None, level=None):
    from tfprune import pruner
    from tfprune.latency import plan_terms
    cfg = run.cfg
    original = run.load("original.keras")

    def terms(model):
        return plan_terms(model, cfg.target, cfg.round_to, cfg.runtime, log=run.log)
    return pruner.prune_model(
        original, criterion, cfg.level if level is None else level, cfg.target, terms=terms,
        blocks=cfg.blocks if blocks is None else blocks,
        block_criterion=cfg.block_criterion,
        min_channels=cfg.min_channels, seed=cfg.seed, splits=run.head_splits,
        calibration_batches=cfg.calibration_batches,
        batch_size=cfg.batch_size, bn_batches=cfg.bn_batches,
        reconstruct_images=cfg.reconstruct_images, log=run.log,
        head_classes=run.splits.classes if run.subset_head else None,
        class_names=run.splits.class_names)


def prune(run: Run) -> None:
    from tfprune.core import plan as plan_mod
    result = _prune(run, run.cfg.criterion)
    plan_mod.save_plan(result.plan, run.dir / "plan.json")
    train.atomic_save(result.pruned, run.dir / "pruned.keras")
    run.write_json("pruned.json", {
        "test_accuracy": train.accuracy(result.pruned, run.head_splits.test),
        "achieved": result.plan["achieved"], "depth": result.plan.get("depth"),
        **_totals(result.pruned),
        "reconstruction": result.reconstruction,
        **_predicted_latency(run, result)})


def _predicted_latency(run: Run, result) -> dict:
    """Latency model predictions of the plan on every runtime (for the report's predicted vs
    measured table); with a depth cut, "unpruned" is the model before it."""
    from tfprune.latency.report import predict_plan

    before = None
    if result.plan.get("depth"):
        before = run.load("restricted.keras" if run.subset_head else "original.keras")
    return {"runtime": result.plan.get("runtime"), "predicted_latency_ms": predict_plan(
        result.source, result.graph, result.plan, log=run.log, unpruned=before)}


def _transfer_images(run: Run):
    cfg = run.cfg
    if not cfg.transfer_data or cfg.distill_alpha <= 0:
        return None
    # the device's own images never join as unlabelled transfer images
    images, own = data.transfer_images(cfg.transfer_data, run.splits, cfg.transfer_images,
                                       [cfg.seed, 17])
    run.log(f"[finetune] {len(images)} transfer images from {cfg.transfer_data} ({own} "
            "of its images are the run's own and left out)")
    return images


def _finetune(run: Run, model, plan: dict) -> dict:
    """The fine-tuning every adapted model gets (shipped and baseline alike; `plan` pruned
    it); returns {history, seconds}."""
    from tfprune.training import taps
    cfg = run.cfg
    distils = cfg.distill_alpha > 0 or cfg.distill_features > 0
    teacher = run.load(run.teacher_name) if distils else None
    start = time.time()
    history = train.finetune(
        model, run.head_splits.train, cfg.finetune_epochs, cfg.finetune_lr, cfg.weight_decay,
        cfg.batch_size, cfg.seed, run.head_splits.val, teacher=teacher,
        distill_alpha=cfg.distill_alpha, distill_temperature=cfg.distill_temperature,
        mix=cfg.distill_mix, transfer_images=_transfer_images(run),
        taps=taps.feature_taps(model, plan) if cfg.distill_features > 0 else (),
        feature_weight=cfg.distill_features, ema=cfg.finetune_ema,
        warmup_epochs=cfg.finetune_warmup)
    return {"history": history, "seconds": time.time() - start}


def finetune(run: Run) -> None:
    model = run.load("pruned.keras")
    done = _finetune(run, model, run.read("plan.json"))
    train.atomic_save(model, run.dir / "finetuned.keras", optimizer=False)
    run.write_json("finetuned.json", {
        "test_accuracy": train.accuracy(model, run.head_splits.test), **done, **_totals(model)})


def baseline_pruning(run: Run) -> None:
    """The data-agnostic baseline: `baseline_criterion` filters at the same level, the same
    head and the same fine-tuning; accuracy and size in l1/result.json, and its float32 file
    for the speed stage.
    With blocks auto it removes as many branches as the shipped plan (its own choice of
    which) and cuts channels at the shipped plan's level: the count was chosen on the
    device's images, which the baseline does not see."""
    blocks = level = None
    depth = (run.read("plan.json").get("depth") or {}) if run.cfg.blocks == "auto" else {}
    if "removed" in depth:
        blocks, level = len(depth["removed"]), run.read("plan.json")["level"]
    result = _prune(run, run.cfg.baseline_criterion, blocks, level)
    model = result.pruned
    done = _finetune(run, model, result.plan)
    (run.dir / "l1").mkdir(exist_ok=True)
    train.atomic_save(model, run.dir / "l1" / "finetuned.keras", optimizer=False)
    # before result.json, which marks the stage done
    _export_for_speed(run, model, "baseline")
    run.write_json("l1/result.json", {
        "criterion": run.cfg.baseline_criterion, "achieved": result.plan["achieved"],
        "depth": result.plan.get("depth"),
        "test_accuracy": train.accuracy(model, run.head_splits.test),
        "finetune_seconds": done["seconds"], **_totals(model)})


def _export(run: Run, model, out: Path, stage: str, trainable: bool) -> None:
    shipping.export(model, out, train_images=run.head_splits.train,
                    calibration_samples=run.cfg.calibration_samples, seed=run.cfg.seed,
                    trainable=trainable, batch_size=run.cfg.device_batch_size, log=run.log,
                    prefix=f"[{stage}] ")


def _validate(run: Run, out: Path, keras_name: str, trainable: bool, splits) -> None:
    from tfprune.litert.validate import report as validation_report
    validation_report.write(exports.validate_exports(
        shipping.files(out, exports.INFERENCE_KINDS, trainable),
        keras_model=run.load(keras_name), images=splits.test,
        latency_runs=run.cfg.latency_runs, keras_source=str(run.dir / keras_name),
        data={"data": run.cfg.data, "subset": run.cfg.subset, "split": "test"}), out)


def export(run: Run) -> None:
    _export(run, run.load("finetuned.keras"), run.dir, "export", trainable=True)


def validate(run: Run) -> None:
    _validate(run, run.dir, "finetuned.keras", True, run.head_splits)


def baseline_export(run: Run) -> None:
    _export(run, run.load("original.keras"), run.dir / "original", "baseline", trainable=False)
    run.log("[baseline] validating the unpruned model's files")
    _validate(run, run.dir / "original", "original.keras", False, run.splits)


def speed(run: Run) -> None:
    """The run's LiteRT files timed side by side on every runtime (speed.json): every latency
    and speed-up the report gives."""
    from tfprune.latency.report import time_run

    measured = time_run(run.dir)
    run.write_json("speed.json", measured)
    for rt, m in measured.items():
        run.log(f"[speed] {rt}: shipped {m['ms']['shipped']:.3f} ms, {m['speedup']:.2f}x the "
                f"{m['reference']}'s speed (side by side)")


def bundle_allowed(run: Run) -> bool:
    """Only the bundled files' gates decide (as in write_bundle): a failed int8 gate does not
    hold back a float32 bundle, though the run still exits non-zero."""
    report = run.read("validation.json")
    passed = not any(gate_failed(g) for name in (f"model_{run.cfg.bundle_model}.tflite",
                                                 "trainable/trainable.tflite")
                     for f in exports.report_entries(report, run.dir / name) for g in f["gates"])
    return bool(run.bundler) and (passed or run.cfg.allow_failed_validation)


def bundle(run: Run) -> None:
    cfg, splits = run.cfg, run.head_splits
    run.bundler(run.dir / "bundle", model_tflite=run.dir / f"model_{cfg.bundle_model}.tflite",
                trainable_dir=run.dir / "trainable", validation=run.read("validation.json"),
                class_names=splits.class_names, subset_classes=list(splits.classes),
                source={"model": cfg.model, "data": cfg.data, "subset": cfg.subset,
                        "head": cfg.head, "source_classes": list(run.splits.classes),
                        "criterion": cfg.criterion, "level": cfg.level, "target": cfg.target},
                allow_failed_validation=cfg.allow_failed_validation)


def device(run: Run) -> None:
    """On-device fine-tuning of the bundle's trainable model (or trainable/ without a bundle)."""
    from tfprune.ondevice import finetune as device_ft
    from tfprune.ondevice.runtime import TrainableRuntime

    cfg = run.cfg
    bundled = bundle_allowed(run) and (run.dir / "bundle" / "manifest.json").exists()
    trainable = (run.dir / "bundle" if bundled else run.dir / "trainable") / "trainable.tflite"
    manifest = run.dir / "trainable" / "trainable.json"
    result = device_ft.device_finetune(
        lambda: TrainableRuntime(trainable, manifest), run.head_splits.train,
        run.head_splits.test, cfg.device_epochs, f"0:{cfg.device_lr}", run.dir / "device",
        seed=cfg.seed, restart_after=max(1, cfg.device_epochs // 2), log=run.log,
        val=run.head_splits.val)
    result.pop("runtime")
    run.write_json("device.json", {"trainable": str(trainable), **result})


def _stage(run: Run, name: str, outputs: tuple[str, ...], fn) -> None:
    if all((run.dir / o).exists() for o in outputs):
        run.log(f"[{name}] done before, skipped ({', '.join(outputs)})")
        return
    start = time.time()
    run.log(f"[{name}] ...")
    fn(run)
    seconds = time.time() - start
    run.log(f"[{name}] {seconds:.1f} s")
    run.write_json(STAGES, {**(run.read(STAGES) or {}), name: round(seconds, 1)})


def check_config(cfg: ChainConfig) -> None:
    from tfprune.core import depth
    from tfprune.training import distill
    if cfg.bundle_model not in BUNDLE_MODELS:
        raise TfpruneError(f"bundle_model must be one of {BUNDLE_MODELS}, got {cfg.bundle_model!r}")
    if cfg.head not in HEADS:
        raise TfpruneError(f"head must be one of {HEADS}, got {cfg.head!r}")
    if cfg.distill_mix not in distill.MIXES:
        raise TfpruneError(f"distill_mix must be one of {distill.MIXES}, got {cfg.distill_mix!r}")
    depth.parse_blocks(cfg.blocks)
    if cfg.distill_alpha <= 0 and (cfg.distill_mix != "none" or cfg.transfer_data):
        raise TfpruneError("distill_mix and transfer_data have no labels: they need "
                         "distill_alpha > 0")


def run_chain(cfg: ChainConfig, run_dir, log=print, bundler=None) -> dict:
    """Run (or resume) every stage; returns the summary written to summary.json.
    `bundler(out_dir, **files)` packages the validated models (android_export.write_bundle);
    without one the bundle stage is left out and the device stage runs trainable/."""
    import keras

    check_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    splits = data.load_subset(cfg.data, cfg.subset, cfg.seed)
    run = Run(cfg, run_dir, splits, data.relabel(splits) if cfg.head == "subset" else splits,
              log, bundler)
    _stage(run, "evaluate", ("original.keras", "original.json", "restricted.keras",
                             "restricted.json"), evaluate)
    _stage(run, "prune", ("pruned.keras", "plan.json", "pruned.json"), prune)
    _stage(run, "finetune", ("finetuned.keras", "finetuned.json"), finetune)
    _stage(run, "export", ("model_float32.tflite", "model_int8.tflite",
                           "trainable/trainable.tflite"), export)
    _stage(run, "validate", ("validation.json", "validation.md"), validate)
    _stage(run, "baseline", tuple(f"original/{n}" for n in (
        "model_float32.tflite", "model_int8.tflite", "validation.json")), baseline_export)
    if cfg.baseline_criterion:
        _stage(run, f"baseline {cfg.baseline_criterion}", ("l1/result.json",), baseline_pruning)
    _stage(run, "speed", ("speed.json",), speed)
    if bundle_allowed(run):
        _stage(run, "bundle", ("bundle/manifest.json",), bundle)
    elif bundler:
        log("[bundle] refused: a bundled file failed the validation gate (see validation.md); "
            "allow_failed_validation bundles anyway")
    if cfg.device_epochs > 0:
        _stage(run, "device", ("device.json",), device)
    summary = _summary(run)
    run.write_json("summary.json", summary)
    from tfprune.jobs.main_report import write_report
    write_report(summary, run_dir)
    return summary


def _tflite_rows(validation: dict) -> dict:
    return {Path(f["path"]).name: {
        "size_bytes": f.get("size_bytes"), "latency": f.get("latency"),
        "accuracy": (f.get("parity") or {}).get("tflite_accuracy"),
        "gates": {g["gate"]: g.get("status", "pass" if g["passed"] else "fail") for g in f["gates"]},
        "gpu_check": (f.get("targets", {}).get("android-gpu") or {}).get("summary")}
        for f in validation["files"]}


def _baselines(run: Run, ms: dict) -> list[dict]:
    """The report's comparison rows on the same test images: accuracy, params, MACs and
    float32 LiteRT latency (1 thread, side by side: `ms`, speed.json's by role) of each model."""
    o, r, f = run.read("original.json"), run.read("restricted.json"), run.read("finetuned.json")
    l1, dev = run.read("l1/result.json"), run.read("device.json")
    rows = [
        {"model": "original, 100-way", "role": "original", "accuracy": o["test_accuracy"],
         "params": o["params"], "macs": o["macs"], "latency_ms": ms["original"]},
        {"model": "original restricted to the subset (the bar)", "role": "bar",
         "accuracy": r["test_accuracy"], "params": r["params"], "macs": r["macs"],
         "latency_ms": ms["bar"]}]
    if l1:
        depth = (l1.get("depth") or {})
        branches = (f" and `{depth['criterion']}` branches" if depth.get("removed") else "")
        rows.append({"model": f"`{l1['criterion']}` filters{branches}, same level and "
                              "fine-tuning",
                     "role": "baseline", "accuracy": l1["test_accuracy"],
                     "params": l1["params"], "macs": l1["macs"],
                     "latency_ms": ms.get("baseline")})
    shipped = {"params": f["params"], "macs": f["macs"], "latency_ms": ms["shipped"]}
    tuned = "fine-tuned" if run.cfg.finetune_epochs else "not fine-tuned"
    rows.append({"model": f"shipped (`{run.cfg.criterion}`, {tuned})", "role": "shipped",
                 "accuracy": f["test_accuracy"], **shipped})
    if dev:
        rows.append({"model": "shipped + on-device fine-tuning", "role": "device", "accuracy":
                     dev["final_test_accuracy"], **shipped})
    return rows


def _summary(run: Run) -> dict:
    cfg, splits = run.cfg, run.splits
    validation = run.read("validation.json")
    bundle_manifest, dev = run.read("bundle/manifest.json"), run.read("device.json")
    tflite, original_tflite = _tflite_rows(validation), _tflite_rows(
        run.read("original/validation.json"))
    measured = run.read("speed.json")
    baselines = _baselines(run, measured[F32_1T]["ms"])
    return {
        "config": dataclasses.asdict(cfg),
        "subset": {"classes": len(splits.classes), "train": len(splits.train),
                   "val": len(splits.val), "test": len(splits.test)},
        "original": run.read("original.json"), "restricted": run.read("restricted.json"),
        "pruned": run.read("pruned.json"),
        "finetuned": {k: v for k, v in run.read("finetuned.json").items() if k != "history"},
        "l1": run.read("l1/result.json"),
        "baselines": baselines,
        "verdict": verdict(baselines, measured[F32_1T]["speedup"]),
        "speed": measured,
        "tflite": tflite, "original_tflite": original_tflite,
        "validation_passed": validation["passed"],
        "failed_gates": validation["failed_gates"],
        "bundle": bundle_manifest and {"dir": str(run.dir / "bundle"), "files": {
            k: v.get("size_bytes") for k, v in bundle_manifest["files"].items()}},
        "device": dev and {**{k: dev.get(k) for k in (
            "trainable", "initial_test_accuracy", "final_test_accuracy", "epochs_done",
            "restart", "kept_epoch")}, "history": [  # per-image results stay in device.json
                {k: v for k, v in h.items() if k != "val_correct"} for h in dev["history"]]},
        "stage_seconds": run.read(STAGES) or {},
    }
