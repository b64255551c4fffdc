"""The catalogue of bad and edge inputs (issue 18): each gets one clear line and a non-zero exit
where the input is bad, and nothing of the user's is changed (data-loss cases compare the bytes
of the user's files before and after). Apps run as `python -m ...` where a case goes through
flag parsing or the console (the apps share absl's global flags, so one process cannot import
them all); the rest call the library the apps call."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tfprune.errors import TfpruneError, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def app(*args, timeout=300):
    """Run `python -m <args>` from the repository root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def refused(proc, *parts):
    """A refusal: non-zero exit, no traceback, and a last stderr line naming every part."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr[-2000:])
    return last


def snapshot(root) -> dict:
    """{relative path: bytes} of every file under `root`."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def small_cnn(path, shape=(32, 32, 3)):
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv0")(inputs)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.ReLU(name="relu0")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)).save(path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return small_cnn(tmp_path_factory.mktemp("model") / "small.keras")


@pytest.fixture(scope="module")
def trainable(tmp_path_factory, model_file):
    from tfprune.ondevice import export_trainable

    out = tmp_path_factory.mktemp("trainable")
    export_trainable(keras.models.load_model(model_file), out, batch_size=16)
    return out / "trainable.tflite"


# ------------------------------------------------------------------ data loss
def test_run_refuses_a_non_empty_directory_and_keeps_its_files(tmp_path, model_file):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    (out / "plan.json").write_text('{"mine": true}')
    before = snapshot(out)
    last = refused(app("pipelines.run", f"--model={model_file}", f"--output={out}"),
                   "is not empty and holds no run", "--restart")
    assert last.startswith("run: ")
    assert snapshot(out) == before


def test_run_refuses_a_model_inside_its_output(tmp_path, model_file):
    out = tmp_path / "x"
    out.mkdir()
    shutil.copyfile(model_file, out / "pruned.keras")
    before = snapshot(out)
    refused(app("pipelines.run", f"--model={out / 'pruned.keras'}", f"--output={out}",
                "--restart"), "lies inside --output")
    assert snapshot(out) == before


def test_android_export_keeps_the_model_and_user_files_in_an_old_bundle(tmp_path, model_file):
    from android_export import bundle

    out = tmp_path / "bundle"
    out.mkdir()
    (out / bundle.MANIFEST).write_text(json.dumps({"format": bundle.FORMAT, "files": {}}))
    shutil.copyfile(model_file, out / "my_model.keras")
    before = snapshot(out)
    with pytest.raises(bundle.BundleError, match="lies inside --output"):
        bundle.check_target(out, inputs={"model": str(out / "my_model.keras")})
    with pytest.raises(bundle.BundleError, match="my_model.keras.*would delete them"):
        bundle.check_target(out, inputs={"model": str(model_file)})
    # the app refuses before any conversion work
    start = time.time()
    refused(app("android_export", f"--model={out / 'my_model.keras'}", f"--output={out}"),
            "lies inside --output")
    assert snapshot(out) == before and time.time() - start < 120


def test_pretrain_refuses_to_overwrite_its_output(tmp_path, model_file):
    target = tmp_path / "r20.keras"
    shutil.copyfile(model_file, target)
    before = target.read_bytes()
    refused(app("pipelines.pretrain", f"--output={target}", f"--workdir={tmp_path / 'w'}",
                "--data=sample"), "exists; pass --overwrite")
    assert target.read_bytes() == before and not (tmp_path / "w").exists()


# ------------------------------------------------------------------ wrong results as success
def test_run_directory_records_its_config_and_refuses_another(tmp_path):
    import dataclasses

    from tfprune.jobs import run_dir
    from tfprune.jobs.main_job import ChainConfig

    out = tmp_path / "R"
    defaults = dataclasses.asdict(ChainConfig())
    run_dir.prepare(out, {**defaults, "subset": "no_such_class"}, defaults=defaults)
    run_dir.prepare(out, defaults, defaults=defaults)  # the first was refused before any work
    (out / "report.md").write_text("numbers of the first run")
    before = snapshot(out)
    # the same settings resume; allow_failed_validation may change (it changes no result)
    run_dir.prepare(out, {**defaults, "allow_failed_validation": True}, defaults=defaults,
                    ignore=("allow_failed_validation",))
    other = round(defaults["level"] + 0.2, 2)
    with pytest.raises(run_dir.RunDirError,
                       match=rf"level: {defaults['level']} -> {other}.*--restart"):
        run_dir.prepare(out, {**defaults, "level": other}, defaults=defaults)
    assert snapshot(out)["report.md"] == before["report.md"]
    # the app refuses before any work
    proc = app("pipelines.run", f"--output={out}", "--subset=fish", "--level=0.3")
    assert "subset: 'aquatic' -> 'fish'" in refused(proc, "holds a run made with other settings")
    # --restart moves the old run aside untouched and starts afresh
    logs = []
    run_dir.prepare(out, {**defaults, "level": other}, defaults=defaults, restart=True,
                    log=logs.append)
    assert snapshot(tmp_path / "R.old-1")["report.md"] == before["report.md"]
    assert sorted(os.listdir(out)) == [run_dir.CONFIG] and "R.old-1" in logs[0]
    # a key added to the config later counts as its default for an older record
    old = {k: v for k, v in defaults.items() if k != "seed"}
    assert run_dir.differences(old, defaults, defaults) == []


def test_run_directory_from_before_run_config_is_read_from_its_summary(tmp_path):
    from tfprune.jobs import run_dir

    (tmp_path / "summary.json").write_text(json.dumps({"config": {"level": 0.5}}))
    with pytest.raises(run_dir.RunDirError, match=r"level: 0\.5 -> 0\.7"):
        run_dir.prepare(tmp_path, {"level": 0.7})


def test_keras_finetune_that_diverges_stops_and_writes_nothing(tmp_path, model_file):
    proc = app("pipelines.prune", f"--model={model_file}", "--data=sample", "--level=0.3",
               "--finetune_epochs=1", "--finetune_lr=1e6", f"--output={tmp_path / 'o'}")
    assert refused(proc, "training diverged").startswith("prune: training diverged: loss ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("losses,stops_at", [([2.3, 2.1, float("nan")], 3),
                                               ([2.3, 40.0, 1.5e29], 3),
                                               ([0.2, 900.0, 9e3], None)])
def test_divergence_is_a_non_finite_or_blown_up_loss(losses, stops_at):
    """A loss BLOWUP times the first one (at least 1) is divergence, as NaN is: a huge rate
    left the CI machine's loss at 1.5e29 and finite. Keras fine-tunes (the callback) and the
    on-device loop (`LossWatch` itself) stop on the same batch."""
    from tfprune.errors import LossWatch
    from tfprune.training.fit import StopOnNonFinite

    watch = LossWatch()
    flags = [watch.diverged(loss) for loss in losses]
    assert flags.index(True) + 1 == stops_at if stops_at else not any(flags)

    stop = StopOnNonFinite()
    stop.on_epoch_begin(0)
    for i, loss in enumerate(losses):
        if i + 1 == stops_at:
            with pytest.raises(TrainingDiverged, match=f"loss .* batch {i + 1} "):
                stop.on_train_batch_end(i, {"loss": loss})
            return
        stop.on_train_batch_end(i, {"loss": loss})
    assert stops_at is None


def test_resumable_training_that_diverges_keeps_its_last_checkpoint(tmp_path, model_file):
    from tfprune import data
    from tfprune.training import fit as train

    splits = data.load_subset("sample", "aquatic")
    ds = data.as_dataset(splits.train, 64, training=True)
    build = lambda lr: lambda: train.compile_sgd(keras.models.load_model(model_file), lr, 0.0)
    train.fit_resumable(build(0.01), ds, 1, tmp_path, verbose=0)
    good = (tmp_path / train.CHECKPOINT).read_bytes()
    # a NaN rate makes every weight NaN after one step, whatever the data (a huge finite
    # rate could leave every ReLU dead and the loss finite)
    with pytest.raises(TrainingDiverged, match="holds the last epoch"):
        train.fit_resumable(build(0.01), ds, 2, tmp_path, verbose=0, schedule=float("nan"))
    assert (tmp_path / train.CHECKPOINT).read_bytes() == good
    assert json.loads((tmp_path / train.STATE).read_text())["epochs_done"] == 1


def test_device_finetune_diverging_or_resumed_under_another_schedule(tmp_path, trainable,
                                                                     sample_splits):
    from tfprune.ondevice import finetune
    from tfprune.ondevice.runtime import TrainableRuntime

    small = sample_splits.train.take(np.arange(64))
    test = sample_splits.test.take(np.arange(32))
    open_rt = lambda: TrainableRuntime(trainable)
    quiet = lambda message: None
    first = tmp_path / "first"
    finetune.device_finetune(open_rt, small, test, 1, "0:0.002", first, log=quiet)
    before = snapshot(first)
    with pytest.raises(finetune.CheckpointMismatch, match="schedule: '0:0.002' -> '0:0.01'"):
        finetune.device_finetune(open_rt, small, test, 2, "0:0.01", first, log=quiet)
    assert snapshot(first) == before
    # a rate that diverges in epoch 2 stops there; epoch 1's checkpoint stays the latest
    second = tmp_path / "second"
    with pytest.raises(TrainingDiverged, match="on-device training diverged.*keeps epoch 1"):
        finetune.device_finetune(open_rt, small, test, 3, "0:0.002,1:1e6", second, log=quiet)
    assert json.loads((second / finetune.PROGRESS).read_text())["epochs_done"] == 1
    assert not (second / "epoch_2.npz").exists()
    # the app: a fresh output diverges on the first epoch, no checkpoint written
    proc = app("pipelines.ondevice_finetune", f"--trainable={trainable}", "--schedule=0:1e6",
               "--epochs=1", "--stats=false", f"--output={tmp_path / 'app'}")
    assert refused(proc, "no checkpoint was written").startswith(
        "ondevice_finetune: on-device training diverged")
    assert not (tmp_path / "app" / "checkpoints" / finetune.LATEST).exists()


def test_int8_calibration_images_must_fit_the_model(tmp_path):
    small_cnn(tmp_path / "mnist.keras", shape=(28, 28, 1))
    proc = app("pipelines.convert", f"--model={tmp_path / 'mnist.keras'}", "--mode=int8",
               "--calibration_samples=8", f"--output={tmp_path / 'o'}")
    refused(proc, "calibration images are (32, 32, 3)", "takes (28, 28, 1)")
    assert not (tmp_path / "o" / "model.tflite").exists()


def _npz(path, train_labels, test_labels, classes=("a", "b", "c")):
    rng = np.random.default_rng(0)
    image = lambda n: rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=image(len(train_labels)), y_train_fine=np.array(train_labels),
             x_test=image(len(test_labels)), y_test_fine=np.array(test_labels),
             fine_label_names=np.array(classes))
    return f"npz:{path}"


def test_empty_splits_are_refused_naming_their_classes(tmp_path, caplog):
    from tfprune import data

    spec = _npz(tmp_path / "d.npz", [0] * 10 + [1] * 10, [0, 0, 2])
    with pytest.raises(data.DataError, match=r"no test images .*classes without any: b\)"):
        data.load_subset(spec, "b")
    with pytest.raises(data.DataError, match=r"no training images .*classes without any: c\)"):
        data.load_subset(spec, "c")
    tiny = _npz(tmp_path / "t.npz", [0, 1], [0, 1])
    with pytest.raises(data.DataError, match="no val images"):
        data.load_subset(tiny, "a,b")
    with caplog.at_level("WARNING", logger="tfprune"):
        splits = data.load_subset(spec, "a,c")
    assert len(splits.train) == 8 and "have no training images" in caplog.text
    assert "c" in caplog.text.split("images in")[-1]


def test_round_to_larger_than_every_group_is_refused(tmp_path, model_file):
    proc = app("pipelines.prune", f"--model={model_file}", "--round_to=64",
               f"--output={tmp_path / 'o'}")
    line = refused(proc, "cannot be reached")
    assert re.match(r"prune: level 0\.500 of \w+ cannot be reached: the highest reachable level "
                    r"is 0\.000 ", line), line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ one line, not a traceback
def test_ondevice_finetune_on_an_inference_only_model(tmp_path, trainable, model_file):
    from tfprune.litert import convert

    blob = convert.convert(keras.models.load_model(model_file), "float32")
    convert.write_tflite(blob, tmp_path / "model.tflite")
    shutil.copyfile(trainable.with_name("trainable.json"), tmp_path / "trainable.json")
    proc = app("pipelines.ondevice_finetune", f"--trainable={tmp_path / 'model.tflite'}",
               f"--output={tmp_path / 'o'}")
    refused(proc, "is not a trainable model", "lacks the signatures train, infer",
            "--mode=trainable")


def test_outputs_that_are_files_or_unwritable_are_refused_before_work(tmp_path, model_file):
    from android_export import bundle
    from tfprune.jobs import run_dir

    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(run_dir.RunDirError, match="exists and is not a directory"):
        run_dir.prepare(a_file, {})
    with pytest.raises(run_dir.RunDirError, match="cannot be written"):
        run_dir.prepare(a_file / "sub", {})
    with pytest.raises(bundle.BundleError, match="exists and is not a directory"):
        bundle.check_target(a_file)
    refused(app("android_export", f"--model={model_file}", f"--output={a_file}"),
            "exists and is not a directory")
    refused(app("pipelines.run", f"--model={model_file}", f"--output={a_file / 'sub'}"),
            "cannot be written")
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("args,flag", [
    (["pipelines.prune", "--model=resnet20", "--output=o", "--batch_size=0"], "--batch_size"),
    (["pipelines.validate", "--tflite=a.tflite", "--output=o", "--threads=0"], "--threads"),
    (["pipelines.validate", "--tflite=a.tflite", "--output=o", "--max_images=-1"],
     "--max_images"),
    (["pipelines.ondevice_finetune", "--trainable=t.tflite", "--output=o", "--epochs=-1"],
     "--epochs"),
    (["pipelines.finetune", "--workdir=w", "--level=1.5"], "--level"),
    (["pipelines.experiment", "--sweep_dir=s", "--levels=0.5,1.2"], "--levels"),
    (["pipelines.run", "--output=o", "--batch_size=0"], "--batch_size"),
    (["pipelines.run", "--output=o", "--blocks=-1"], "--blocks"),
    (["pipelines.prune", "--model=resnet20", "--output=o", "--blocks=some"], "--blocks"),
])
def test_numeric_flags_are_checked_in_their_definitions(tmp_path, args, flag):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"flag {flag}=" in proc.stderr and os.listdir(tmp_path) == []


def test_ctrl_c_prints_one_line_saying_where_to_resume(tmp_path):
    out = tmp_path / "run"
    # SIGINT's default action restored: a shell's background job inherits it ignored
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pipelines.run", f"--output={out}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # interrupt once the first stage runs
        if line.startswith("[evaluate] ..."):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"run: interrupted; rerun the same command to resume {out} at its first "
        "unfinished stage")


# ------------------------------------------------------------------ slow or misleading failures
def test_offline_tfds_fails_at_once_naming_the_ways_out(tmp_path, monkeypatch):
    from tfprune import data
    from tfprune.data import sources

    monkeypatch.setattr(sources, "_reachable", lambda url: False)  # as on a machine offline
    start = time.time()
    with pytest.raises(data.DataError, match="is not prepared in .*--data_dir.*--data=npz:PATH"):
        data.load_source("tfds:cifar100", str(tmp_path))
    assert time.time() - start < 60


def test_corrupt_files_are_named_for_what_is_wrong(tmp_path):
    from tfprune import data
    from tfprune.models import loader

    (tmp_path / "m.keras").write_bytes(os.urandom(4096))
    (tmp_path / "d.npz").write_bytes(os.urandom(4096))
    with pytest.raises(loader.ModelSpecError, match="is not a .keras archive"):
        loader.load_model(str(tmp_path / "m.keras"))
    with pytest.raises(data.DataError, match="is not an .npz archive"):
        data.load_source(f"npz:{tmp_path / 'd.npz'}")


def test_every_user_facing_error_is_a_tfprune_error():
    from android_export import BundleError
    from pipelines.prune import PruneError
    from tfprune import data, litert, scoring
    from tfprune.core import graph, modelspec, plan
    from tfprune.jobs.run_dir import RunDirError
    from tfprune.litert import convert, qat
    from tfprune.models import loader
    from tfprune.ondevice import finetune, forward, runtime
    from tfprune.scoring import stats

    for error in (data.DataError, scoring.ScoringError, modelspec.ModelReadError,
                  litert.TFLiteFileError, runtime.RuntimeInputError, graph.GraphError,
                  plan.PlanError, convert.ConvertError, qat.QATError, loader.ModelSpecError,
                  forward.UnsupportedModelError, stats.StatsError, BundleError, PruneError,
                  RunDirError, TrainingDiverged, finetune.CheckpointMismatch):
        assert issubclass(error, TfpruneError), error


def test_importing_tfprune_sets_no_environment():
    code = ("import os; before = dict(os.environ); import tfprune, tfprune.data, "
            "tfprune.litert; assert dict(os.environ) == before, 'changed'")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------ console
def test_console_is_quiet_unless_verbosity_asks(tmp_path, model_file):
    import re

    info = lambda text: [ln for ln in text.splitlines()
                         if re.match(r"I\d{4} |WARNING: All log messages", ln)]
    args = ("pipelines.convert", f"--model={model_file}", "--mode=int8",
            "--calibration_samples=8")
    quiet = app(*args, f"--output={tmp_path / 'q'}")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "convert: wrote" in quiet.stdout
    for noise in ("Assets written to", "fully_quantize", "signature_serialization"):
        assert noise not in quiet.stderr, quiet.stderr[-2000:]
    assert info(quiet.stderr) == []
    verbose = app(*args, f"--output={tmp_path / 'v'}", "--verbosity=0")
    assert verbose.returncode == 0 and "fully_quantize" in verbose.stderr
    assert info(verbose.stderr)
