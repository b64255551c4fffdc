"""Training recipes of the experiment protocols, as data: phases with the paper's `epoch:lr`
schedules, per network (`PAPER`, from the paper and the authors' released code) and the
quick protocol's fixed step budgets (`QUICK_STEPS`), with `override` edits from flags.
"""
from __future__ import annotations

import dataclasses

from tfprune.training.schedules import schedule_points


@dataclasses.dataclass(frozen=True)
class Phase:
    """A training phase: `lr` in the paper's `epoch:lr,...` format (-1 = times `gamma`)."""
    lr: str
    epochs: int
    gamma: float = 0.1
    steps_per_epoch: int | None = None  # None: one pass over the training images
    eval_from: int = 0                  # first epoch evaluated on val/test (earlier: NaN;
                                        # capped so that the last epoch is evaluated)


@dataclasses.dataclass(frozen=True)
class Recipe:
    finetune: Phase   # aware, before scoring, on the subset
    retrain: Phase    # aware, after pruning, on the subset
    agnostic: Phase   # agnostic, after pruning, on the full train split
    control: Phase    # control2/3, after pruning, on the subset
    weight_decay: float
    batch_size: int = 128
    momentum: float = 0.9


def resolve(spec: str, gamma: float = 0.1) -> list[tuple[int, float]]:
    """[(epoch, absolute lr)] of a paper schedule string (`tfprune.training.schedules`)."""
    return schedule_points(spec, gamma)


def window(spec: str, start: int, gamma: float = 0.1) -> str:
    """The part of a schedule from epoch `start` on, re-based to epoch 0, absolute lrs."""
    points = resolve(spec, gamma)
    active = [lr for e, lr in points if e <= start][-1]
    rest = [(e - start, lr) for e, lr in points if e > start]
    return ",".join(f"{e}:{lr:g}" for e, lr in [(0, active)] + rest)


def paper_recipe(schedule: str, weight_decay: float, agnostic_lr: float,
                 gamma: float = 0.1, finetune_epochs: int = 5, total_epochs: int = 30) -> Recipe:
    """The paper's recipe from its whole-run schedule (fine-tune, prune at `finetune_epochs`,
    retrain to `total_epochs`); the agnostic run and controls 2/3 retrain `total_epochs` at
    `agnostic_lr`, x0.1 at epochs 10 and 20 (so the controls see the subset as long as aware)."""
    agnostic = Phase(f"0:{agnostic_lr:g},10:-1,20:-1", total_epochs, 0.1)
    return Recipe(
        finetune=Phase(",".join(f"{e}:{lr:g}" for e, lr in resolve(schedule, gamma)
                                if e < finetune_epochs), finetune_epochs, gamma),
        retrain=Phase(window(schedule, finetune_epochs, gamma), total_epochs - finetune_epochs,
                      gamma),
        agnostic=agnostic, control=agnostic, weight_decay=weight_decay)


PAPER = {
    "resnet20": paper_recipe("0:0.001,5:0.01,15:-1,25:-1", 1e-4, 0.01),
    "mobilenetv2": paper_recipe("0:0.001,5:0.01,15:-1,25:-1", 5e-4, 0.01),
    "alexnet": paper_recipe("0:0.0001,5:0.001,15:-1,25:-1", 5e-4, 0.001),
    "squeezenet": paper_recipe("0:0.0008,5:0.02,15:-1,25:-1", 2e-4, 0.02, gamma=0.2),
}
# Quick protocol: the paper's learning rates on a fixed step budget per run (batch 128), so a
# 10-class subset costs what a 65-class one does: (epochs, steps per epoch, first evaluated
# epoch). Fine-tune 40 steps (once per subset), aware retrain 4x40 = 160, controls 4x50 = 200
# (= aware's fine-tune + retrain), agnostic 5x200 = 1000 (3.2 passes over the 40000-image
# full train split); lr x gamma at epochs 2 and 3 (agnostic: 2 and 4); val/test evaluated
# from epoch 2 (after the first drop) to halve evaluation cost. Cost: experiments/README.md.
QUICK_STEPS = {"finetune": (1, 40, 0), "retrain": (4, 40, 2), "control": (4, 50, 2),
               "agnostic": (5, 200, 2)}


def quick_recipe(paper: Recipe) -> Recipe:
    def phase(name, lr0, gamma):
        epochs, steps, eval_from = QUICK_STEPS[name]
        drops = {4: "2:-1,3:-1", 5: "2:-1,4:-1"}.get(epochs, "")
        return Phase(f"0:{lr0:g}" + (f",{drops}" if drops and name != "finetune" else ""),
                     epochs, gamma, steps, eval_from)
    ft0, rt0 = resolve(paper.finetune.lr)[0][1], resolve(paper.retrain.lr)[0][1]
    ag0 = resolve(paper.agnostic.lr)[0][1]
    return Recipe(phase("finetune", ft0, paper.finetune.gamma),
                  phase("retrain", rt0, paper.retrain.gamma),
                  phase("agnostic", ag0, 0.1), phase("control", ag0, 0.1),
                  paper.weight_decay, paper.batch_size, paper.momentum)


PROTOCOLS = {"paper": PAPER, "quick": {k: quick_recipe(v) for k, v in PAPER.items()}}


def override(recipe: Recipe, items) -> Recipe:
    """Apply `phase.field=value` / `field=value` edits (e.g. `retrain.epochs=2`)."""
    for item in items:
        key, _, value = item.partition("=")
        head, _, field = key.strip().rpartition(".")
        target = getattr(recipe, head, None) if head else recipe
        if not isinstance(target, (Phase, Recipe)) or not field or field not in {
                f.name for f in dataclasses.fields(target)}:
            raise ValueError(f"recipe override {item!r}: no field {key!r}")
        kind = type(getattr(target, field)) if getattr(target, field) is not None else int
        try:
            value = kind(value)
        except ValueError:
            raise ValueError(f"recipe override {item!r}: {value!r} is not {kind.__name__}") from None
        new = dataclasses.replace(target, **{field: value})
        recipe = dataclasses.replace(recipe, **{head: new}) if head else new
    return recipe


def phase_of(recipe: Recipe, method: str) -> Phase | None:
    """The phase a method retrains with (None: unpruned, no training)."""
    return {"aware": recipe.retrain, "agnostic": recipe.agnostic, "control2": recipe.control,
            "control3": recipe.control}.get(method)
