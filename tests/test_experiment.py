"""Experiment protocol (issue 5): which images each method trains and is evaluated on, Control
1's restricted logits, recipes, the aggregation arithmetic on a hand-made table, the DaPR
search's decisions, BatchNorm re-estimation, and a real (tiny) sweep that resumes."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tfprune import data
from tfprune.experiments import protocol
from tfprune import pruner as pruning
from tfprune.experiments import recipes
from tfprune.experiments import level_search as search
from tfprune.experiments import sweep
from tfprune.experiments import sweep_report
from tests.conftest import MINI_NPZ

ROOT = Path(__file__).resolve().parents[1]
MINI = f"npz:{MINI_NPZ}"
SUBSETS = ["aquatic", "indoor"]


def tiny_model():
    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for i, stride in ((1, 2), (2, 2)):
        x = keras.layers.Conv2D(8, 3, strides=stride, padding="same", use_bias=False,
                                name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"b{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(100, name="logits")(x), name="tiny")


TINY_RECIPE = ["finetune.epochs=1", "finetune.steps_per_epoch=2", "retrain.epochs=2",
               "retrain.steps_per_epoch=2", "retrain.eval_from=0", "control.epochs=2",
               "control.steps_per_epoch=2", "control.eval_from=1", "agnostic.epochs=2",
               "agnostic.steps_per_epoch=3", "agnostic.eval_from=0", "batch_size=16"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    keras.utils.set_random_seed(1)
    tiny_model().save(path)
    return path


def tiny_setup(tiny_file, **kw):
    return protocol.make_setup("quick", "tiny", MINI, str(tiny_file), TINY_RECIPE, "resnet20",
                               verbose=0, calibration_batches=2, **kw)


# --- pure functions ----------------------------------------------------------------------

def test_control1_restricted_logits_on_hand_made_logits():
    logits = np.full((4, 100), -5.0)
    logits[0, [3, 50]] = [1.0, 9.0]   # label 3: argmax 50 (outside), restricted -> 3
    logits[1, [7, 3]] = [2.0, 1.0]    # label 7: right either way
    logits[2, [3, 7]] = [4.0, 1.0]    # label 7: wrong either way (3 wins inside)
    logits[3, 60] = 9.0               # label 60: not in the subset, ignored
    full, restricted = protocol.subset_accuracy(logits, np.array([3, 7, 7, 60]), (3, 7))
    assert full == pytest.approx(1 / 3) and restricted == pytest.approx(2 / 3)


def test_paper_recipes_and_quick_budget():
    r20 = recipes.PAPER["resnet20"]
    assert (r20.finetune.lr, r20.finetune.epochs) == ("0:0.001", 5)
    assert (r20.retrain.lr, r20.retrain.epochs) == ("0:0.01,10:0.001,20:0.0001", 25)
    assert (r20.agnostic.lr, r20.agnostic.epochs, r20.weight_decay) == ("0:0.01,10:-1,20:-1", 30, 1e-4)
    sq = recipes.PAPER["squeezenet"]
    assert sq.retrain.lr == "0:0.02,10:0.004,20:0.0008" and sq.weight_decay == 2e-4
    assert recipes.PAPER["alexnet"].agnostic.lr.startswith("0:0.001,")
    q = recipes.PROTOCOLS["quick"]["resnet20"]
    steps = {k: getattr(q, k).epochs * getattr(q, k).steps_per_epoch
             for k in ("finetune", "retrain", "control", "agnostic")}
    assert steps == {"finetune": 40, "retrain": 160, "control": 200, "agnostic": 1000}
    assert steps["control"] == steps["finetune"] + steps["retrain"]
    edited = recipes.override(q, ["retrain.epochs=2", "batch_size=16", "retrain.lr=0:0.1"])
    assert (edited.retrain.epochs, edited.batch_size, edited.retrain.lr) == (2, 16, "0:0.1")
    with pytest.raises(ValueError, match="no field"):
        recipes.override(q, ["retrain.nope=1"])
    with pytest.raises(ValueError, match="'retrain.epochs=two': 'two' is not int"):
        recipes.override(q, ["retrain.epochs=two"])


def test_select_takes_test_at_best_validation_epoch():
    rows = [{"epoch": 0, "a_val_acc": np.nan, "a_test_acc": np.nan, "a_val_acc_r": np.nan,
             "a_test_acc_r": np.nan},
            {"epoch": 1, "a_val_acc": 0.6, "a_test_acc": 0.50, "a_val_acc_r": 0.7, "a_test_acc_r": 0.6},
            {"epoch": 2, "a_val_acc": 0.8, "a_test_acc": 0.55, "a_val_acc_r": 0.7, "a_test_acc_r": 0.9},
            {"epoch": 3, "a_val_acc": 0.8, "a_test_acc": 0.70, "a_val_acc_r": 0.6, "a_test_acc_r": 0.9}]
    assert protocol.select(rows, "a") == {"epoch": 2, "val_accuracy": 0.8, "test_accuracy": 0.55}
    assert protocol.select(rows, "a", restricted=True)["test_accuracy"] == 0.6


@pytest.mark.parametrize("threshold, probes, chosen", [
    (0.65, [0.5, 0.75, 0.6, 0.65, 0.7], 0.65),
    (0.95, [0.5, 0.75, 0.85, 0.9, 0.95], 0.95),
    (0.0, [0.5, 0.25, 0.1, 0.05], None),
    (0.5, [0.5, 0.75, 0.6, 0.55], 0.5),
])
def test_search_decisions_on_a_scripted_accuracy(threshold, probes, chosen):
    calls = []

    def accuracy(level):  # matches the unpruned 0.7 up to `threshold`, then collapses
        calls.append(level)
        return 0.7 if level <= threshold + 1e-9 else 0.4

    result = search.binary_search(accuracy, reference=0.7)
    assert [s.level for s in result.steps] == probes and calls == probes
    assert result.level == chosen
    assert [s.matched for s in result.steps] == [p <= threshold + 1e-9 for p in probes]


def test_search_tolerance_and_bad_start():
    result = search.binary_search(lambda lv: 0.7 - lv / 10, reference=0.7, tolerance=0.052)
    assert result.level == 0.5 and result.accuracy == pytest.approx(0.65)
    with pytest.raises(ValueError, match="start level"):
        search.binary_search(lambda lv: 1.0, 0.5, start=0.33)


# --- aggregation on a hand-made results table ---------------------------------------------

def _write(root, name, obj):
    path = root / "runs" / name / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(obj))


def _entry(test, val=0.5, r_test=None):
    return {"test_accuracy": test, "val_accuracy": val, "epoch": 3,
            "restricted": {"test_accuracy": r_test if r_test is not None else test,
                           "val_accuracy": val, "epoch": 3}}


def hand_made_sweep(root):
    """Two subsets, levels 0.5 and 0.9, aware:finetune_l1 with two seeds."""
    acc = {  # (subset, level): (agnostic, control1, control2, aware seed0, aware seed1)
        ("a", 0.5): (0.40, 0.60, 0.55, 0.62, 0.58),
        ("a", 0.9): (0.10, 0.30, 0.35, 0.45, 0.45),
        ("b", 0.5): (0.50, 0.70, 0.60, 0.50, 0.56),
        ("b", 0.9): (0.20, 0.40, 0.30, 0.30, 0.30)}
    for lv in (0.5, 0.9):
        _write(root, f"ag{lv}", {"method": "agnostic", "criterion": None, "network": "n",
                                 "level": lv, "seed": 0, "achieved": {"params_level": lv},
                                 "subsets": {s: _entry(acc[(s, lv)][0], r_test=acc[(s, lv)][1])
                                             for s in "ab"}})
        for s in "ab":
            _write(root, f"c2{s}{lv}", {"method": "control2", "criterion": None, "network": "n",
                                        "level": lv, "seed": 0, "subsets": {s: _entry(acc[(s, lv)][2])}})
            for seed in (0, 1):
                _write(root, f"aw{s}{lv}{seed}", {
                    "method": "aware", "criterion": "finetune_l1", "network": "n", "level": lv,
                    "seed": seed, "subsets": {s: _entry(acc[(s, lv)][3 + seed])}})
    _write(root, "unpruned", {"method": "unpruned", "criterion": None, "network": "n",
                              "level": 0.0, "seed": 0,
                              "subsets": {"a": _entry(0.7, r_test=0.75), "b": _entry(0.8)}})


def test_aggregation_arithmetic_on_a_hand_made_table(tmp_path):
    hand_made_sweep(tmp_path)
    table = sweep_report.means(sweep_report.collect(tmp_path))
    assert table[("n", "a")]["aware:finetune_l1"][0.5] == pytest.approx(0.60)  # seed mean
    # deltas vs agnostic: a: +0.20, +0.35 -> mean 0.275; b: +0.03, +0.10 -> 0.065
    h = sweep_report.headline(table, "aware:finetune_l1", "agnostic")
    assert h["per_subset_mean"] == pytest.approx({"n/a": 0.275, "n/b": 0.065})
    assert h["mean"] == pytest.approx(0.17) and h["max"] == pytest.approx(0.35)
    assert h["max_at"] == {"network": "n", "subset": "a", "level": 0.9} and h["cells"] == 4
    c1 = sweep_report.headline(table, "aware:finetune_l1", "control1")  # a: 0, .15; b: -.17, -.10
    assert c1["mean"] == pytest.approx((0.075 - 0.135) / 2) and c1["max"] == pytest.approx(0.15)
    assert sweep_report.headline(table, "aware:finetune_l1", "control3") is None
    paths = sweep_report.report(tmp_path, tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "| aware:finetune_l1 | agnostic | +17.0 | +35.0 | a 90% | 4 |" in md
    assert "| 90 | 10.0 | 30.0 | 35.0 | 45.0 | +35.0 |" in md and "unpruned: 70.0% (logits restricted to the subset: 75.0%)" in md
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 + 2 * 2 + 2 * 2 * 2 + 2 * 2  # ag+c1, c2, aware, unpruned(+r)
    assert [p.name for p in paths["plots"]] == ["n_a.png", "n_b.png"]
    assert all(p.stat().st_size > 5000 for p in paths["plots"])


# --- data bookkeeping -----------------------------------------------------------------------

def _ids(images):
    return {x.tobytes() for x in images.x}


def test_which_images_each_method_trains_and_is_evaluated_on(tiny_file):
    setup = tiny_setup(tiny_file)
    full = setup.splits("all")
    for method in ("aware", "control2", "control3"):
        rd = protocol.run_data(setup, method, "aquatic")
        s = setup.splits("aquatic")
        assert rd.train_on == "aquatic" and _ids(rd.train) == _ids(s.train)
        assert set(np.unique(rd.train.y)) == set(s.classes) and len(s.classes) == 10
        assert _ids(rd.evalsets["test"]) == _ids(s.test) and _ids(rd.evalsets["val"]) == _ids(s.val)
    ag = protocol.run_data(setup, "agnostic", SUBSETS)
    assert ag.train_on == "all" and _ids(ag.train) == _ids(full.train) and len(ag.train) == 400
    for name in SUBSETS:  # the subset's val/test images are exactly the union's of its classes
        s = setup.splits(name)
        for split in ("val", "test"):
            union = ag.evalsets[split]
            mine = union.take(np.flatnonzero(np.isin(union.y, s.classes)))
            assert _ids(mine) == _ids(getattr(s, split))
        assert not _ids(s.val) & _ids(full.train) and not _ids(s.test) & _ids(full.train)
        assert not _ids(s.val) & _ids(s.train)
    with pytest.raises(ValueError, match="one subset"):
        protocol.run_data(setup, "aware", SUBSETS)


# --- pruning -------------------------------------------------------------------------------

def test_batchnorm_reestimation_sets_the_batch_statistics(sample_splits):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    res = pruning.prune_model(model, "l1", 0.4, splits=sample_splits, batch_size=32, bn_batches=1)
    assert res.bn_batches == 1 and res.plan["achieved"]["level"] > 0.3
    x, _ = next(iter(data.as_dataset(sample_splits.train, 32, training=True, seed=0)))
    conv = keras.Model(res.pruned.inputs, res.pruned.get_layer("c1").output)(x).numpy()
    bn = res.pruned.get_layer("b1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(axis=(0, 1, 2)),
                               rtol=1e-3, atol=1e-6)
    assert bn.momentum == 0.99  # restored
    untouched = pruning.prune_model(model, "l1", 0.4)
    np.testing.assert_array_equal(untouched.pruned.get_layer("b1").moving_variance.numpy(),
                                  np.ones_like(bn.moving_variance.numpy()))


def test_prune_model_finetune_l1_prunes_the_tuned_model(sample_splits):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    res = pruning.prune_model(model, "finetune_l1", 0.5, splits=sample_splits, batch_size=64,
                              options={"finetune_l1_epochs": 1, "progress": False})
    assert res.source is not model and res.source is res.scored.tuned_model
    kept = res.plan["layers"]["c1"]["out"]
    pruned_kernel = res.pruned.get_layer("c1").kernel.numpy()
    assert pruned_kernel.shape[-1] == len(kept) < 8
    # the kept filters are the fine-tuned model's, which fine-tuning moved off the input's
    np.testing.assert_array_equal(pruned_kernel, res.source.get_layer("c1").kernel.numpy()[..., kept])
    assert not np.allclose(pruned_kernel, model.get_layer("c1").kernel.numpy()[..., kept])
    with pytest.raises(ValueError, match="data-aware"):
        pruning.prune_model(model, "act_l2", 0.5)


# --- a real sweep, killed and resumed ---------------------------------------------------------

def test_sweep_runs_resumes_and_reports(tmp_path, tiny_file):
    setup = tiny_setup(tiny_file, bn_batches=1)
    specs = sweep.grid(["aquatic"], ["tiny"], [0.5], [0], ["aware:finetune_l1", "agnostic",
                                                           "control3"])
    assert [s.id for s in specs] == ["unpruned_tiny_s0", "agnostic_tiny_l50_s0",
                                     "aware-finetune_l1_tiny_aquatic_l50_s0",
                                     "control3_tiny_aquatic_l50_s0"]
    logs = []
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append,
                           max_runs=2) == 2  # "killed" after two runs
    runs = tmp_path / "runs"
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/result.json")}
    assert set(stamps) == {"unpruned_tiny_s0", "agnostic_tiny_l50_s0"}
    # a half-finished run: the control's first epoch done, then killed before the result
    short = dataclasses.replace(setup, recipe=recipes.override(
        setup.recipe, ["control.epochs=1", "control.eval_from=0"]))
    sweep.run_spec(specs[3], short, tmp_path, ["aquatic"])
    (runs / specs[3].id / "result.json").unlink()
    pruned_stamp = (runs / specs[3].id / "pruned.keras").stat().st_mtime_ns
    logs.clear()
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append) == 2
    assert "4 runs, 2 finished, 2 to do" in logs[0]
    assert {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/result.json")
            if p.parent.name in stamps} == stamps  # finished runs were not re-run
    assert (runs / specs[3].id / "pruned.keras").stat().st_mtime_ns == pruned_stamp
    control = json.loads((runs / specs[3].id / "result.json").read_text())
    assert [r["epoch"] for r in control["history"]] == [0, 1]  # epoch 0 kept, epoch 1 added
    # bookkeeping recorded in the results
    aware = json.loads((runs / specs[2].id / "result.json").read_text())
    agnostic = json.loads((runs / specs[1].id / "result.json").read_text())
    s = setup.splits("aquatic")
    assert (aware["train_on"], aware["train_images"]) == ("aquatic", len(s.train))
    assert (agnostic["train_on"], agnostic["train_images"]) == ("all", 400)
    for res in (aware, agnostic, control):
        assert res["eval_images"]["aquatic"] == {"val": len(s.val), "test": len(s.test)}
        assert set(res["subsets"]) == {"aquatic"} and 0.45 < res["achieved"]["params_level"] < 0.55
    assert len(aware["history"]) == 2 and aware["subsets"]["aquatic"]["epoch"] in (0, 1)
    assert (tmp_path / "finetune" / "tiny_aquatic_s0" / "finetuned.keras").exists()
    assert "restricted" in agnostic["subsets"]["aquatic"]
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append) == 0
    assert sweep.run_sweep(specs[:2], {"tiny": setup}, tmp_path, SUBSETS, logs.append) == 0
    assert "agnostic_tiny_l50_s0 was evaluated without indoor" in logs[-1]
    paths = sweep_report.report(tmp_path)
    methods = {r.split(",")[4] for r in paths["csv"].read_text().splitlines()[1:]}
    assert methods == {"unpruned", "unpruned_restricted", "agnostic", "control1",
                       "aware:finetune_l1", "control3"}


def test_experiment_app_micro_grid(tmp_path, tiny_file):
    """The absl app end to end on the mini fixture: estimate, sweep, report; bad flag."""
    args = [sys.executable, "-m", "pipelines.experiment", f"--data={MINI}",
            "--subsets=aquatic", "--networks=tiny", f"--models=tiny={tiny_file}",
            "--recipe_network=resnet20", f"--recipe={','.join(TINY_RECIPE)}", "--levels=0.5",
            "--methods=aware:act_l2,control2", "--calibration_batches=1", "--verbose=0",
            f"--sweep_dir={tmp_path}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "estimate" in proc.stdout and "[3/3]" in proc.stdout
    assert (tmp_path / "report" / "summary.md").exists()
    assert (tmp_path / "report" / "plots" / "tiny_aquatic.png").exists()
    bad = subprocess.run(args + ["--methods=aware"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "aware needs a criterion" in bad.stderr


def test_search_app_end_to_end_and_resume(tmp_path, tiny_file):
    """pipelines.search on the mini fixture: every level matches (tolerance 1), so the search
    climbs to 95%; a rerun reuses every probe; a start level off the grid exits non-zero."""
    args = [sys.executable, "-m", "pipelines.search", f"--data={MINI}", "--subset=aquatic",
            "--network=tiny", f"--model={tiny_file}", "--recipe_network=resnet20",
            f"--recipe={','.join(TINY_RECIPE)}", "--criterion=act_l2", "--tolerance=1",
            f"--workdir={tmp_path}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "search_aquatic_tiny.json").read_text())
    assert [s["level"] for s in out["steps"]] == [0.5, 0.75, 0.85, 0.9, 0.95]
    assert out["level"] == 0.95 and out["selected_on"] == "validation"
    run = json.loads((tmp_path / "runs" / "aware-act_l2_tiny_aquatic_l95_s0" / "result.json")
                     .read_text())
    assert out["test_accuracy"] == run["subsets"]["aquatic"]["test_accuracy"]
    assert "chosen level 95%" in (tmp_path / "search_aquatic_tiny.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    assert len(stamps) == 6  # unpruned + five probes
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")} == stamps
    bad = subprocess.run(args + ["--start=0.33"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "start level 0.33" in bad.stderr
