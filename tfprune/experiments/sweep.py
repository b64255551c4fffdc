"""A resumable grid of protocol runs (subsets x networks x levels x seeds x methods), its
partition into shards for several machines, and its cost estimate; the aggregation (CSV,
Markdown tables, the paper-style mean/max deltas with bootstrap CIs, plots) is
tfprune.experiments.sweep_report.

Runs live in `SWEEP/runs/<run id>/` (`tfprune.experiments.protocol.run`); a run whose
`result.json` exists is skipped, so a killed sweep started again resumes (an interrupted run
from its last checkpointed epoch). The aware fine-tune phase is cached in `SWEEP/finetune/`.
Order: for each seed and network, `unpruned`, then level by level in the order given (put the
most informative level first), the level's `agnostic` run (shared by every subset), every
subset's `control4` runs (they start from the agnostic run's model, which a checkout does not
hold, so they run while it is on disk), then every subset's other methods in the order given.

Methods are named `aware:CRITERION` (e.g. `aware:finetune_l1`), `adapt:CRITERION` (the
subset-head + distillation recipe), `agnostic`, `control2`, `control3`, `control4` (and
`unpruned`, always run); `@NORMALIZER` names a normalizer variant (`aware:finetune_l1@mean`).
Control 1 is the agnostic run's restricted-logits accuracy, reported as method `control1`;
`control4` starts from the agnostic run of its level and seed.

Shards (`shard`): the grid's units, one per (network, seed, level) (the level's agnostic run
with every run of that level, so Control 4 finds its agnostic run) plus one per unpruned run,
are dealt to `n` shards by estimated cost (largest first, to the least loaded shard), so each
run is in exactly one shard. Each shard caches its own aware fine-tunes, so a fine-tune is
repeated by every shard that needs it (seeded: the same model up to float rounding).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from tfprune import fileio
from tfprune.errors import TfpruneError
from tfprune.experiments import protocol, sweep_report
from tfprune.experiments import recipes
from tfprune.training import fit as train


DISTILL_COST = 1.33  # adapt's training step also runs the teacher forward (~1/3 of a step)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    method: str
    network: str
    level: float = 0.0
    seed: int = 0
    subset: str | None = None       # None: every subset of the sweep (agnostic, unpruned)
    criterion: str | None = None
    normalizer: str | None = None   # None: the protocol's default for the criterion

    @property
    def label(self) -> str:
        name = f"{self.method}:{self.criterion}" if self.criterion else self.method
        return f"{name}@{self.normalizer}" if self.normalizer else name

    @property
    def id(self) -> str:
        parts = [self.label.replace(":", "-").replace("@", "-"), self.network]
        if self.subset:
            parts.append(protocol.safe_name(self.subset))
        if self.method != "unpruned":
            parts.append(f"l{round(self.level * 100):02d}")
        return "_".join(parts + [f"s{self.seed}"])


def parse_method(name: str) -> tuple[str, str | None, str | None]:
    """(method, criterion, normalizer) of `aware:CRITERION[@NORMALIZER]` and the like."""
    head, _, normalizer = name.partition("@")
    method, _, criterion = head.partition(":")
    if method not in protocol.METHODS or method == "unpruned":
        raise TfpruneError(f"unknown method {name!r}: use aware:CRITERION, adapt:CRITERION, "
                         "agnostic, control2, control3 or control4")
    if (method in protocol.CRITERION_METHODS) != bool(criterion):
        raise TfpruneError(f"method {name!r}: aware and adapt need a criterion "
                         "(aware:finetune_l1), the others take none")
    if normalizer and (normalizer not in protocol.NORMALIZERS or method == "control3"):
        raise TfpruneError(f"method {name!r}: @NORMALIZER is one of "
                         f"{', '.join(protocol.NORMALIZERS)}, for a method that ranks filters "
                         "(control4@N: the agnostic@N run's model)")
    return method, criterion or None, normalizer or None


def grid(subsets, networks, levels, seeds, methods, subset_seeds=None) -> list[RunSpec]:
    """The sweep's runs in execution order (see module doc). `subset_seeds` ({subset:
    [seeds]}) runs those subsets with fewer seeds, after every run of the others (the
    shared agnostic and unpruned runs still evaluate every subset)."""
    parsed = [parse_method(m) for m in methods]
    for m, _, n in parsed:
        if m == "control4" and ("agnostic", None, n) not in parsed:
            agnostic = f"agnostic@{n}" if n else "agnostic"
            raise TfpruneError(f"control4{'@' + n if n else ''} fine-tunes the {agnostic} run's "
                               f"model: add {agnostic} to the methods")
    specs = []
    for seed in seeds:
        for net in networks:
            specs.append(RunSpec("unpruned", net, 0.0, seed))
            for level in levels:
                specs += [RunSpec(m, net, level, seed, None, c, n)
                          for m, c, n in parsed if m == "agnostic"]
                for first in (True, False):
                    specs += [RunSpec(m, net, level, seed, subset, c, n)
                              for subset in subsets for m, c, n in parsed
                              if m != "agnostic" and (m == "control4") == first]
    if not subset_seeds:
        return specs
    unknown = set(subset_seeds) - set(subsets)
    if unknown:
        raise TfpruneError(f"subset seeds for {', '.join(sorted(unknown))}: not in the subsets")
    specs = [s for s in specs if s.subset is None or s.seed in subset_seeds.get(s.subset, seeds)]
    return sorted(specs, key=lambda s: s.subset in subset_seeds)  # stable: grid order kept


def agnostic_of(spec: RunSpec) -> RunSpec:
    """The agnostic run a control4 run starts from (control4@N: agnostic@N's)."""
    return RunSpec("agnostic", spec.network, spec.level, spec.seed, normalizer=spec.normalizer)


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` -> (i, n), 0 <= i < n."""
    i, sep, n = str(text).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise TfpruneError(f"--shard={text!r}: expected i/n with 0 <= i < n (e.g. 0/4)")
    return i, n


def units(specs) -> list[list[RunSpec]]:
    """The grid split into units that run on one machine: per (network, seed, level) every
    run of that level (agnostic first), and each unpruned run alone; in grid order."""
    out: dict = {}
    for spec in specs:
        key = (spec.network, spec.seed, None if spec.method == "unpruned" else spec.level)
        out.setdefault(key, []).append(spec)
    return list(out.values())


def shard(specs, index: int, count: int, cost=lambda spec: 1.0) -> list[RunSpec]:
    """Shard `index` of `count`: whole units (see `units`), dealt largest `cost` first to
    the least loaded shard (ties: the lower shard), then kept in grid order. Deterministic,
    so `count` machines given the same grid cover it exactly once."""
    groups = units(specs)
    load, owner = [0.0] * count, {}
    for g in sorted(range(len(groups)), key=lambda k: (-sum(map(cost, groups[k])), k)):
        target = min(range(count), key=lambda j: (load[j], j))
        owner[g] = target
        load[target] += sum(map(cost, groups[g]))
    return [spec for g, group in enumerate(groups) if owner[g] == index for spec in group]


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


def speed(rates: dict | None, level: float) -> tuple[float, float]:
    """(train, inference) speed-up of a model pruned at `level` over the unpruned one, by
    linear interpolation in `rates` ({level: (train img/s, infer img/s)}, with level 0)."""
    if not rates:
        return 1.0, 1.0
    levels = sorted(rates)
    base = rates[levels[0]]
    return tuple(float(np.interp(level, levels, [rates[lv][k] for lv in levels]) / base[k])
                 for k in (0, 1))


def estimate(specs, setups: dict, subsets, train_rate: float = 300.0,
             infer_rate: float = 1000.0, run_overhead: float = 20.0,
             rates: dict | None = None) -> dict:
    """Images to train and to evaluate, and hours at `train_rate` / `infer_rate` img/s
    (the unpruned model's) plus `run_overhead` seconds per run (loading, tracing,
    checkpoints: ~15-20 s measured for ResNet-20); `rates` ({level: (train, infer) img/s},
    benchmarks/results/experiment_rates.json) scales them for pruned models (without it, an
    upper estimate). Aware and adapt runs add their subset's fine-tune once."""
    train_images = eval_images = seconds = 0.0
    tuned = set()
    by_method: dict = {}
    for spec in specs:
        t, e = run_images(spec, setups[spec.network], subsets)
        key = (spec.network, spec.subset, spec.seed)
        ft = 0
        if spec.method in protocol.CRITERION_METHODS and key not in tuned:
            tuned.add(key)
            ph, setup = setups[spec.network].recipe.finetune, setups[spec.network]
            ft = ph.epochs * (ph.steps_per_epoch * setup.recipe.batch_size
                              if ph.steps_per_epoch
                              else len(setup.splits(spec.subset).train))
        ts, es = speed(rates, spec.level)
        t = t * (DISTILL_COST if spec.method == "adapt" else 1)
        cost = (t / ts + ft) / train_rate + e / es / infer_rate + run_overhead
        train_images, eval_images, seconds = train_images + t + ft, eval_images + e, seconds + cost
        label = spec.label if spec.method != "unpruned" else "unpruned"
        by_method[label] = by_method.get(label, 0.0) + cost / 3600
    return {"runs": len(specs), "train_images": int(train_images),
            "eval_images": int(eval_images), "hours": round(seconds / 3600, 2),
            "hours_by_method": {k: round(v, 2) for k, v in by_method.items()},
            "train_rate": train_rate, "infer_rate": infer_rate,
            "run_overhead_s": run_overhead, "pruned_speedups": bool(rates)}


def run_spec(spec: RunSpec, setup: protocol.Setup, sweep_dir, subsets) -> dict:
    """Run (or read back) one spec in `sweep_dir/runs/<id>`."""
    runs = Path(sweep_dir) / "runs"
    setup = dataclasses.replace(setup, seed=spec.seed)
    return protocol.run(setup, runs / spec.id, spec.method, spec.subset or list(subsets),
                        spec.level, spec.criterion, root=sweep_dir, normalizer=spec.normalizer,
                        start_from=runs / agnostic_of(spec).id
                        if spec.method == "control4" else None)


def restore_source(spec: RunSpec, setups: dict, sweep_dir, subsets, log=print) -> None:
    """Control 4 fine-tunes its agnostic run's final model. A checkout holds results, not
    models (.gitignore), so a finished agnostic run without its model is run again: its old
    directory moves to `sweep_dir/rerun/<id>` first (`<id>.2`, ... when that exists); the
    report takes the subsets the new run lacks from there."""

    source = agnostic_of(spec)
    path = Path(sweep_dir) / "runs" / source.id
    if not (path / protocol.RESULT).exists() or (path / "train" / train.CHECKPOINT).exists():
        return
    aside, n = Path(sweep_dir) / "rerun" / source.id, 1
    while aside.exists():  # an earlier rerun's result stays too
        n += 1
        aside = aside.with_name(f"{source.id}.{n}")
    aside.parent.mkdir(parents=True, exist_ok=True)
    path.rename(aside)
    log(f"{source.id} has its result but not its model, which {spec.id} starts from: "
        f"running it again (the earlier result is in {aside})")
    run_spec(source, setups[source.network], sweep_dir, subsets)


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
            needed = {s.subset for s in specs if s.subset and (s.network, s.level, s.seed) == (
                spec.network, spec.level, spec.seed)}
            missing = (needed - set(json.loads(path.read_text())["subsets"])
                       - set(sweep_report.earlier_subsets(path)))
            if missing:
                log(f"note: {spec.id} was evaluated without {', '.join(sorted(missing))}; "
                    "it is not re-run (use a new --sweep_dir to evaluate them)")
    costs = {s.id: sum(run_images(s, setups[s.network], subsets) * np.array([1.0, 0.3]))
             for s in todo}
    remaining, spent, done = sum(costs.values()), 0.0, 0
    started = time.time()
    for spec in todo[:max_runs]:
        t0 = time.time()
        if spec.method == "control4":
            restore_source(spec, setups, sweep_dir, subsets, log)
        result = run_spec(spec, setups[spec.network], sweep_dir, subsets)
        keras.backend.clear_session()
        done += 1
        spent, remaining = spent + costs[spec.id], remaining - costs[spec.id]
        rate = (time.time() - started) / spent
        accs = ", ".join(f"{k} {v['test_accuracy']:.3f}" for k, v in result["subsets"].items())
        log(f"[{done}/{len(todo)}] {spec.id}: {time.time() - t0:.0f} s; test {accs}; "
            f"~{remaining * rate / 60:.0f} min left")
        fileio.atomic_write_text(sweep_dir / "progress.json", json.dumps(
            {"runs": len(specs), "finished": len(specs) - len(todo) + done,
             "last": spec.id, "minutes_left_estimate": round(remaining * rate / 60, 1)}))
    return done
