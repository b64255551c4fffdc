"""A resumable grid of protocol runs (subsets x networks x levels x seeds x methods); its
aggregation (CSV, Markdown tables, the paper-style mean/max deltas, plots) is
tfprune.experiments.sweep_report.

Runs live in `SWEEP/runs/<run id>/` (`tfprune.experiments.protocol.run`); a run whose `result.json`
exists is skipped, so a killed sweep started again resumes (an interrupted run from its last
checkpointed epoch). The aware fine-tune phase is cached in `SWEEP/finetune/`. Order: for
each seed and network, `unpruned`, then level by level in the order given (put the most
informative level first), the level's `agnostic` run (shared by every subset), then every
subset's methods in the order given.

Methods are named `aware:CRITERION` (e.g. `aware:finetune_l1`), `agnostic`, `control2`,
`control3` (and `unpruned`, always run). Control 1 is the agnostic run's restricted-logits
accuracy, reported as method `control1`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from tfprune.experiments import protocol
from tfprune.experiments import recipes
from tfprune.training import fit as train


@dataclasses.dataclass(frozen=True)
class RunSpec:
    method: str
    network: str
    level: float = 0.0
    seed: int = 0
    subset: str | None = None       # None: every subset of the sweep (agnostic, unpruned)
    criterion: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method}:{self.criterion}" if self.criterion else self.method

    @property
    def id(self) -> str:
        parts = [self.label.replace(":", "-"), self.network]
        if self.subset:
            parts.append(protocol.safe_name(self.subset))
        if self.method != "unpruned":
            parts.append(f"l{round(self.level * 100):02d}")
        return "_".join(parts + [f"s{self.seed}"])


def parse_method(name: str) -> tuple[str, str | None]:
    method, _, criterion = name.partition(":")
    if method not in protocol.METHODS or method == "unpruned":
        raise ValueError(f"unknown method {name!r}: use aware:CRITERION, agnostic, control2 "
                         "or control3")
    if (method == "aware") != bool(criterion):
        raise ValueError(f"method {name!r}: aware needs a criterion (aware:finetune_l1), "
                         "the others take none")
    return method, criterion or None


def grid(subsets, networks, levels, seeds, methods) -> list[RunSpec]:
    """The sweep's runs in execution order (see module doc)."""
    parsed = [parse_method(m) for m in methods]
    specs = []
    for seed in seeds:
        for net in networks:
            specs.append(RunSpec("unpruned", net, 0.0, seed))
            for level in levels:
                if ("agnostic", None) in parsed:
                    specs.append(RunSpec("agnostic", net, level, seed))
                specs += [RunSpec(m, net, level, seed, subset, c)
                          for subset in subsets for m, c in parsed if m != "agnostic"]
    return specs


def run_images(spec: RunSpec, setup: protocol.Setup, subsets) -> tuple[int, int]:
    """(training images, evaluated images) of a run, for its share of the time estimate."""
    r = setup.recipe
    names = [spec.subset] if spec.subset else list(subsets)
    per_eval = sum(len(s.val) + len(s.test) for s in map(setup.splits, names))
    phase = recipes.phase_of(r, spec.method)
    if phase is None:
        return 0, per_eval
    evals = phase.epochs - phase.eval_from + 1  # + the pruned model before retraining
    if phase.steps_per_epoch:
        return phase.epochs * phase.steps_per_epoch * r.batch_size, evals * per_eval
    return phase.epochs * len(setup.splits(spec.subset or "all").train), evals * per_eval


def estimate(specs, setups: dict, subsets, train_rate: float = 300.0,
             infer_rate: float = 1000.0, run_overhead: float = 20.0) -> dict:
    """Images to train and to evaluate, and hours at `train_rate` / `infer_rate` img/s plus
    `run_overhead` seconds per run (loading, tracing, checkpoints: ~15-20 s measured for
    ResNet-20). Unpruned-model rates: pruned models run faster, so an upper estimate."""
    train_images = eval_images = 0
    tuned = set()
    for spec in specs:
        t, e = run_images(spec, setups[spec.network], subsets)
        train_images, eval_images = train_images + t, eval_images + e
        key = (spec.network, spec.subset, spec.seed)
        if spec.method == "aware" and key not in tuned:
            tuned.add(key)
            ph, setup = setups[spec.network].recipe.finetune, setups[spec.network]
            train_images += ph.epochs * (ph.steps_per_epoch * setup.recipe.batch_size
                                         if ph.steps_per_epoch
                                         else len(setup.splits(spec.subset).train))
    hours = (train_images / train_rate + eval_images / infer_rate
             + len(specs) * run_overhead) / 3600
    return {"runs": len(specs), "train_images": train_images, "eval_images": eval_images,
            "hours": round(hours, 2), "train_rate": train_rate, "infer_rate": infer_rate,
            "run_overhead_s": run_overhead}


def run_spec(spec: RunSpec, setup: protocol.Setup, sweep_dir, subsets) -> dict:
    """Run (or read back) one spec in `sweep_dir/runs/<id>`."""
    return protocol.run(setup, Path(sweep_dir) / "runs" / spec.id, spec.method,
                        spec.subset or list(subsets), spec.level, spec.criterion,
                        root=sweep_dir)


def run_sweep(specs, setups: dict, sweep_dir, subsets, log=print, max_runs: int | None = None):
    """Run every spec whose result is missing (`setups`: {network: Setup}); returns the
    number of runs executed. `max_runs` stops after that many (time-boxed sessions)."""
    import keras
    sweep_dir = Path(sweep_dir)
    todo = [s for s in specs if not (sweep_dir / "runs" / s.id / protocol.RESULT).exists()]
    log(f"sweep {sweep_dir}: {len(specs)} runs, {len(specs) - len(todo)} finished, "
        f"{len(todo)} to do")
    for spec in specs:  # shared runs evaluate the subsets of the sweep that ran them
        path = sweep_dir / "runs" / spec.id / protocol.RESULT
        if spec.subset is None and path.exists():
            missing = set(subsets) - set(json.loads(path.read_text())["subsets"])
            if missing:
                log(f"note: {spec.id} was evaluated without {', '.join(sorted(missing))}; "
                    "it is not re-run (use a new --sweep_dir to evaluate them)")
    costs = {s.id: sum(run_images(s, setups[s.network], subsets) * np.array([1.0, 0.3]))
             for s in todo}
    remaining, spent, done = sum(costs.values()), 0.0, 0
    started = time.time()
    for spec in todo[:max_runs]:
        t0 = time.time()
        result = run_spec(spec, setups[spec.network], sweep_dir, subsets)
        keras.backend.clear_session()
        done += 1
        spent, remaining = spent + costs[spec.id], remaining - costs[spec.id]
        rate = (time.time() - started) / spent
        accs = ", ".join(f"{k} {v['test_accuracy']:.3f}" for k, v in result["subsets"].items())
        log(f"[{done}/{len(todo)}] {spec.id}: {time.time() - t0:.0f} s; test {accs}; "
            f"~{remaining * rate / 60:.0f} min left")
        train.atomic_write_text(sweep_dir / "progress.json", json.dumps(
            {"runs": len(specs), "finished": len(specs) - len(todo) + done,
             "last": spec.id, "minutes_left_estimate": round(remaining * rate / 60, 1)}))
    return done
