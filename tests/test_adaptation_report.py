"""benchmarks/adaptation_report.py: the adaptation tables say what their rows measured."""
from benchmarks import adaptation_report


def _levels_row(**changes):
    row = {"part": "levels", "id": "x", "base": "61.07%", "data": "npz:/d/cifar100.npz",
           "subset": "indoor", "target": "params", "level": 0.5, "criterion": "act_l2",
           "reconstruct_images": 1000, "params": 134607, "epochs": 15, "lr": 0.1,
           "mix": "cutmix", "round_to": "auto", "distill_alpha": 0.9, "distill_features": 0.0,
           "pruned_val": 0.507, "val": 0.742, "test": 0.747, "bar_val": 0.719,
           "bar_test": 0.725, "finetune_seconds": 1832.4}
    return {**row, **changes}


def _cells(line: str) -> list:
    return [c.strip() for c in line.strip("|").split("|")]


def test_levels_rows_give_their_gap_to_the_bar_and_only_the_settings_that_differ():
    rows = [_levels_row(), _levels_row(id="y", seed=1, tile=16, weight_decay=1e-4,
                                       distill_features=20.0, test=0.70, teacher_epochs=5,
                                       teacher_val=0.703, teacher_test=0.702)]
    lines = adaptation_report.render(rows, phone_base={}).splitlines()
    header = lines.index(adaptation_report.LEVELS_HEADER[4])
    table = [_cells(line) for line in lines[header + 2:header + 4]]
    names = _cells(adaptation_report.LEVELS_HEADER[4])
    by_features = {row[names.index("features")]: dict(zip(names, row)) for row in table}
    plain, other = by_features["0"], by_features["20"]
    assert plain["vs bar (pp)"] == "+2.2" and other["vs bar (pp)"] == "-2.5"
    settings = [n for n in names if n.startswith("lr, mix")][0]
    assert plain[settings] == "0.1, cutmix, auto"
    assert other[settings] == ("0.1, cutmix, auto (tile 16), wd 0.0001, seed 1, "
                               "teacher tuned 5 epochs (70.3% / 70.2%)")
    assert plain["params"] == "134,607" and plain["fine-tune s"] == "1832"


def test_phone_rows_of_one_recipe_share_a_line_with_their_mean_gap():
    def row(seed, val, test):
        return {"part": "phone", "host": "h", "data": "npz:/d/cifar100.npz",
                "subset": "aquatic", "train_per_class": 50, "recipe": "default",
                "finetune": {"finetune_lr": 0.1, "finetune_epochs": 80}, "settings": {},
                "seed": seed, "val": {"accuracy": val, "agreement": 0.8},
                "test": {"accuracy": test}, "bar_val": 0.68, "bar_test": 0.65,
                "params": 1000, "finetune_seconds": 100.0}
    text = adaptation_report.render([row(1, 0.70, 0.67), row(0, 0.67, 0.66)],
                                    phone_base={"finetune_lr": 0.01, "finetune_epochs": 80})
    line = [l for l in text.splitlines() if l.startswith("| h |")]
    assert len(line) == 1
    cells = _cells(line[0])
    assert cells[5] == "defaults: finetune_lr 0.1"  # epochs equal the base's: not named
    assert cells[8:13] == ["0, 1", "67.0% / 70.0%", "66.0% / 67.0%", "+0.5", "+1.5"]
