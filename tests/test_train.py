"""tfprune.training.fit: schedules, resumable runs, atomic writes; the pretrain app end to end."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfprune import data, fileio
from tfprune.training import fit as train
from tests.conftest import MINI_NPZ


def test_step_schedule_follows_the_paper_format():
    schedule = train.step_schedule("0:0.001,5:0.01,15:-1,25:-1", steps_per_epoch=10)
    lrs = [float(schedule(epoch * 10)) for epoch in (0, 4, 5, 14, 15, 24, 25, 29)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)
    squeeze = train.step_schedule("0:0.0008,5:0.02,15:-1", 1, gamma=0.2)
    assert float(squeeze(15)) == pytest.approx(0.004)
    assert train.step_schedule("0:0.1", 10) == 0.1


@pytest.mark.parametrize("bad", ["0:-1", "1:0.1", "0:0.1,0:0.2", "0:abc", "x"])
def test_step_schedule_rejects(bad):
    with pytest.raises(ValueError, match="schedule"):
        train.step_schedule(bad, 10)


def test_cosine_schedule_warms_up_then_decays():
    schedule = train.cosine_schedule(0.1, epochs=10, steps_per_epoch=10, warmup_epochs=2)
    lrs = [float(schedule(s)) for s in (0, 10, 20, 60, 100)]
    assert lrs[0] == 0 and lrs[1] == pytest.approx(0.05) and lrs[2] == pytest.approx(0.1)
    assert lrs[2] > lrs[3] > lrs[4] and lrs[4] == pytest.approx(0, abs=1e-6)


def test_finetune_warms_its_rate_up(sample_splits):
    """`warmup_epochs` reaches the fine-tune's schedule: 2 epochs of one 64-image batch warm up
    over 2 steps, then decay over the other 2."""
    model = _tiny_model()
    train.finetune(model, sample_splits.train.take(np.arange(64)), 4, 0.1, verbose=0,
                   warmup_epochs=2)
    schedule = model.optimizer.get_config()["learning_rate"]["config"]
    assert (schedule["warmup_steps"], schedule["decay_steps"]) == (2, 2)
    assert schedule["warmup_target"] == pytest.approx(0.1)


@pytest.mark.parametrize("epochs, every", [(60, 10), (15, 3), (7, 7), (6, 1), (1, 1), (0, 1)])
def test_validation_every_ends_on_the_last_epoch(epochs, every):
    assert train.validation_every(epochs) == every
    assert epochs % every == 0 and epochs // every <= train.VALIDATIONS


def test_finetune_validates_on_its_period(sample_splits):
    """8 epochs validate every 2nd (4 times, the last included); training loss every epoch."""
    history = train.finetune(_tiny_model(), sample_splits.train.take(np.arange(64)), 8, 0.1,
                             val_images=sample_splits.val, verbose=0)
    assert len(history["loss"]) == 8 and len(history["val_accuracy"]) == 4


def test_finetune_of_no_epochs_leaves_the_model_as_it_was(sample_splits):
    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    assert train.finetune(model, sample_splits.train, 0, 0.1, verbose=0) == {}
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _tiny_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return train.compile_sgd(keras.Model(inputs, keras.layers.Dense(100, name="logits")(x)),
                             0.01, 1e-4)


def test_fit_resumes_from_checkpoint(tmp_path, sample_splits):
    ds = data.as_dataset(sample_splits.train, 100)
    extra = {"test": data.as_dataset(sample_splits.test, 100)}
    model, state = train.fit_resumable(_tiny_model, ds, 1, tmp_path, extra_eval=extra, verbose=0)
    assert state["epochs_done"] == 1
    after_one = [w.numpy() for w in model.weights]
    built = []
    model, state = train.fit_resumable(lambda: built.append(1) or _tiny_model(), ds, 2, tmp_path,
                                       extra_eval=extra, verbose=0, schedule=0.02)
    assert not built and state["epochs_done"] == 2  # resumed, not rebuilt
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)  # the new schedule
    assert int(model.optimizer.iterations.numpy()) == 2 * 4
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(after_one, model.weights))
    rows = (tmp_path / train.LOG).read_text().splitlines()
    assert {"epoch", "accuracy", "loss", "test_accuracy", "test_loss"} <= set(rows[0].split(","))
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    _, state = train.fit_resumable(_tiny_model, ds, 2, tmp_path, verbose=0)  # already done
    assert state["epochs_done"] == 2
    with open(tmp_path / train.LOG, "a") as f:  # epoch 2 logged, killed before its checkpoint
        f.write(rows[-1].replace("1,", "2,", 1) + "\n")
    train.fit_resumable(_tiny_model, ds, 3, tmp_path, verbose=0)
    rows = (tmp_path / train.LOG).read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    (tmp_path / train.CHECKPOINT).unlink()  # a checkout without the model: a fresh start
    (tmp_path / train.STATE).unlink()
    train.fit_resumable(_tiny_model, ds, 1, tmp_path, verbose=0)
    rows = (tmp_path / train.LOG).read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0"]


def test_log_of_a_run_resumed_with_other_metrics(tmp_path, sample_splits):
    """A resumed run that logs other keys adds their columns (Keras's CSVLogger wrote such
    rows under the old header); a row that does not match its header is refused by name."""
    from tfprune.errors import TfpruneError
    from tfprune.experiments import protocol

    ds, test = (data.as_dataset(s, 100) for s in (sample_splits.train, sample_splits.test))
    train.fit_resumable(_tiny_model, ds, 1, tmp_path, extra_eval={"test": test}, verbose=0)
    train.fit_resumable(_tiny_model, ds, 2, tmp_path, extra_eval={"other": test}, verbose=0)
    rows = protocol.read_log(tmp_path / train.LOG)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert "test_accuracy" in rows[0] and "other_accuracy" not in rows[0]
    assert "other_accuracy" in rows[1] and "test_accuracy" not in rows[1]
    for r in rows:  # each value under its own name: 100-way losses, accuracies in [0, 1]
        assert r["loss"] > 2 and 0 <= r["accuracy"] <= 1
        assert 0 <= r.get("test_accuracy", r.get("other_accuracy")) <= 1
    with open(tmp_path / train.LOG, "a") as f:
        f.write("2,0.5\n")
    with pytest.raises(TfpruneError, match="log.csv: the row of epoch 2 does not match"):
        protocol.read_log(tmp_path / train.LOG)


def test_atomic_write_leaves_no_temp(tmp_path):
    target = tmp_path / "card.json"
    fileio.atomic_write_text(target, "{}")
    fileio.atomic_write_text(target, '{"a": 1}')
    assert json.loads(target.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_pretrain_app_on_fixture(tmp_path):
    out = tmp_path / "model.keras"
    cmd = [sys.executable, "-m", "pipelines.pretrain", "--model=resnet20", f"--data=npz:{MINI_NPZ}",
           "--epochs=1", "--batch_size=100", f"--workdir={tmp_path / 'work'}", f"--output={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["test_images"] == 200 and 0 <= card["test_accuracy"] <= 1
    assert card["epochs"] == 1 and card["versions"]["keras"] == keras.__version__
    assert keras.models.load_model(out).count_params() == card["params"]
    bad = subprocess.run(cmd[:4] + ["--data=npz:/nonexistent.npz"] + cmd[5:-1]
                         + [f"--output={tmp_path / 'other.keras'}"], capture_output=True, text=True)
    assert bad.returncode != 0 and "data file /nonexistent.npz does not exist" in bad.stderr


def test_batchnorm_momentum_reaches_nested_models_and_is_restored():
    inner = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()],
                             name="inner")
    outer = keras.Sequential([keras.Input((8, 8, 3)), inner, keras.layers.BatchNormalization()])
    bns = train.batchnorm_layers(outer)
    assert len(bns) == 2 and bns[0] is inner.layers[1]
    with train.batchnorm_momentum(outer, 0.9):
        assert [bn.momentum for bn in bns] == [0.9, 0.9]
    assert [bn.momentum for bn in bns] == [0.99, 0.99]
    assert train.set_batchnorm_momentum(outer, None) == [0.99, 0.99]
    assert [bn.momentum for bn in bns] == [0.99, 0.99]
