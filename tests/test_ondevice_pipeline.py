"""pipelines.ondevice_finetune end to end on the bundled aquatic sample with a small model:
LiteRT training, checkpoints + resume, restart, infer accuracy, filter_stats, Keras twin."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from tfprune import data
from tfprune.scoring import stats
from tfprune.ondevice import export_trainable, finetune
from tfprune.ondevice import reference as R

APP = [sys.executable, "-m", "pipelines.ondevice_finetune"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = inp
    for i, width in enumerate((8, 16), 1):
        x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"c{i}")(x)
        x = layers.ReLU(name=f"r{i}")(layers.BatchNormalization(name=f"bn{i}")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inp, layers.Dense(100, name="logits")(x), name="small")
    R.calibrate_batchnorm(model, data.normalize_np(data.load_source("sample").train.x[:64]))
    out = tmp_path_factory.mktemp("small")
    model.save(out / "small.keras")
    export_trainable(model, out, batch_size=16, learning_rate=0.05)
    return out


def _run(*args, check=True):
    proc = subprocess.run(APP + list(args), capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_device_finetune_report_resume_and_keras_twin(exported, tmp_path):
    out = tmp_path / "run"
    common = [f"--trainable={exported / 'trainable.tflite'}", "--data=sample", "--subset=aquatic",
              "--schedule=0:0.05,2:-1", f"--output={out}"]
    _run(*common, "--epochs=2", "--restart_after=1", f"--compare_keras={exported / 'small.keras'}")
    report = json.loads((out / "report.json").read_text())
    dev, ker = report["device"], report["keras"]
    assert [r["epoch"] for r in dev["history"]] == [1, 2]
    assert dev["restart"] == {"after_epoch": 1, "restored_step": 25, "bit_identical": True}
    assert dev["history"][1]["loss"] < dev["history"][0]["loss"]
    assert dev["final_test_accuracy"] > dev["initial_test_accuracy"]
    # Same batches, same optimiser: the device run tracks Keras closely.
    for ours, theirs in zip(dev["history"], ker["history"]):
        assert abs(ours["loss"] - theirs["loss"]) <= 1e-3 * theirs["loss"]
    assert abs(report["device_minus_keras"]) <= 0.02
    channel_stats = stats.ChannelStats.load(out / "stats.json")
    assert set(channel_stats.layers) == {"r1", "r2"} and channel_stats.layers["r2"].samples == 400
    scores = json.loads((out / "device_scores.json").read_text())
    assert scores["criterion"] == "act_l2" and len(scores["scores"]["r2"]) == 16
    assert "App restart after epoch 1" in (out / "report.md").read_text()
    # A killed app resumes: a longer run continues from the epoch-2 checkpoint.
    proc = _run(*common, "--epochs=3", "--restart_after=0", "--nostats")
    assert "resumed from" in proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert [r["epoch"] for r in report["device"]["history"]] == [1, 2, 3]
    assert report["device"]["history"][2]["lr"] == pytest.approx(0.005)


def test_held_out_images_decide_the_kept_weights(exported, tmp_path):
    """With val images the run ends on the epoch `kept_epoch` picks from the per-image val
    results it recorded, which match the recorded val accuracies; the kept weights' test
    accuracy is the one reported."""
    from tfprune.ondevice.runtime import TrainableRuntime

    splits = data.relabel(data.load_subset("sample", "aquatic"))
    train, val = splits.train.take(np.arange(0, 400, 2)), splits.train.take(np.arange(1, 400, 4))
    open_rt = lambda: TrainableRuntime(exported / "trainable.tflite")
    quiet = lambda message: None
    for schedule, out in (("0:0.05", tmp_path / "learns"), ("0:0", tmp_path / "frozen")):
        dev = finetune.device_finetune(open_rt, train, splits.test, 2, schedule, out, log=quiet,
                                       val=val)
        val_scores = [dev["initial_val_accuracy"]] + [h["val_accuracy"] for h in dev["history"]]
        bits = [dev["initial_val_correct"]] + [h["val_correct"] for h in dev["history"]]
        correct = [np.array([b == "1" for b in c]) for c in bits]
        assert [c.mean() for c in correct] == pytest.approx(val_scores)
        tests = [dev["initial_test_accuracy"]] + [h["test_accuracy"] for h in dev["history"]]
        assert dev["kept_epoch"] == finetune.kept_epoch(correct)
        assert dev["final_test_accuracy"] == tests[dev["kept_epoch"]]
        kept = dev.pop("runtime").state()
        reference = open_rt()
        reference.restore(out / f"epoch_{dev['kept_epoch']}.npz")
        assert np.array_equal(kept, reference.state())
    # at lr 0 no epoch changes the val accuracy: the tie keeps the weights it started from
    assert dev["kept_epoch"] == 0 and (tmp_path / "frozen" / "epoch_0.npz").exists()
    # a run resumed with held-out images that it was not started with is refused
    with pytest.raises(finetune.CheckpointMismatch, match="held_out: 100 -> None"):
        finetune.device_finetune(open_rt, train, splits.test, 3, "0:0", tmp_path / "frozen",
                                 log=quiet)


def test_an_update_is_kept_only_beyond_the_noise():
    """kept_epoch: a paired sign test against the starting weights, then the best accuracy."""
    start = np.array([True] * 60 + [False] * 40)
    swapped = np.roll(start, 5)         # 5 wins, 5 losses: the same accuracy, kept out
    small = start.copy()
    small[60:64] = True                 # 4 wins, 0 losses: 4 > 1.645 * 2, kept
    noisy = start.copy()
    noisy[60:70], noisy[:5] = True, False  # 10 wins, 5 losses: 5 < 1.645 * sqrt(15), kept out
    big = start.copy()
    big[60:75] = True                   # 15 wins: kept, and the best
    assert finetune.kept_epoch([start, swapped]) == 0
    assert finetune.kept_epoch([start, noisy]) == 0
    assert finetune.kept_epoch([start, noisy, small]) == 2
    assert finetune.kept_epoch([start, big, small, big.copy()]) == 1  # the earliest of a tie
    assert finetune.kept_epoch([start]) == 0


def test_bad_input_exits_with_a_clear_message(exported, tmp_path):
    proc = _run(f"--trainable={tmp_path / 'missing.tflite'}", f"--output={tmp_path}", check=False)
    assert proc.returncode != 0 and "missing.tflite does not exist" in proc.stderr
    proc = _run(f"--trainable={exported / 'trainable.tflite'}", "--subset=no_such_class",
                f"--output={tmp_path}", check=False)
    assert proc.returncode != 0 and "no_such_class" in proc.stderr
    proc = _run(f"--trainable={exported / 'trainable.tflite'}", "--compare_keras=missing.keras",
                f"--output={tmp_path / 'out'}", check=False)  # refused before any training
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "ondevice_finetune: model file missing.keras does not exist"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="epochs must start at 0"):
        finetune.parse_schedule("1:0.1")
    assert [finetune.parse_schedule("0:0.1,2:-1")(e) for e in range(3)] == pytest.approx(
        [0.1, 0.1, 0.01])


def test_runtime_refuses_a_non_tflite_file_and_a_broken_manifest(exported, tmp_path):
    from tfprune.ondevice.runtime import RuntimeInputError, TrainableRuntime

    fake = tmp_path / "trainable.tflite"
    fake.write_bytes(b"not a flatbuffer")
    shutil.copy(exported / "trainable.json", tmp_path / "trainable.json")
    with pytest.raises(RuntimeInputError, match="LiteRT cannot open .*trainable.tflite"):
        TrainableRuntime(fake)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(RuntimeInputError, match="broken.json is not valid JSON"):
        TrainableRuntime(exported / "trainable.tflite", broken)
    broken.write_text("{}")
    with pytest.raises(RuntimeInputError, match="lacks batch_size, input_shape, num_classes"):
        TrainableRuntime(exported / "trainable.tflite", broken)


def test_the_device_side_runs_without_tensorflow(exported):
    """The simulated device (runtime + training loop + data) never imports TensorFlow."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("device_without_tf_check.py")),
                          str(exported / "trainable.tflite")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded: []"
