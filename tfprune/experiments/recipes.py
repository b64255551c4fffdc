"""Training recipes of the experiment protocols, as data: phases with the paper's `epoch:lr`
schedules, per network (`PAPER`, from the paper and the authors' released code), the v2
protocol's epoch budgets in the paper's ratio (`epoch_recipe`: fine-tune E1 + retrain E2
epochs of the subset, E1+E2 epochs of the full train split for agnostic; `paper` is its
E1=5, E2=25 instance) and the v1 quick protocol's fixed step budgets (`QUICK_STEPS`), with
`override` edits from flags.
"""
from __future__ import annotations

import dataclasses

from tfprune.training.schedules import schedule_points
from tfprune.errors import TfpruneError


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
    control: Phase    # control2/3/4, after pruning (control4: the agnostic model), on the subset
    weight_decay: float
    batch_size: int = 128
    momentum: float = 0.9
    bn_momentum: float | None = None  # BatchNorm momentum while training (None: the model's)


def resolve(spec: str, gamma: float = 0.1) -> list[tuple[int, float]]:
    """[(epoch, absolute lr)] of a paper schedule string (`tfprune.training.schedules`)."""
    return schedule_points(spec, gamma)


def scaled_drops(base_epochs: int, drops, epochs: int) -> list[int]:
    """Epochs of lr drops at `drops` of a `base_epochs` schedule, moved to the same fraction
    of `epochs` (rounded, kept after epoch 0 and distinct: a 25-epoch schedule dropping at 10
    and 20 drops at 2 and 3 over 4 epochs)."""
    out = []
    for d in drops:
        e = max(1, round(d * epochs / base_epochs))
        if e < epochs and e not in out:
            out.append(e)
    return out


def _stepped(lr0: float, drops) -> str:
    return ",".join([f"0:{lr0:g}"] + [f"{e}:-1" for e in drops])


def epoch_recipe(finetune_lr: float, retrain_lr: float, agnostic_lr: float,
                 weight_decay: float, gamma: float = 0.1, finetune_epochs: int = 5,
                 retrain_epochs: int = 25, bn_momentum: float | None = 0.9) -> Recipe:
    """The paper's recipe on an epoch budget: fine-tune E1 = `finetune_epochs` at
    `finetune_lr`, prune, retrain E2 = `retrain_epochs` at `retrain_lr` (x`gamma` at 10/25
    and 20/25 of E2); agnostic E1+E2 epochs of the full train split at `agnostic_lr` (x0.1 at
    1/3 and 2/3); controls 2/3/4 the same phase as the aware retrain (the same post-prune
    steps). Validation/test evaluated from the first drop, and at least the last two epochs
    (the convergence check compares them). `bn_momentum` 0.9: Keras's 0.99 leaves BatchNorm
    statistics stale in short runs."""
    e1, e2 = finetune_epochs, retrain_epochs
    total = e1 + e2
    if e1 < 1 or e2 < 2:
        raise TfpruneError(f"epoch budget E1={e1}, E2={e2}: needs E1 >= 1 and E2 >= 2 (the "
                         "convergence check compares the last two retraining epochs)")
    r_drops, a_drops = scaled_drops(25, (10, 20), e2), scaled_drops(30, (10, 20), total)
    retrain = Phase(_stepped(retrain_lr, r_drops), e2, gamma,
                    eval_from=min(r_drops[0] if r_drops else 0, e2 - 2))
    return Recipe(
        finetune=Phase(f"0:{finetune_lr:g}", e1, gamma),
        retrain=retrain,
        agnostic=Phase(_stepped(agnostic_lr, a_drops), total, 0.1,
                       eval_from=min(a_drops[0] if a_drops else 0, total - 2)),
        control=retrain, weight_decay=weight_decay, bn_momentum=bn_momentum)


# (fine-tune lr, retrain lr, agnostic lr, weight decay, gamma) per network: the paper's
# whole-run schedules `0:FT,5:RT,15:-1,25:-1` and agnostic `0:AG,10:-1,20:-1`.
PAPER_RATES = {"resnet20": (0.001, 0.01, 0.01, 1e-4, 0.1),
               "mobilenetv2": (0.001, 0.01, 0.01, 5e-4, 0.1),
               "alexnet": (0.0001, 0.001, 0.001, 5e-4, 0.1),
               "squeezenet": (0.0008, 0.02, 0.02, 2e-4, 0.2)}
V2_EPOCHS = (1, 4)  # (E1, E2) of the v2 sweep on this machine: experiments/README.md


def epoch_recipes(finetune_epochs: int, retrain_epochs: int) -> dict:
    return {net: epoch_recipe(*rates, finetune_epochs=finetune_epochs,
                              retrain_epochs=retrain_epochs)
            for net, rates in PAPER_RATES.items()}


PAPER = epoch_recipes(5, 25)
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


def _v1_paper(net: str) -> Recipe:
    """The v1 paper recipe the quick protocol was derived from (controls = agnostic phase,
    Keras BatchNorm momentum), kept so `quick` reproduces results/quick."""
    r = PAPER[net]
    return dataclasses.replace(r, control=r.agnostic, bn_momentum=None)


PROTOCOLS = {"paper": PAPER, "v2": epoch_recipes(*V2_EPOCHS),
             "quick": {k: quick_recipe(_v1_paper(k)) for k in PAPER}}


def override(recipe: Recipe, items) -> Recipe:
    """Apply `phase.field=value` / `field=value` edits (e.g. `retrain.epochs=2`)."""
    for item in items:
        key, _, value = item.partition("=")
        head, _, field = key.strip().rpartition(".")
        target = getattr(recipe, head, None) if head else recipe
        if not isinstance(target, (Phase, Recipe)) or not field or field not in {
                f.name for f in dataclasses.fields(target)}:
            raise TfpruneError(f"recipe override {item!r}: no field {key!r}")
        current = getattr(target, field)
        kind = type(current) if current is not None else (
            float if field == "bn_momentum" else int)
        try:
            value = kind(value)
        except ValueError:
            raise TfpruneError(f"recipe override {item!r}: {value!r} is not {kind.__name__}") from None
        new = dataclasses.replace(target, **{field: value})
        recipe = dataclasses.replace(recipe, **{head: new}) if head else new
    return recipe


def phase_of(recipe: Recipe, method: str) -> Phase | None:
    """The phase a method retrains with (None: unpruned, no training)."""
    return {"aware": recipe.retrain, "adapt": recipe.retrain, "agnostic": recipe.agnostic,
            "control2": recipe.control, "control3": recipe.control,
            "control4": recipe.control}.get(method)
