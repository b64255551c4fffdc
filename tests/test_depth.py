"""Depth pruning: a model without some residual branches equals the model with those
branches' weights zeroed, on real images; what is and is not a removable branch; branch
scores against a direct computation; a plan with a depth cut round-trips through JSON."""
import json

import keras
import numpy as np
import pytest

from pruning_utils import randomize, real_images
from tfprune import data, pruner
from tfprune.core import depth, head, modelspec, surgery
from tfprune.core import plan as plan_mod
from tfprune.models import loader, zoo
from tfprune.scoring import branches


@pytest.fixture(scope="module")
def pretrained():
    return loader.load_model("pretrained:resnet20")


def _names(model):
    return [b.add for b in depth.find_branches(modelspec.read_model(model))]


def _zeroed(model, names):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return depth.zero_branches(copy, names)


def test_resnet20_branches_skip_projection_blocks(pretrained):
    assert _names(pretrained) == ["s1b0_add", "s1b1_add", "s1b2_add", "s2b1_add", "s2b2_add",
                                  "s3b1_add", "s3b2_add"]
    br = depth.find_branches(modelspec.read_model(pretrained))[1]
    assert br.shortcut == ("s1b0_out", 0, 0) and br.after == "s1b1_out"
    assert br.layers == ("s1b1_a_conv", "s1b1_a_bn", "s1b1_a_relu", "s1b1_b_conv", "s1b1_b_bn")


@pytest.mark.parametrize("names", [["s1b1_add"], ["s1b1_add", "s1b2_add", "s3b2_add"],
                                   ["s1b0_add", "s1b1_add", "s1b2_add", "s2b1_add"]])
def test_removed_equals_zeroed_resnet20(pretrained, names):
    x = real_images((32, 32, 3), 16)
    cut = depth.remove_branches(pretrained, names)
    removed = {n for b in depth.find_branches(modelspec.read_model(pretrained))
               if b.add in names for n in b.removed}
    assert {l.name for l in cut.layers} == {l.name for l in pretrained.layers} - removed
    ref = np.asarray(_zeroed(pretrained, names)(x, training=False))
    np.testing.assert_allclose(np.asarray(cut(x, training=False)), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(pretrained(x, training=False)) - ref).max() > 1e-2


@pytest.mark.parametrize("build", [
    lambda: randomize(zoo.build("mobilenetv2")),
    lambda: randomize(keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None)),
], ids=["mobilenetv2", "keras_resnet50"])
def test_removed_equals_zeroed_unseen_models(build):
    model = build()
    names = _names(model)
    assert len(names) >= 5
    pick = names[::2]
    x = real_images(model.input_shape[1:], 4)
    cut = depth.remove_branches(model, pick)
    np.testing.assert_allclose(np.asarray(cut(x)), np.asarray(_zeroed(model, pick)(x)),
                               rtol=1e-4, atol=1e-5)


def _toy(shortcut_relu: bool, fan_out: bool, last=None):
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    if shortcut_relu:
        x = keras.layers.ReLU(name="stem_relu")(x)
    b = (last or keras.layers.Conv2D(4, 3, padding="same", name="branch"))(x)
    y = keras.layers.ReLU(name="out")(keras.layers.Add(name="add")([x, b]))
    if fan_out:  # the branch's output is used outside the block too
        y = keras.layers.Add(name="add2")([y, b])
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(y))


def test_what_is_not_a_removable_branch():
    assert _names(_toy(True, False)) == ["add"]
    # ReLU(x) != x when x can be negative: the ReLU stays, on the shortcut
    plain = _toy(False, False)
    assert [(b.add, b.after) for b in depth.find_branches(modelspec.read_model(plain))] == [
        ("add", None)]
    x = np.concatenate([real_images((8, 8, 3), 2)] * 2, axis=-1)[..., :4]
    np.testing.assert_allclose(np.asarray(depth.remove_branches(plain, ["add"])(x)),
                               np.asarray(_zeroed(plain, ["add"])(x)), rtol=1e-5, atol=1e-6)
    assert "add" not in _names(_toy(True, True))  # the branch feeds another layer
    # its last layer is not 0 with zeroed weights: sigmoid(0) = 0.5; BN without gamma
    assert _names(_toy(True, False, keras.layers.Conv2D(4, 1, activation="sigmoid"))) == []
    assert _names(_toy(True, False, keras.layers.BatchNormalization(scale=False))) == []
    assert _names(_toy(True, False, keras.layers.BatchNormalization())) == ["add"]
    with pytest.raises(depth.DepthError, match="depth cut 'stem': not an Add whose residual"):
        depth.remove_branches(_toy(True, False), ["stem"])
    with pytest.raises(depth.DepthError, match="depth cut 'nope': no layer of the model"):
        depth.remove_branches(_toy(True, False), ["nope"])


def test_kl_scores_match_direct_computation(pretrained, sample_splits):
    ds = data.as_dataset(sample_splits.train, 32)
    scores = branches.score_branches(pretrained, "kl", ds, max_batches=2)
    assert list(scores) == _names(pretrained) and all(s > 0 for s in scores.values())
    x = np.concatenate([np.asarray(b[0]) for b in ds.take(2)])
    p = keras.ops.softmax(pretrained(x, training=False)).numpy().astype(np.float64)
    q = keras.ops.softmax(_zeroed(pretrained, ["s2b2_add"])(x, training=False)).numpy()
    want = np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=-1))
    assert scores["s2b2_add"] == pytest.approx(want, rel=2e-3)
    assert branches.pick(scores, 2) == sorted(sorted(scores, key=scores.get)[:2],
                                              key=list(scores).index)
    assert branches.pick(scores, 8) == list(scores)  # at most what the model has
    with pytest.raises(branches.ScoringError, match="needs the subset's images"):
        branches.score_branches(pretrained, "kl", None)


def test_plan_with_depth_cut_round_trips(tmp_path, pretrained, sample_splits):
    splits = data.relabel(sample_splits)
    result = pruner.prune_model(pretrained, "act_l2", 0.2, splits=splits, blocks=2,
                                head_classes=sample_splits.classes, calibration_batches=2)
    entry = result.plan["depth"]
    assert entry["criterion"] == "kl" and len(entry["removed"]) == 2
    assert set(entry["removed"]) < set(entry["removable"])
    assert not set(entry["removed"]) & {l.name for l in result.pruned.layers}
    plan_mod.save_plan(result.plan, tmp_path / "plan.json")
    loaded = plan_mod.load_plan(tmp_path / "plan.json")
    assert loaded == json.loads(json.dumps(result.plan))
    again = surgery.apply_plan(pretrained, loaded)
    for a, b in zip(result.pruned.weights, again.weights):
        assert a.path == b.path and a.numpy().tobytes() == b.numpy().tobytes()
    x = real_images((32, 32, 3), 8)
    zeroed = surgery.zero_dropped(pretrained, loaded)  # head cut, branches gone, zeros
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(zeroed(x)), rtol=1e-4,
                               atol=2e-4)
    agnostic = pruner.prune_model(pretrained, "l1", 0.0, blocks=1)
    assert agnostic.plan["depth"]["criterion"] == "bn_gamma"
    # a model with fewer branches than asked loses all it has, and says so
    logs = []
    toy = pruner.prune_model(_toy(True, False), "l1", 0.0, blocks=3, log=logs.append)
    assert toy.plan["depth"]["removed"] == ["add"] and toy.plan["depth"]["requested"] == 3
    assert "removing 1 of 1 residual branches by bn_gamma (3 asked" in logs[0]


def test_blocks_auto_shares_the_latency_level_and_keeps_the_closest(pretrained,
                                                                   sample_splits):
    """blocks auto: one candidate per count of the lowest-KL branches, whose channels cut
    what the branches leave of the predicted latency; the closest (least KL) is the plan,
    and it still equals the model with everything it drops zeroed."""
    from tfprune import latency
    from tfprune.core.plan import PlanError, UnreachableLevel

    model, splits = pretrained, data.relabel(sample_splits)
    logs = []

    def terms(m):
        return latency.plan_terms(m, "latency", "auto", log=logs.append)
    result = pruner.prune_model(model, "act_l2", 0.3, "latency", splits=splits, terms=terms,
                                head_classes=sample_splits.classes, blocks="auto",
                                calibration_batches=2, feedback=False, log=logs.append)
    entry = result.plan["depth"]
    assert entry["requested"] == "auto" and entry["level"] == 0.3
    rows = entry["search"]
    assert [r["branches"] for r in rows] == list(range(len(rows))) and len(rows) >= 2
    full = rows[0]["predicted_ms"]
    for r in rows:  # branches and channels together remove the level of the full model
        assert r["channel_level"] == pytest.approx(1 - 0.7 * full / r["predicted_ms"],
                                                   abs=1e-4)
        assert r["channel_level"] >= 0
    best = min((r for r in rows if "kl" in r), key=lambda r: r["kl"])
    assert len(entry["removed"]) == best["branches"]
    assert result.plan["level"] == pytest.approx(best["channel_level"], abs=1e-4)
    assert any(m.startswith("[prune] depth search: 0 branches") for m in logs)
    cut = head.apply_entry(model, result.plan["head"])
    x = real_images((32, 32, 3), 8)
    np.testing.assert_allclose(np.asarray(result.pruned(x)),
                               np.asarray(surgery.zero_dropped(model, result.plan)(x)),
                               rtol=1e-4, atol=2e-4)
    # with the model it came from, the search's KL of the chosen count is the plan's
    assert branches.divergence(cut, result.pruned, data.as_dataset(splits.train, 64), 2) == \
        pytest.approx(best["kl"], rel=1e-3)
    with pytest.raises(PlanError, match="needs target latency"):
        pruner.prune_model(model, "l1", 0.3, "params", blocks="auto", terms=terms)
    # past what channels reach (0.56-0.73 of the latency, by host), without data the fewest
    # branches that make the level reachable are removed
    with pytest.raises(UnreachableLevel, match=r"highest reachable level is 0\.\d+.*"
                                               "--blocks=auto removes whole residual") as err:
        pruner.prune_model(model, "l1", 0.95, "latency", terms=terms, feedback=False)
    level = round(err.value.highest + 0.03, 2)
    free = pruner.prune_model(model, "l1", level, "latency", blocks="auto", terms=terms,
                              feedback=False, log=logs.append)
    rows = free.plan["depth"]["search"]
    assert all("unreachable" in r for r in rows[:-1]) and "unreachable" not in rows[-1]
    assert len(rows) >= 2 and not any("kl" in r for r in rows)
    assert len(free.plan["depth"]["removed"]) == rows[-1]["branches"]
    assert "the fewest that reach the level" in logs[-1]
    np.testing.assert_allclose(np.asarray(free.pruned(x)),
                               np.asarray(surgery.zero_dropped(model, free.plan)(x)),
                               rtol=1e-4, atol=2e-4)
    with pytest.raises(depth.DepthError, match="or auto, got 'x'"):
        pruner.prune_model(model, "l1", 0.3, blocks="x")


def test_prune_app_reaches_a_cut_channels_cannot_with_blocks_auto(tmp_path):
    """The prune app without data: 95% of ResNet-20's float32 latency is refused with channels
    alone (the line names the highest reachable level, 0.56-0.73 by host, and --blocks=auto);
    with --blocks=auto a level just past that highest is reached, the fewest branches going
    first; the console line, report and plan say which."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    def prune(out, level, *extra):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.prune", "--model=pretrained:resnet20",
             "--criterion=l1", "--target=latency", f"--level={level}", f"--output={out}",
             *extra], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
            timeout=900)
    refused = prune(tmp_path / "channels", 0.95)
    assert refused.returncode != 0
    last = refused.stderr.splitlines()[-1]
    assert "--blocks=auto removes whole residual branches" in last
    level = round(float(re.search(r"highest reachable level is (0\.\d+)", last)[1]) + 0.03, 2)
    done = prune(tmp_path / "auto", level, "--blocks=auto")
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads((tmp_path / "auto" / "plan.json").read_text())
    gone = plan["depth"]["removed"]
    assert plan["depth"]["requested"] == "auto" and plan["depth"]["level"] == level and gone
    assert done.stdout.strip().endswith(f"after {len(gone)} residual branches removed)")
    report = (tmp_path / "auto" / "report.md").read_text()
    assert f"- depth: {len(gone)} of 7 residual branches removed first ({', '.join(gone)}; " \
           f"bn_gamma; blocks auto for {level:.3f} of the whole model's" in report
