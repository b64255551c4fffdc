"""Plans: levels, targets, allocations, rounding, JSON round trip, refusals; the criteria."""
import json

import numpy as np
import pytest

import keras

from pruning_utils import randomize
from tfprune.core import graph as graph_mod
from tfprune.core import plan as plan_mod
from tfprune import scoring
from tfprune.core import surgery
from tfprune.models import zoo


@pytest.fixture(scope="module")
def resnet56():
    model = randomize(zoo.build("resnet56"), seed=3)
    return model, graph_mod.build_graph(model)


@pytest.fixture(scope="module")
def mobilenet():
    model = randomize(zoo.build("mobilenetv2"), seed=4)
    return model, graph_mod.build_graph(model)


@pytest.mark.parametrize("level", [-0.1, 1.0, 1.5, float("nan")])
def test_level_outside_unit_interval_refused(resnet56, level):
    _, g = resnet56
    with pytest.raises(plan_mod.PlanError, match="outside \\[0, 1\\)"):
        plan_mod.make_plan(g, {}, level)


@pytest.mark.parametrize("which", ["resnet56", "mobilenet"])
@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_global_params_level_within_two_points(which, criterion, request):
    model, g = request.getfixturevalue(which)
    scores = scoring.compute_scores(criterion, model, g, scoring.ScoringContext(seed=1))
    for level in (0.1, 0.3, 0.5, 0.7):
        plan = plan_mod.make_plan(g, scores, level, "params", "global")
        assert abs(plan["achieved"]["level"] - level) <= 0.02, (level, plan["achieved"])
        assert plan["achieved"]["params"] == g.counts(g.keep_mask(
            plan_mod.check_plan(plan, g)))["params"]


def test_rounding_steps_still_land_near_the_level():
    """Tile steps make the global ranking's levels jump (the shipped ResNet-20's l1 ranking,
    8/16-channel steps: its closest point at 50% of params was 43.8%); the plan refines it."""
    from tfprune.models import loader

    model = loader.load_model("pretrained:resnet20")
    g = graph_mod.build_graph(model)
    scores = scoring.compute_scores("l1", model, g)
    steps = {x.id: 8 if x.size == 16 else 16 for x in g.prunable_groups()}
    for level in (0.3, 0.5, 0.7):
        plan = plan_mod.make_plan(g, scores, level, "params", "global", round_to=steps)
        assert abs(plan["achieved"]["level"] - level) <= 0.025, (level, plan["achieved"])
        for e in plan["groups"]:
            assert len(e["kept"]) % e["step"] == 0 or len(e["kept"]) == e["channels"]


def test_uniform_removes_the_same_fraction_everywhere(resnet56):
    model, g = resnet56
    plan = plan_mod.make_plan(g, scoring.compute_scores("l1", model, g), 0.5, "filters",
                              "uniform")
    fractions = {len(e["kept"]) / e["channels"] for e in plan["groups"]}
    assert max(fractions) - min(fractions) < 0.07  # 16/32/64 channels round differently
    assert abs(plan["achieved"]["level"] - 0.5) < 0.1


def test_round_to_and_min_channels(mobilenet, resnet56):
    model, g = mobilenet
    scores = scoring.compute_scores("l2", model, g)
    plan = plan_mod.make_plan(g, scores, 0.6, "flops", "global", round_to=8, min_channels=8)
    for e in plan["groups"]:
        assert len(e["kept"]) == e["channels"] or len(e["kept"]) % 8 == 0
        assert len(e["kept"]) >= min(8, e["channels"])
    plan = plan_mod.make_plan(g, scores, 0.99, "params", "global", min_channels=3)
    assert min(len(e["kept"]) for e in plan["groups"]) == 3
    _, g56 = resnet56  # every group at 3 channels: 99% of the prunable filters is out of reach
    with pytest.raises(plan_mod.PlanError, match=r"highest reachable level is 0\.9\d\d "):
        plan_mod.make_plan(g56, {}, 0.99, "filters", "uniform", min_channels=3)


def test_filters_count_only_prunable_channels_and_uniform_is_uniform():
    """The #15 case: two 16-filter convs and a 100-unit output: half the filters is reachable
    (the output is left out of the count), uniform removes half of each conv, nothing else."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="c2")(x)
    out = keras.layers.Dense(100, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    g = graph_mod.build_graph(keras.Model(inp, out))
    plan = plan_mod.make_plan(g, {}, 0.5, "filters", "uniform")
    assert [len(e["kept"]) for e in plan["groups"]] == [8, 8]
    assert plan["achieved"]["level"] == 0.5
    assert plan["denominator"] == {"filters": 32, "filters_all": 132,
                                   "filters_left_out": ["logits"]}
    with pytest.raises(plan_mod.PlanError, match="highest reachable level is 0.875"):
        plan_mod.make_plan(g, {}, 0.9, "filters", "uniform")


def test_global_keeps_the_highest_scores(resnet56):
    model, g = resnet56
    scores = scoring.compute_scores("l1", model, g)
    plan = plan_mod.make_plan(g, scores, 0.4, normalizer="none")
    gs = scoring.group_scores(g, scores, "none")
    removed = np.concatenate([np.delete(gs[e["id"]], e["kept"]) for e in plan["groups"]])
    kept_lows = [gs[e["id"]][e["kept"]].min() for e in plan["groups"]
                 if len(e["kept"]) > 2]  # groups at min_channels may keep low scores
    assert removed.max() <= min(kept_lows) + 1e-12


def test_plan_json_round_trip_and_fresh_copy_reproduces(tmp_path):
    model = randomize(zoo.build("resnet20"), seed=5)
    path = tmp_path / "m.keras"
    model.save(path)
    g = graph_mod.build_graph(model)
    plan = plan_mod.make_plan(g, scoring.compute_scores("l1", model, g), 0.5, "flops",
                              "global", round_to=8, criterion="l1")
    plan_mod.save_plan(plan, tmp_path / "plan.json")
    loaded = plan_mod.load_plan(tmp_path / "plan.json")
    assert loaded == json.loads(json.dumps(plan))
    direct = surgery.apply_plan(model, plan, graph=g)
    fresh = surgery.apply_plan(keras.models.load_model(path), loaded)
    for a, b in zip(direct.weights, fresh.weights):
        assert a.path == b.path and a.numpy().tobytes() == b.numpy().tobytes()
    assert loaded["criterion"] == "l1" and loaded["model"]["fingerprint"] == g.fingerprint()
    assert set(loaded["layers"]["s1b0_a_conv"]) == {"in", "out"}


def test_plan_refused_on_a_different_model(resnet56):
    model, g = resnet56
    plan = plan_mod.make_plan(g, scoring.compute_scores("l1", model, g), 0.3)
    with pytest.raises(plan_mod.PlanError, match="another architecture.*fingerprint mismatch"):
        surgery.apply_plan(zoo.build("resnet20"), plan)
    bad = json.loads(json.dumps(plan))
    bad["groups"][0]["kept"] = [0, 0]
    with pytest.raises(plan_mod.PlanError, match="distinct"):
        surgery.apply_plan(model, bad, graph=g)


def test_unreadable_plan_file_named(tmp_path):
    (tmp_path / "plan.json").write_text('{"format": ')
    for path in (tmp_path / "plan.json", tmp_path / "missing.json"):
        with pytest.raises(plan_mod.PlanError, match=f"cannot read plan {path}: "):
            plan_mod.load_plan(path)


def test_nothing_prunable_refused():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="only")(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    g = graph_mod.build_graph(model)
    with pytest.raises(plan_mod.PlanError, match="nothing is prunable.*only.*model output"):
        plan_mod.make_plan(g, {}, 0.5)


def test_bad_target_allocation_refused(resnet56):
    _, g = resnet56
    with pytest.raises(plan_mod.PlanError, match="unknown target"):
        plan_mod.make_plan(g, {}, 0.5, target="energy")
    with pytest.raises(plan_mod.PlanError, match="target latency needs a latency model"):
        plan_mod.make_plan(g, {}, 0.5, target="latency")
    with pytest.raises(plan_mod.PlanError, match="unknown allocation"):
        plan_mod.make_plan(g, {}, 0.5, allocation="layerwise")


def test_criteria_l1_l2_bn_gamma_random(resnet56):
    model, g = resnet56
    conv = model.get_layer("s2b1_a_conv").get_weights()[0]
    s = scoring.compute_scores("l1", model, g)
    np.testing.assert_allclose(s["s2b1_a_conv"], np.abs(conv).mean(axis=(0, 1, 2)), rtol=1e-6)
    s = scoring.compute_scores("l2", model, g)
    np.testing.assert_allclose(s["s2b1_a_conv"], np.sqrt((conv ** 2).mean(axis=(0, 1, 2))),
                               rtol=1e-6)
    s = scoring.compute_scores("bn_gamma", model, g)
    np.testing.assert_allclose(s["s2b1_a_conv"],
                               np.abs(model.get_layer("s2b1_a_bn").get_weights()[0]), rtol=1e-6)
    a = scoring.compute_scores("random", model, g, scoring.ScoringContext(seed=7))
    b = scoring.compute_scores("random", model, g, scoring.ScoringContext(seed=7))
    c = scoring.compute_scores("random", model, g, scoring.ScoringContext(seed=8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_group_scores_normalise_members_then_average(resnet56):
    _, g = resnet56
    grp = g.group_of("s1b0_b_conv")
    scores = {m: np.full(g.producers[m][1], 10.0) for gr in g.prunable_groups() for m in gr.members}
    scores[grp.members[0]] = np.arange(1.0, grp.size + 1)
    gs = scoring.group_scores(g, scores, "mean")[grp.id]
    first = np.arange(1.0, grp.size + 1) / np.arange(1.0, grp.size + 1).mean()
    expected = (first + (len(grp.members) - 1)) / len(grp.members)
    np.testing.assert_allclose(gs, expected)
    assert abs(gs.mean() - 1.0) < 1e-9


def test_registry_takes_new_criteria_and_checks_them(resnet56):
    model, g = resnet56

    @scoring.register("test_needs_data", needs_data=True)
    def needs_data(model, graph, ctx):
        return {m: np.ones(graph.producers[m][1]) for grp in graph.prunable_groups()
                for m in grp.members}

    @scoring.register("test_wrong_length")
    def wrong_length(model, graph, ctx):
        return {"s1b0_a_conv": np.ones(3)}

    with pytest.raises(scoring.ScoringError, match="needs data"):
        scoring.compute_scores("test_needs_data", model, g)
    assert scoring.compute_scores("test_needs_data", model, g,
                                  scoring.ScoringContext(data=object()))
    with pytest.raises(scoring.ScoringError, match="3 scores for 's1b0_a_conv'"):
        scoring.compute_scores("test_wrong_length", model, g)
    with pytest.raises(scoring.ScoringError, match="unknown criterion"):
        scoring.get("no_such")
    del scoring.CRITERIA["test_needs_data"], scoring.CRITERIA["test_wrong_length"]


class _LinearCost:
    """A latency model by hand: every kept channel of group g costs ms[g]."""

    def __init__(self, graph, ms):
        self.ms, self.size = ms, {g.id: g.size for g in graph.prunable_groups()}

    def total(self, counts):
        return sum(c * counts.get(g, self.size[g]) for g, c in self.ms.items())

    def delta(self, counts, gid, new):
        return self.ms[gid] * (new - counts.get(gid, self.size[gid]))

    def describe(self):
        return {"runtime": "by hand"}


def test_latency_prices_a_tied_channel_as_all_the_filters_it_removes():
    """Equal importance everywhere; a residual stream's channel (4 tied filters) saves twice the
    ms of a single conv's. Counted once per removed filter it loses 4 for 2 ms, so the single
    convs go first (counted once per channel, the stream looked the cheaper cut)."""
    g = graph_mod.build_graph(zoo.build("resnet20"))
    groups = g.prunable_groups()
    scores = {m: np.ones(grp.size) for grp in groups for m in grp.members}
    tied = {grp.id for grp in groups if len(grp.members) == 4}
    assert len(tied) == 3
    cost = _LinearCost(g, {grp.id: 2.0 if grp.id in tied else 1.0 for grp in groups})
    plan = plan_mod.make_plan(g, scores, 0.2, "latency", "global", 1, cost=cost)
    kept = plan_mod.kept_counts(plan)
    assert all(kept[gid] == g.groups[gid].size for gid in tied)
    assert sum(g.groups[gid].size - kept[gid] for gid in kept) > 0
    assert plan["achieved"]["latency_level"] == pytest.approx(0.2, abs=0.01)
