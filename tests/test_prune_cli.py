"""`python -m pipelines.prune`: outputs, and every refusal as one line with a non-zero exit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

from pipelines import prune
from tfprune.models import zoo

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args):
    """Run the app's main in this process with fresh flags; returns the SystemExit or None."""
    prune.FLAGS.unparse_flags()
    prune.FLAGS(["prune", *args])
    try:
        prune.main([])
    except SystemExit as exit_:
        return exit_
    return None


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "r20.keras"
    zoo.build("resnet20").save(path)
    return path


def test_cli_end_to_end_writes_all_outputs(tmp_path, model_file):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.prune", f"--model={model_file}", "--criterion=l2",
         "--level=0.4", "--target=flops", "--allocation=uniform", "--round_to=4",
         "--ignore=s1b0_a_conv", f"--output={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["layers.png", "metrics.json", "plan.json",
                                       "pruned.keras", "report.md", "scores.json"]
    plan = json.loads((out / "plan.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    pruned = keras.models.load_model(out / "pruned.keras")
    assert pruned.count_params() == plan["achieved"]["params"] == metrics["after"]["params"]
    assert metrics["before"]["params"] == keras.models.load_model(model_file).count_params()
    assert plan["ignore"] == ["s1b0_a_conv"] and pruned.get_layer("s1b0_a_conv").filters == 16
    assert abs(plan["achieved"]["level"] - 0.4) < 0.06
    report = (out / "report.md").read_text()
    assert "| s1b0_b_conv | Conv2D |" in report and "model output" in report
    assert "pruned.keras" in proc.stdout


def test_apply_saved_plan_and_finetune(tmp_path, model_file):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_main(f"--model={model_file}", "--level=0.3", f"--output={first}") is None
    assert run_main(f"--model={model_file}", f"--plan={first / 'plan.json'}", "--data=sample",
                    "--subset=aquatic", "--finetune_epochs=1", "--batch_size=128",
                    f"--output={second}") is None
    metrics = json.loads((second / "metrics.json").read_text())
    a = keras.models.load_model(first / "pruned.keras")
    b = keras.models.load_model(second / "pruned.keras")
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    changed = [not np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights())]
    assert all(changed[:3]) and sum(changed) > len(changed) // 2  # fine-tuning trained them
    from tfprune import data
    from tfprune.training import fit as train
    test = data.load_subset("sample", "aquatic").test
    assert metrics["accuracy_finetuned"] == round(train.accuracy(b, test), 4)


@pytest.mark.parametrize("args,message", [
    (["--criterion=nope"], "unknown criterion 'nope'"),
    (["--ignore=not_a_layer"], "not_a_layer"),
    (["--data=npz:/no/such.npz", "--criterion=l1"], "/no/such.npz"),
])
def test_refusals_are_one_line(tmp_path, model_file, args, message):
    exit_ = run_main(f"--model={model_file}", f"--output={tmp_path / 'o'}", *args)
    assert exit_ is not None and isinstance(exit_.code, str)
    assert exit_.code.startswith("prune: ") and message in exit_.code
    assert "\n" not in exit_.code


def test_refuses_non_empty_output_without_overwrite(tmp_path, model_file):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    exit_ = run_main(f"--model={model_file}", f"--output={out}")
    assert "is not empty" in exit_.code and (out / "mine.txt").read_text() == "keep me"
    assert run_main(f"--model={model_file}", f"--output={out}", "--overwrite") is None
    assert (out / "pruned.keras").exists() and (out / "mine.txt").exists()


def test_never_writes_over_model(tmp_path, model_file):
    out = tmp_path / "o"
    out.mkdir()
    target = out / "pruned.keras"
    target.write_bytes(model_file.read_bytes())
    before = target.read_bytes()
    exit_ = run_main(f"--model={target}", f"--output={out}", "--overwrite")
    assert "would write over --model" in exit_.code
    assert target.read_bytes() == before


def test_data_aware_criterion_without_data_refused(tmp_path, model_file):
    from tfprune import scoring

    @scoring.register("test_act", needs_data=True)
    def test_act(model, graph, ctx):
        return {m: np.ones(graph.producers[m][1]) for g in graph.prunable_groups()
                for m in g.members}

    try:
        exit_ = run_main(f"--model={model_file}", "--criterion=test_act",
                         f"--output={tmp_path / 'o'}")
        assert "is data-aware: it needs --data" in exit_.code
    finally:
        del scoring.CRITERIA["test_act"]


def test_plan_of_another_model_and_finetune_without_data_refused(tmp_path, model_file):
    from tfprune.core import graph
    from tfprune.core import plan
    g = graph.build_graph(zoo.build("alexnet"))
    plan.save_plan(plan.make_plan(g, {}, 0.3), tmp_path / "alexnet_plan.json")
    exit_ = run_main(f"--model={model_file}", f"--plan={tmp_path / 'alexnet_plan.json'}",
                     f"--output={tmp_path / 'o'}")
    assert "made for model 'alexnet'" in exit_.code and "another architecture" in exit_.code
    exit_ = run_main(f"--model={model_file}", "--finetune_epochs=2", f"--output={tmp_path / 'o'}")
    assert exit_.code == "prune: --finetune_epochs needs --data (and --subset)"


def test_nothing_prunable_refused(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="only")(inp)
    path = tmp_path / "tiny.keras"
    keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x)).save(path)
    exit_ = run_main(f"--model={path}", f"--output={tmp_path / 'o'}")
    assert "nothing is prunable" in exit_.code and "model output" in exit_.code
    assert not (tmp_path / "o").exists()


def test_nested_model_pruned_and_saved_flat(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, name="c1"),
                              keras.layers.ReLU(name="r1")], name="inner")
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inner(inp))
    path = tmp_path / "nested.keras"
    keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x))).save(path)
    assert run_main(f"--model={path}", f"--output={tmp_path / 'o'}") is None
    pruned = keras.models.load_model(tmp_path / "o" / "pruned.keras")
    assert [l.name for l in pruned.layers][1:4] == ["inner_c1", "r1", "c1"]
    assert pruned.get_layer("inner_c1").filters + pruned.get_layer("c1").filters < 16
    report = (tmp_path / "o" / "report.md").read_text()
    assert ("- flattened: nested model inner flattened into one functional model (6 layers); "
            "renamed: inner/c1 -> inner_c1") in report
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["flattened"].startswith(
        "nested model inner")


def test_model_that_cannot_be_flattened_refused(tmp_path):
    inp = keras.Input((8, 8, 4))
    twice = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, padding="same")],
                             name="twice")
    path = tmp_path / "twice.keras"
    keras.Model(inp, keras.layers.Flatten()(twice(twice(inp)))).save(path)
    exit_ = run_main(f"--model={path}", f"--output={tmp_path / 'o'}")
    assert exit_.code == ("prune: nested model 'twice' is called 2 times; a nested model used "
                          "more than once cannot be flattened")
    assert not (tmp_path / "o").exists()



def test_subset_head_plan_records_classes_and_reapplies(tmp_path, model_file):
    out = tmp_path / "out"
    assert run_main(f"--model={model_file}", f"--output={out}", "--criterion=l1", "--level=0.3",
                    "--data=sample", "--subset=fish", "--head=subset") is None
    plan = json.loads((out / "plan.json").read_text())
    assert plan["head"]["class_names"] == ["aquarium_fish", "flatfish", "ray", "shark", "trout"]
    assert keras.models.load_model(out / "pruned.keras").output_shape == (None, 5)
    again = tmp_path / "again"
    assert run_main(f"--model={model_file}", f"--output={again}", f"--plan={out / 'plan.json'}",
                    "--data=sample", "--subset=fish") is None
    a = keras.models.load_model(out / "pruned.keras")
    b = keras.models.load_model(again / "pruned.keras")
    for x, y in zip(a.weights, b.weights):
        assert x.numpy().tobytes() == y.numpy().tobytes()


def test_subset_head_refusals(tmp_path, model_file):
    exit_ = run_main(f"--model={model_file}", f"--output={tmp_path / 'a'}", "--head=subset")
    assert "--head=subset needs --data" in str(exit_.code)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)).save(
        tmp_path / "nohead.keras")
    exit_ = run_main(f"--model={tmp_path / 'nohead.keras'}", f"--output={tmp_path / 'b'}",
                     "--data=sample", "--head=subset")
    assert str(exit_.code) == ("prune: class 30 (dolphin) is not a class of the model: "
                               "classifier 'conv' has 8 outputs")
    keras.Model(inputs, keras.layers.Flatten(name="flat")(x)).save(tmp_path / "flat.keras")
    exit_ = run_main(f"--model={tmp_path / 'flat.keras'}", f"--output={tmp_path / 'c'}",
                     "--data=sample", "--head=subset")
    assert "no final classifier over classes: its output comes from Flatten layer 'flat'" \
        in str(exit_.code)
