"""Experiment protocol (issues 5, 17): which images each method trains and is evaluated on,
Control 1's restricted logits, recipes and the v2 budget arithmetic, the aggregation
arithmetic on a hand-made table, the paired bootstrap on known data, convergence flags,
shards and their merge, the DaPR search's decisions, BatchNorm re-estimation, and a real
(tiny) sweep with Control 4 that resumes."""
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
from tfprune.experiments import stats
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
    np.testing.assert_allclose(recipes.resolve(r20.retrain.lr), [(0, 0.01), (10, 0.001), (20, 1e-4)])
    assert r20.retrain.epochs == 25 and r20.control == r20.retrain and r20.bn_momentum == 0.9
    assert (r20.agnostic.lr, r20.agnostic.epochs, r20.weight_decay) == ("0:0.01,10:-1,20:-1", 30, 1e-4)
    sq = recipes.PAPER["squeezenet"]
    np.testing.assert_allclose(recipes.resolve(sq.retrain.lr, sq.retrain.gamma),
                               [(0, 0.02), (10, 0.004), (20, 0.0008)])
    assert sq.weight_decay == 2e-4
    assert recipes.PAPER["alexnet"].agnostic.lr.startswith("0:0.001,")
    q = recipes.PROTOCOLS["quick"]["resnet20"]
    steps = {k: getattr(q, k).epochs * getattr(q, k).steps_per_epoch
             for k in ("finetune", "retrain", "control", "agnostic")}
    assert steps == {"finetune": 40, "retrain": 160, "control": 200, "agnostic": 1000}
    assert steps["control"] == steps["finetune"] + steps["retrain"] and q.bn_momentum is None
    edited = recipes.override(q, ["retrain.epochs=2", "batch_size=16", "retrain.lr=0:0.1"])
    assert (edited.retrain.epochs, edited.batch_size, edited.retrain.lr) == (2, 16, "0:0.1")
    with pytest.raises(ValueError, match="no field"):
        recipes.override(q, ["retrain.nope=1"])
    with pytest.raises(ValueError, match="'retrain.epochs=two': 'two' is not int"):
        recipes.override(q, ["retrain.epochs=two"])


def test_v2_budget_arithmetic_in_epochs():
    """Aware: E1 + E2 epochs of the subset; agnostic E1+E2 of the full train split; controls
    2/3/4 E2 (aware's retrain); the agnostic:aware image ratio is the data's (10x aquatic)."""
    setup = protocol.make_setup("v2", "resnet20", MINI, epochs=(1, 4))
    r = setup.recipe
    assert (r.finetune.epochs, r.retrain.epochs, r.agnostic.epochs) == (1, 4, 5)
    assert r.control == r.retrain and r.bn_momentum == 0.9
    np.testing.assert_allclose(recipes.resolve(r.retrain.lr), [(0, 0.01), (2, 0.001), (3, 1e-4)])
    assert r.retrain.eval_from == 2 and r.agnostic.eval_from <= 3  # last two epochs evaluated
    assert recipes.scaled_drops(25, (10, 20), 25) == [10, 20]
    assert recipes.scaled_drops(25, (10, 20), 2) == [1]
    with pytest.raises(ValueError, match="E2 >= 2"):
        recipes.epoch_recipe(0.001, 0.01, 0.01, 1e-4, finetune_epochs=1, retrain_epochs=1)
    with pytest.raises(ValueError, match="protocol v2 only"):
        protocol.make_setup("quick", "resnet20", MINI, epochs=(1, 4))
    subsets = ["aquatic", "indoor"]
    specs = sweep.grid(subsets, ["resnet20"], [0.5], [0],
                       ["aware:finetune_l1", "agnostic", "control2", "control4"])
    images = {s.label + (s.subset or ""): sweep.run_images(s, setup, subsets)[0] for s in specs}
    aq, full = len(setup.splits("aquatic").train), len(setup.splits("all").train)
    assert aq == 40 and full == 400  # mini fixture: 4 train images per class
    assert images["aware:finetune_l1aquatic"] == 4 * aq  # + the fine-tune, counted once
    assert images["control2aquatic"] == images["control4aquatic"] == 4 * aq
    assert images["agnostic"] == 5 * full
    est = sweep.estimate(specs, {"resnet20": setup}, subsets, 1.0, 10.0, 0.0)
    finetunes = 1 * (aq + len(setup.splits("indoor").train))
    assert est["train_images"] == sum(images.values()) + finetunes
    fast = sweep.estimate(specs, {"resnet20": setup}, subsets, 1.0, 10.0, 0.0,
                          rates={0.0: (1.0, 10.0), 0.9: (2.0, 20.0)})  # only ratios count
    assert fast["hours"] < est["hours"]  # pruned at 50%: ~1.5x the unpruned speed
    assert sweep.speed({0.0: (100.0, 1000.0), 0.9: (200.0, 2000.0)}, 0.45) == pytest.approx((1.5, 1.5))


def test_normalizers_per_criterion():
    setup = protocol.make_setup("v2", "resnet20", MINI)
    assert setup.normalizer("l1") == "none" and setup.normalizer("finetune_l1") == "none"
    assert setup.normalizer("act_l2") == "mean" and setup.normalizer("l1", "mean") == "mean"
    assert sweep.parse_method("aware:finetune_l1@mean") == ("aware", "finetune_l1", "mean")
    spec = sweep.RunSpec("aware", "r", 0.5, 0, "aquatic", "finetune_l1", "mean")
    assert spec.label == "aware:finetune_l1@mean"
    assert spec.id == "aware-finetune_l1-mean_r_aquatic_l50_s0"
    variant = sweep.grid(["aquatic"], ["r"], [0.9], [0], ["agnostic", "agnostic@mean",
                                                          "control4@mean"])
    c4 = [s for s in variant if s.method == "control4"][0]
    assert c4.label == "control4@mean" and sweep.agnostic_of(c4).id == "agnostic-mean_r_l90_s0"
    assert sweep.agnostic_of(c4).id in [s.id for s in variant]
    with pytest.raises(ValueError, match="add agnostic@mean"):
        sweep.grid(["aquatic"], ["r"], [0.5], [0], ["agnostic", "control4@mean"])
    for bad in ("control3@mean", "aware:l1@median", "control4:l1"):
        with pytest.raises(ValueError):
            sweep.parse_method(bad)
    with pytest.raises(ValueError, match="add agnostic"):
        sweep.grid(["aquatic"], ["r"], [0.5], [0], ["control4"])


def test_convergence_flag():
    rows = [{"epoch": 0, "a_val_acc": np.nan}, {"epoch": 1, "a_val_acc": 0.50},
            {"epoch": 2, "a_val_acc": 0.504}]
    assert protocol.convergence(rows, "a") == {"last_epoch_gain": pytest.approx(0.004),
                                               "converged": True}
    rows[2]["a_val_acc"] = 0.51
    assert protocol.convergence(rows, "a")["converged"] is False
    rows[2]["a_val_acc"] = 0.40  # a drop counts as converged
    assert protocol.convergence(rows, "a")["converged"] is True
    assert protocol.convergence(rows[:2], "a") == {"last_epoch_gain": None, "converged": None}


def test_bootstrap_ci_on_known_data():
    rng = np.random.default_rng(0)
    n = 4000
    a, b = rng.random(n) < 0.7, rng.random(n) < 0.5
    rows = [{"network": "n", "subset": "s", "level": 0.5, "seed": 0, "method": m,
             "test_accuracy": float(v.mean()), "correct": v} for m, v in (("a", a), ("b", b))]
    d = stats.Bootstrap(rows, samples=2000).delta(("n", "s"), "a", "b", 0.5)
    se = np.sqrt(a.mean() * (1 - a.mean()) / n + b.mean() * (1 - b.mean()) / n)
    assert d["delta"] == pytest.approx(a.mean() - b.mean())
    assert d["lo"] == pytest.approx(d["delta"] - 1.96 * se, abs=0.15 * 1.96 * se)
    assert d["hi"] == pytest.approx(d["delta"] + 1.96 * se, abs=0.15 * 1.96 * se)
    # paired: the same images right for both methods cancel, whatever their number
    same = [{**r, "method": m, "correct": a, "test_accuracy": float(a.mean())}
            for r, m in zip(rows, "ab")]
    d0 = stats.Bootstrap(same).delta(("n", "s"), "a", "b", 0.5)
    assert (d0["delta"], d0["lo"], d0["hi"]) == (0.0, 0.0, 0.0)
    # seeds only (no per-image results): three paired deltas 0.1, 0.2, 0.3
    seeds = [{"network": "n", "subset": "s", "level": 0.9, "seed": s, "method": m,
              "test_accuracy": acc, "correct": None}
             for s, delta in enumerate((0.1, 0.2, 0.3)) for m, acc in (("a", 0.5 + delta), ("b", 0.5))]
    d3 = stats.Bootstrap(seeds).delta(("n", "s"), "a", "b", 0.9)
    assert d3["delta"] == pytest.approx(0.2) and d3["seeds"] == [0, 1, 2]
    assert 0.1 - 1e-6 <= d3["lo"] < 0.2 < d3["hi"] <= 0.3 + 1e-6
    assert stats.ci(np.arange(101)) == pytest.approx((2.5, 97.5))


def test_shards_cover_the_grid_exactly_once():
    specs = sweep.grid(["aquatic", "indoor", "outdoor"], ["r"], [0.5, 0.7, 0.9], [0, 1, 2],
                       ["aware:finetune_l1", "aware:act_l2", "agnostic", "control2", "control4"])
    assert len(specs) == 3 * (1 + 3 * (1 + 3 * 4))
    cost = lambda s: {"agnostic": 10.0}.get(s.method, 1.0)  # noqa: E731
    for n in (1, 2, 3, 5, 7, 40):
        parts = [sweep.shard(specs, i, n, cost) for i in range(n)]
        ids = [s.id for part in parts for s in part]
        assert sorted(ids) == sorted(s.id for s in specs) and len(set(ids)) == len(ids)
        for part in parts:  # every control4 is with its agnostic run, after it
            order = [s.id for s in part]
            for s in part:
                if s.method == "control4":
                    assert order.index(sweep.agnostic_of(s).id) < order.index(s.id)
        loads = [sum(map(cost, part)) for part in parts]
        if n <= 3:
            assert max(loads) - min(loads) <= 22  # one unit's cost at most
    assert sweep.parse_shard("2/4") == (2, 4)
    few = sweep.grid(["aquatic", "outdoor"], ["r"], [0.5], [0, 1], ["aware:act_l2", "agnostic"],
                     {"outdoor": [0]})
    assert [s.id for s in few] == [
        "unpruned_r_s0", "agnostic_r_l50_s0", "aware-act_l2_r_aquatic_l50_s0", "unpruned_r_s1",
        "agnostic_r_l50_s1", "aware-act_l2_r_aquatic_l50_s1", "aware-act_l2_r_outdoor_l50_s0"]
    c4 = sweep.grid(["aquatic", "indoor"], ["r"], [0.9], [0], ["aware:act_l2", "agnostic",
                                                               "control4"])
    assert [s.id for s in c4] == [  # Control 4 runs while its agnostic model is on disk
        "unpruned_r_s0", "agnostic_r_l90_s0", "control4_r_aquatic_l90_s0",
        "control4_r_indoor_l90_s0", "aware-act_l2_r_aquatic_l90_s0",
        "aware-act_l2_r_indoor_l90_s0"]
    for bad in ("4/4", "-1/2", "a/b", "3"):
        with pytest.raises(ValueError, match="i/n"):
            sweep.parse_shard(bad)


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
    # paired by seed: only seed 0 has both, a: +.22, +.35; b: 0, +.10
    boot = stats.Bootstrap(sweep_report.collect(tmp_path))
    p = sweep_report.headline(table, "aware:finetune_l1", "agnostic", boot)
    assert p["mean"] == pytest.approx((0.285 + 0.05) / 2) and p["max"] == pytest.approx(0.35)
    assert p["seeds"] == [0] and p["mean_ci"] == pytest.approx((p["mean"], p["mean"]))
    paths = sweep_report.report(tmp_path, tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "| aware:finetune_l1 | agnostic | +16.8 | [+16.8, +16.8] | +35.0 | [+35.0, +35.0] | a 90% | 4 |" in md
    assert "| 90 | 10.0 | 30.0 | 35.0 | 45.0 |" in md and "unpruned: 70.0% (logits restricted to the subset: 75.0%)" in md
    assert "| aware:finetune_l1 | agnostic | +22.0 [+22.0, +22.0] | +35.0 [+35.0, +35.0] |" in md
    heads = json.loads(paths["headline"].read_text())
    assert heads["by_level"]["aware:finetune_l1 vs control1"]["0.9"]["subsets"] == 2
    cells = json.loads(paths["deltas"].read_text())
    assert len(cells) == 3 * 2 * 2  # (agnostic, control1, control2) x subsets x levels

    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 + 2 * 2 + 2 * 2 * 2 + 2 * 2  # ag+c1, c2, aware, unpruned(+r)
    assert [p.name for p in paths["plots"]] == ["n_a.png", "n_b.png"]
    assert all(p.stat().st_size > 5000 for p in paths["plots"])


def test_a_subset_with_baselines_only_gets_a_line_not_an_empty_table():
    """An agnostic run covers every subset's Control 1 before its data-aware runs are in."""
    table = {("n", "a"): {"aware:act_l2": {0.5: 0.6}, "agnostic": {0.5: 0.4}},
             ("n", "b"): {"agnostic": {0.5: 0.4}, "control1": {0.5: 0.5}}}
    assert sweep_report.delta_table(table, ("n", "b"), None) == (
        "No data-aware run of this subset yet: baselines only.")


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
    setup = dataclasses.replace(setup, recipe=recipes.override(setup.recipe, ["bn_momentum=0.9"]))
    specs = sweep.grid(["aquatic"], ["tiny"], [0.5], [0], ["aware:finetune_l1", "agnostic",
                                                           "control3", "control4"])
    assert [s.id for s in specs] == ["unpruned_tiny_s0", "agnostic_tiny_l50_s0",
                                     "control4_tiny_aquatic_l50_s0",
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
    sweep.run_spec(specs[4], short, tmp_path, ["aquatic"])
    (runs / specs[4].id / "result.json").unlink()
    pruned_stamp = (runs / specs[4].id / "pruned.keras").stat().st_mtime_ns
    logs.clear()
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append) == 3
    assert "5 runs, 2 finished, 3 to do" in logs[0]
    assert {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/result.json")
            if p.parent.name in stamps} == stamps  # finished runs were not re-run
    assert (runs / specs[4].id / "pruned.keras").stat().st_mtime_ns == pruned_stamp
    control = json.loads((runs / specs[4].id / "result.json").read_text())
    assert [r["epoch"] for r in control["history"]] == [0, 1]  # epoch 0 kept, epoch 1 added
    # bookkeeping recorded in the results
    aware = json.loads((runs / specs[3].id / "result.json").read_text())
    agnostic = json.loads((runs / specs[1].id / "result.json").read_text())
    c4 = json.loads((runs / specs[2].id / "result.json").read_text())
    s = setup.splits("aquatic")
    assert (aware["train_on"], aware["train_images"]) == ("aquatic", len(s.train))
    assert (agnostic["train_on"], agnostic["train_images"]) == ("all", 400)
    assert (aware["normalizer"], agnostic["normalizer"]) == ("none", "none")
    for res in (aware, agnostic, control, c4):
        assert res["eval_images"]["aquatic"] == {"val": len(s.val), "test": len(s.test)}
        assert set(res["subsets"]) == {"aquatic"} and 0.45 < res["achieved"]["params_level"] < 0.55
        sel = res["subsets"]["aquatic"]
        assert protocol.unpack_bits(sel["test_correct"]).mean() == pytest.approx(sel["test_accuracy"])
    assert len(aware["history"]) == 2 and aware["subsets"]["aquatic"]["epoch"] in (0, 1)
    assert aware["subsets"]["aquatic"]["converged"] in (True, False)  # both epochs evaluated
    finetuned = tmp_path / "finetune" / "tiny_aquatic_s0" / "finetuned.keras"
    assert {layer.momentum for layer in keras.models.load_model(finetuned).layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    assert "restricted" in agnostic["subsets"]["aquatic"]
    # Control 4: the agnostic run's final model, not pruned again, trained on the subset
    assert c4["start_from"] == str(runs / specs[1].id)
    assert (c4["train_on"], c4["train_images"], c4["params_after"]) == (
        "aquatic", len(s.train), agnostic["params_after"])
    assert len(c4["history"]) == 2 and c4["subsets"]["aquatic"]["converged"] is None  # eval_from=1
    final = keras.models.load_model(runs / specs[1].id / "train" / "checkpoint.keras", compile=False)
    start = keras.models.load_model(runs / specs[2].id / "pruned.keras", compile=False)
    for a, b in zip(final.get_weights(), start.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append) == 0
    # shared runs: a note names a subset they lack only when a spec of the sweep needs it
    assert sweep.run_sweep(specs[:2], {"tiny": setup}, tmp_path, SUBSETS, logs.append) == 0
    assert not any("evaluated without" in m for m in logs)
    indoor = sweep.grid(SUBSETS, ["tiny"], [0.5], [0], ["agnostic", "control3"])
    assert sweep.run_sweep(indoor, {"tiny": setup}, tmp_path, SUBSETS, logs.append,
                           max_runs=0) == 0
    assert "agnostic_tiny_l50_s0 was evaluated without indoor" in logs[-1]
    paths = sweep_report.report(tmp_path)
    csv_rows = paths["csv"].read_text().splitlines()
    methods = {r.split(",")[4] for r in csv_rows[1:]}
    assert methods == {"unpruned", "unpruned_restricted", "agnostic", "control1",
                       "aware:finetune_l1", "control3", "control4"}
    assert "| aware:finetune_l1 | control4 |" in paths["markdown"].read_text()
    # the same runs spread over two shard directories (one run in both) merge to the same
    import shutil
    merged, other = tmp_path / "m", tmp_path / "other"
    for i, run in enumerate(sorted(runs.iterdir())):
        for dest in [merged / "shard_0_of_2", other][i % 2:] if i == 0 else [
                [merged / "shard_0_of_2", other][i % 2]]:
            (dest / "runs" / run.name).mkdir(parents=True)
            shutil.copy(run / "result.json", dest / "runs" / run.name / "result.json")
    both = sweep_report.report([merged, other], tmp_path / "merged_report")
    assert sorted(both["csv"].read_text().splitlines()[1:]) != []
    strip = lambda text: sorted(",".join(r.split(",")[:-1]) for r in text.splitlines()[1:])  # noqa: E731
    assert strip(both["csv"].read_text()) == strip(paths["csv"].read_text())
    heads = json.loads(both["headline"].read_text())
    assert heads["runs"] == 5 and heads["duplicates"] == [sorted(p.name for p in runs.iterdir())[0]]
    assert json.loads(paths["deltas"].read_text()) == json.loads(both["deltas"].read_text())


def test_each_run_trains_with_its_own_seed(tmp_path, tiny_file):
    """A spec's seed reaches its run: seeds 0 and 1 of Control 3 draw different random
    filters, and each result records its seed."""
    setup = tiny_setup(tiny_file)
    plans = {}
    for seed in (0, 1):
        spec = sweep.RunSpec("control3", "tiny", 0.5, seed, "aquatic")
        sweep.run_spec(spec, setup, tmp_path, ["aquatic"])
        run = tmp_path / "runs" / spec.id
        assert json.loads((run / "result.json").read_text())["seed"] == seed
        plans[seed] = json.loads((run / "plan.json").read_text())
    assert (plans[0]["seed"], plans[1]["seed"]) == (0, 1)
    assert plans[0]["layers"] != plans[1]["layers"]


def test_control4_reruns_an_agnostic_run_whose_model_a_checkout_lacks(tmp_path, tiny_file):
    """Results are committed, models are not (.gitignore): on a fresh checkout Control 4's
    agnostic run has its result and no model, so it is run again, its old directory aside."""
    setup = tiny_setup(tiny_file, bn_batches=1)
    specs = sweep.grid(["aquatic"], ["tiny"], [0.5], [0], ["agnostic", "control4"])
    logs = []
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append,
                           max_runs=2) == 2
    agnostic = tmp_path / "runs" / "agnostic_tiny_l50_s0"
    before = json.loads((agnostic / "result.json").read_text())
    for path in agnostic.rglob("*"):  # what .gitignore leaves out of a checkout
        if path.suffix == ".keras" or path.name == "state.json":
            path.unlink()
    assert sweep.run_sweep(specs, {"tiny": setup}, tmp_path, ["aquatic"], logs.append) == 1
    assert any("agnostic_tiny_l50_s0 has its result but not its model" in m for m in logs)
    aside = tmp_path / "rerun" / "agnostic_tiny_l50_s0"
    assert json.loads((aside / "result.json").read_text()) == before
    assert (agnostic / "train" / "checkpoint.keras").exists()
    again = json.loads((agnostic / "result.json").read_text())
    assert again["achieved"] == before["achieved"]
    c4 = json.loads((tmp_path / "runs" / "control4_tiny_aquatic_l50_s0" / "result.json")
                    .read_text())
    assert c4["start_from"] == str(agnostic)
    files, duplicates = sweep_report.run_files(tmp_path)  # the report reads runs/ only
    assert [f.parent.name for f in files] == ["agnostic_tiny_l50_s0",
                                              "control4_tiny_aquatic_l50_s0", "unpruned_tiny_s0"]
    assert duplicates == []


def _checkout(run_dir):
    for path in run_dir.rglob("*"):  # what .gitignore leaves out of a checkout
        if path.suffix == ".keras" or path.name == "state.json":
            path.unlink()


def test_shared_runs_keep_every_subset_across_stages(tmp_path, tiny_file):
    """Stages with other subsets share the agnostic run: resumed by a stage that needs more
    subsets, it evaluates them all; run again for Control 4 with fewer, the report takes the
    rest from the earlier training, and no earlier training is lost."""
    import shutil

    setup, logs = tiny_setup(tiny_file, bn_batches=1), []
    stage1 = sweep.grid(["aquatic"], ["tiny"], [0.5], [0], ["agnostic", "control4"])
    stage2 = sweep.grid(["indoor"], ["tiny"], [0.5], [0], ["agnostic", "control4"])
    sweep.run_sweep(stage1, {"tiny": setup}, tmp_path, ["aquatic"], logs.append)
    agnostic = tmp_path / "runs" / "agnostic_tiny_l50_s0"
    (agnostic / "result.json").unlink()  # killed in its first epoch, resumed by stage 2
    shutil.rmtree(agnostic / "train")
    shutil.rmtree(agnostic / "correct", ignore_errors=True)
    shared = ["aquatic", "indoor"]
    sweep.run_sweep(stage2, {"tiny": setup}, tmp_path, shared, logs.append, max_runs=1)
    first = json.loads((agnostic / "result.json").read_text())
    assert set(first["subsets"]) == set(shared)
    assert all("test_accuracy" in first["subsets"][n]["pruned"] for n in shared)
    c4 = tmp_path / "runs" / "control4_tiny_indoor_l50_s0"
    for n, subsets in ((1, ["indoor"]), (2, shared)):  # checkouts: Control 4 reruns it
        _checkout(tmp_path)
        shutil.rmtree(c4, ignore_errors=True)
        sweep.run_sweep(stage2, {"tiny": setup}, tmp_path, subsets, logs.append)
        if n == 1:
            rows = sweep_report.collect(tmp_path)
            assert {r["subset"]: r["run"] for r in rows if r["method"] == "control1"} == {
                "aquatic": "rerun/agnostic_tiny_l50_s0", "indoor": "agnostic_tiny_l50_s0"}
            assert not any("evaluated without" in m for m in logs)
    assert json.loads((tmp_path / "rerun" / "agnostic_tiny_l50_s0" / "result.json")
                      .read_text()) == first
    assert set(json.loads((tmp_path / "rerun" / "agnostic_tiny_l50_s0.2" / "result.json")
                          .read_text())["subsets"]) == {"indoor"}
    assert set(json.loads((agnostic / "result.json").read_text())["subsets"]) == set(shared)


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
    assert bad.returncode == 1 and "aware and adapt need a criterion" in bad.stderr


def test_search_app_end_to_end_and_resume(tmp_path, tiny_file):
    """pipelines.search on the mini fixture: every reachable level matches (tolerance 1), so the
    search climbs to the highest reachable grid level (75%: the tiny model cannot lose more
    than ~77% of its parameters, and 85% and 80% are misses marked unreachable); a rerun
    reuses every probe; a start level off the grid exits non-zero."""
    args = [sys.executable, "-m", "pipelines.search", f"--data={MINI}", "--subset=aquatic",
            "--network=tiny", f"--model={tiny_file}", "--recipe_network=resnet20",
            f"--recipe={','.join(TINY_RECIPE)}", "--criterion=act_l2", "--tolerance=1",
            f"--workdir={tmp_path}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "search_aquatic_tiny.json").read_text())
    assert [s["level"] for s in out["steps"]] == [0.5, 0.75, 0.85, 0.8]
    assert [s["accuracy"] is None for s in out["steps"]] == [False, False, True, True]
    assert out["level"] == 0.75 and out["selected_on"] == "validation"
    run = json.loads((tmp_path / "runs" / "aware-act_l2_tiny_aquatic_l75_s0" / "result.json")
                     .read_text())
    assert out["test_accuracy"] == run["subsets"]["aquatic"]["test_accuracy"]
    report = (tmp_path / "search_aquatic_tiny.md").read_text()
    assert "chosen level 75%" in report and "| unreachable |" in report
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    assert len(stamps) == 3  # unpruned + the two reachable probes
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")} == stamps
    bad = subprocess.run(args + ["--start=0.33"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "start level 0.33" in bad.stderr


def test_adapt_runs_the_main_jobs_recipe(tmp_path, tiny_file):
    """`adapt`: the aware cut, reconstruction, a k-class head and distillation, end to end."""
    setup = tiny_setup(tiny_file)
    result = protocol.run(setup, tmp_path / "adapt", "adapt", "aquatic", level=0.5,
                          criterion="act_l2")
    head = keras.models.load_model(tmp_path / "adapt" / "head.keras", compile=False)
    assert head.output_shape[-1] == 10 and result["method"] == "adapt"
    assert result["params_after"] < result["params_before"]
    assert all(np.isfinite(row["loss"]) for row in result["history"])
    assert 0.0 <= result["subsets"]["aquatic"]["test_accuracy"] <= 1.0
