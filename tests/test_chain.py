"""The main job's chain end to end on the bundled sample, and its resume by stage."""
import json
import shutil

import keras

from tfprune.jobs import main_job as chain


def _small_cnn(path):
    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for i, width in enumerate((8, 16)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)).save(path)


def test_chain_runs_and_resumes(tmp_path):
    import android_export

    _small_cnn(tmp_path / "small.keras")
    # target params: this tiny CNN's blocks take microseconds, below the timing noise of a
    # shared machine (tests/test_latency.py and the benchmark test the latency target)
    cfg = chain.ChainConfig(model=str(tmp_path / "small.keras"), target="params", level=0.5,
                            finetune_epochs=1,
                            calibration_batches=2, bn_batches=2, calibration_samples=20,
                            latency_runs=2, device_epochs=2)
    run = tmp_path / "run"
    logs = []
    summary = chain.run_chain(cfg, run, log=logs.append, bundler=android_export.write_bundle)
    # every gate passes except, possibly, int8 parity: this untrained model's accuracy is near
    # chance, where a few flipped argmaxes on 300 images exceed the 1 pp bar (see the main job
    # and tests/test_convert.py for int8 parity on a trained model)
    gates = {(name, g): ok for name, t in summary["tflite"].items() for g, ok in t["gates"].items()}
    assert all(ok == "pass" for key, ok in gates.items()
               if key != ("model_int8.tflite", "parity")), gates
    assert summary["validation_passed"] == all(ok == "pass" for ok in gates.values())
    assert summary["pruned"]["params"] < summary["original"]["params"]
    # channel counts in whole tiles (round_to=auto), the plan priced on the default runtime
    plan = json.loads((run / "plan.json").read_text())
    assert plan["round_to"] == "auto" and plan["runtime"]["runtime"] == "litert-float32-1t"
    assert abs(summary["pruned"]["achieved"]["level"] - cfg.level) < 0.1
    assert set(summary["pruned"]["predicted_latency_ms"]) == {
        "litert-float32-1t", "litert-float32-2t", "litert-int8-1t", "litert-int8-2t"}
    assert summary["subset"] == {"classes": 10, "train": 400, "val": 100, "test": 300}
    # the subset head: 10 outputs everywhere after the original; the bar and l1 beside it
    plan = json.loads((run / "plan.json").read_text())
    assert plan["head"]["classes"] == [1, 4, 30, 32, 55, 67, 72, 73, 91, 95]
    assert keras.models.load_model(run / "finetuned.keras").output_shape == (None, 10)
    assert [r["model"].split(" ")[0] for r in summary["baselines"]] == [
        "original,", "original", "`l1`", "shipped", "shipped"]
    assert [r["role"] for r in summary["baselines"]] == [
        "original", "bar", "baseline", "shipped", "device"]
    gap = 100 * (summary["finetuned"]["test_accuracy"] - summary["restricted"]["test_accuracy"])
    assert summary["verdict"].startswith("the shipped model is ")
    assert ("within 1 pp" in summary["verdict"]) == (gap >= -1)
    assert f"Verdict: {summary['verdict']}" in (run / "report.md").read_text()
    assert summary["l1"]["params"] < summary["original"]["params"]
    assert all(r["latency_ms"] > 0 for r in summary["baselines"])
    # every latency and speed-up the report gives was timed side by side (speed.json): the
    # baselines' column, the verdict's speed-up and the table's
    speed = summary["speed"]
    assert set(speed) == set(summary["pruned"]["predicted_latency_ms"])
    assert set(speed["litert-float32-1t"]["ms"]) == {"original", "bar", "baseline", "shipped"}
    assert set(speed["litert-int8-2t"]["ms"]) == {"original", "shipped"}
    assert speed["litert-int8-1t"]["reference"] == "original"
    ms = speed["litert-float32-1t"]["ms"]
    assert [r["latency_ms"] for r in summary["baselines"]] == [
        ms["original"], ms["bar"], ms["baseline"], ms["shipped"], ms["shipped"]]
    assert all(m["vs_shipped"]["shipped"] == 1.0 for m in speed.values())
    assert f"{speed['litert-float32-1t']['speedup']:.2f}x faster" in summary["verdict"]
    assert summary["finetuned"]["seconds"] > 0
    labels = (run / "bundle" / "labels.txt").read_text().split()
    assert labels[:2] == ["aquarium_fish", "beaver"] and len(labels) == 10
    tflite, before = summary["tflite"], summary["original_tflite"]
    assert set(tflite) == {"model_float32.tflite", "model_int8.tflite", "trainable.tflite"}
    assert set(before) == {"model_float32.tflite", "model_int8.tflite"}
    assert tflite["model_int8.tflite"]["gates"]["edgetpu"] == "pass"
    for rows in (tflite, before):  # parity with Keras on the CPU, and with the CPU on the GPU
        assert rows["model_float32.tflite"]["gates"]["parity"] == "pass"
        assert rows["model_float32.tflite"]["gates"]["android-gpu"] == "pass"
        assert "ran on the GPU" in rows["model_float32.tflite"]["gpu_check"]
    assert (tflite["model_float32.tflite"]["size_bytes"]
            < before["model_float32.tflite"]["size_bytes"])
    # the bundle holds the fine-tuned float model and the trainable one, as validated
    android_export.check_bundle(run / "bundle")
    assert (run / "bundle" / "model.tflite").read_bytes() == (
        run / "model_float32.tflite").read_bytes()
    # the device stage trained the bundle's trainable model, with an app restart
    device = summary["device"]
    assert device["trainable"] == str(run / "bundle" / "trainable.tflite")
    assert device["epochs_done"] == 2 and device["restart"]["bit_identical"]
    # ...and ended on the epoch it kept (tfprune.ondevice.finetune.kept_epoch)
    tests = [device["initial_test_accuracy"]] + [h["test_accuracy"] for h in device["history"]]
    assert device["final_test_accuracy"] == tests[device["kept_epoch"]]
    report = (run / "report.md").read_text()
    for part in ("pruned + fine-tuned", "unpruned", "Android bundle", "On-device fine-tuning",
                 "Against the baselines", "the bar",
                 "| litert-int8-2t |", "speed-up / FLOPs reduction",
                 "GPU check of model_float32.tflite"):
        assert part in report
    # the converted-models table: each file's side-by-side times by its precision and role
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in report.splitlines()}
    one = speed["litert-float32-1t"]
    assert f"| {one['vs_shipped']['original']:.2f}x |" in rows["pruned + fine-tuned",
                                                              "model_float32.tflite"]
    assert f"| {speed['litert-int8-2t']['ms']['original']:.2f} |" in rows["unpruned",
                                                                         "model_int8.tflite"]
    assert "| - | - | - |" in rows["pruned + fine-tuned", "trainable.tflite"]
    assert (run / "report.png").stat().st_size > 1000
    assert json.loads((run / "summary.json").read_text()) == summary

    (run / "validation.json").unlink()  # as if stopped during validation
    logs.clear()
    chain.run_chain(cfg, run, log=logs.append, bundler=android_export.write_bundle)
    skipped = [line.split("]")[0] for line in logs if "skipped" in line]
    assert skipped == ["[evaluate", "[prune", "[finetune", "[export", "[baseline",
                       "[baseline l1", "[speed", "[bundle", "[device"]
    assert any(line.startswith("[validate] ...") for line in logs)

    # a failed gate of a file the bundle leaves out (int8) does not hold the bundle back...
    def fail_gate(name):
        report = json.loads((run / "validation.json").read_text())
        entry = next(f for f in report["files"] if f["path"].endswith(name))
        entry["gates"][0]["passed"] = False
        report["passed"] = False
        (run / "validation.json").write_text(json.dumps(report))
        shutil.rmtree(run / "bundle", ignore_errors=True)

    fail_gate("model_int8.tflite")
    logs.clear()
    summary = chain.run_chain(cfg, run, log=logs.append, bundler=android_export.write_bundle)
    assert any(line.startswith("[bundle] ...") for line in logs) and summary["bundle"]
    assert not summary["validation_passed"]
    # ...a failed gate of the bundled model does; the device stage then runs trainable/
    fail_gate("model_float32.tflite")
    shutil.rmtree(run / "device")
    (run / "device.json").unlink()
    logs.clear()
    summary = chain.run_chain(cfg, run, log=logs.append, bundler=android_export.write_bundle)
    assert any(line.startswith("[bundle] refused") for line in logs)
    assert not (run / "bundle").exists() and summary["bundle"] is None
    assert summary["device"]["trainable"] == str(run / "trainable" / "trainable.tflite")


def test_transfer_images_leave_out_the_runs_own(tmp_path, mini_source):
    """--transfer_data draws from its train pool less the run's own train/val/test images:
    the val images that choose the kept epoch never come back as unlabelled training."""
    from tests.conftest import MINI_NPZ
    from tfprune import data

    splits = data.split(mini_source, "aquatic", seed=2)
    lines = []
    cfg = chain.ChainConfig(data=f"npz:{MINI_NPZ}", transfer_data=f"npz:{MINI_NPZ}")
    run = chain.Run(cfg, tmp_path, splits, data.relabel(splits), log=lines.append)
    transfer = chain._transfer_images(run)
    own = len(splits.train) + len(splits.val)
    assert len(transfer) == len(mini_source.train) - own
    ours = {img.tobytes() for part in (splits.train, splits.val) for img in part.x}
    assert not ours & {img.tobytes() for img in transfer.x}
    assert f"{own} of its images are the run's own" in lines[0]


def test_every_setting_of_the_main_job_is_a_flag_of_the_app():
    """pipelines.run builds ChainConfig from its flags by field name: a field without a flag
    could never be set from the command line."""
    import dataclasses
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "pipelines.run", "--helpfull"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=300)
    assert "--output" in proc.stdout, proc.stderr[-2000:]  # absl exits 1 after the help
    missing = [f.name for f in dataclasses.fields(chain.ChainConfig)
               if f"--{f.name}" not in proc.stdout and f"--[no]{f.name}" not in proc.stdout]
    assert not missing and "--min_channels" in proc.stdout


def _residual_run(tmp_path, name, **settings):
    """A main-job Run on a small residual model (3 removable branches), evaluated."""
    from tfprune import data

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(16, 3, padding="same",
                                                                name="stem")(inputs))
    for i in range(3):
        b = keras.layers.Conv2D(16, 3, padding="same", name=f"b{i}_conv")(x)
        b = keras.layers.BatchNormalization(name=f"b{i}_bn")(b)
        x = keras.layers.ReLU(name=f"b{i}_out")(keras.layers.Add(name=f"b{i}_add")([x, b]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)).save(tmp_path / "res.keras")
    cfg = chain.ChainConfig(model=str(tmp_path / "res.keras"), calibration_batches=2,
                            bn_batches=2, **settings)
    splits = data.load_subset(cfg.data, cfg.subset, cfg.seed)
    run = chain.Run(cfg, tmp_path / name, splits, data.relabel(splits), log=lambda *a: None)
    run.dir.mkdir()
    chain.evaluate(run)
    return run


def test_prune_stage_removes_blocks(tmp_path):
    """`blocks`: the prune stage removes whole residual branches before the channel plan, the
    plan and pruned.json record them, predictions count from the model before them, and the
    report says so."""
    from tfprune.jobs.main_report import _depth

    run = _residual_run(tmp_path, "run", target="params", level=0.2, blocks=2)
    chain.prune(run)
    plan, pruned = run.read("plan.json"), run.read("pruned.json")
    assert plan["depth"] == pruned["depth"] and plan["depth"]["criterion"] == "kl"
    assert plan["depth"]["removable"] == ["b0_add", "b1_add", "b2_add"]
    assert len(plan["depth"]["removed"]) == 2
    names = {l.name for l in run.load("pruned.keras").layers}
    assert not {f"{r.split('_')[0]}_conv" for r in plan["depth"]["removed"]} & names
    for rt, p in pruned["predicted_latency_ms"].items():
        assert p["pruned"] < p["unpruned"], rt
    assert _depth(pruned["depth"]).startswith("2 of 3 residual branches removed whole first")


def test_blocks_auto_baseline_removes_as_many_branches(tmp_path):
    """With blocks auto the l1 baseline removes as many branches as the shipped plan chose
    (by bn_gamma, not by the device's images) at the shipped plan's channel level."""
    from tfprune.jobs.main_report import _depth

    from tfprune import data

    cfg = chain.ChainConfig(level=0.3, blocks="auto", finetune_epochs=1, finetune_lr=0.01,
                            calibration_batches=2, bn_batches=2, reconstruct_images=0)
    splits = data.load_subset(cfg.data, cfg.subset, cfg.seed)
    run = chain.Run(cfg, tmp_path, splits, data.relabel(splits), log=lambda *a: None)
    chain.evaluate(run)
    chain.prune(run)
    plan = run.read("plan.json")
    assert plan["depth"]["requested"] == "auto" and plan["depth"]["criterion"] == "kl"
    chain.baseline_pruning(run)
    l1 = run.read("l1/result.json")
    assert plan["depth"]["removed"], plan["depth"]["search"]  # ResNet-20 on aquatic: 2
    assert l1["depth"]["requested"] == len(plan["depth"]["removed"])
    assert l1["depth"]["criterion"] == "bn_gamma" and "search" not in l1["depth"]
    assert "closest to the model" in _depth(plan["depth"])
