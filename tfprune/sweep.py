"""A resumable grid of protocol runs (subsets x networks x levels x seeds x methods) and its
aggregation into a CSV, Markdown tables, the paper-style mean/max deltas and PNG plots.

Runs live in `SWEEP/runs/<run id>/` (`tfprune.protocol.run`); a run whose `result.json`
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

import csv
import dataclasses
import io
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from tfprune import fileio, protocol, recipes, train

BASELINES = ("agnostic", "control1", "control2", "control3")
ORDER = ("unpruned", "agnostic", "control1", "control2", "control3")


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


def collect(sweep_dir) -> list[dict]:
    """One row per (run, evaluated subset); the agnostic run adds a `control1` row."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("runs/*/" + protocol.RESULT)):
        res = json.loads(path.read_text())
        label = f"aware:{res['criterion']}" if res["method"] == "aware" else res["method"]
        achieved = res.get("achieved", {}).get("params_level", 0.0)
        for subset, r in res["subsets"].items():
            base = {"network": res["network"], "subset": subset, "level": res["level"],
                    "seed": res["seed"], "achieved_level": achieved,
                    "params": res.get("params_after", ""), "run": path.parent.name}
            pruned = r.get("pruned", {})
            entries = [(label, r, pruned)]
            if res["method"] == "agnostic":
                entries.append(("control1", r["restricted"], pruned.get("restricted", {})))
            if res["method"] == "unpruned" and "restricted" in r:
                entries.append(("unpruned_restricted", r["restricted"], {}))
            for name, e, p in entries:
                rows.append({**base, "method": name, "test_accuracy": e["test_accuracy"],
                             "val_accuracy": e["val_accuracy"], "epoch": e.get("epoch", ""),
                             "pruned_test_accuracy": p.get("test_accuracy", "")})
    return rows


def write_csv(rows, path) -> None:
    fields = ["network", "subset", "level", "seed", "method", "test_accuracy", "val_accuracy",
              "epoch", "pruned_test_accuracy", "achieved_level", "params", "run"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields)
    writer.writeheader()
    writer.writerows(rows)
    train.atomic_write_text(Path(path), buf.getvalue())


def means(rows) -> dict:
    """{(network, subset): {method: {level: mean test accuracy over seeds}}}; unpruned at
    level 0."""
    acc = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        acc[(r["network"], r["subset"])][r["method"]][float(r["level"])].append(
            float(r["test_accuracy"]))
    return {k: {m: {lv: float(np.mean(v)) for lv, v in sorted(by.items())}
                for m, by in ms.items()} for k, ms in acc.items()}


def aware_methods(table: dict) -> list[str]:
    return sorted({m for ms in table.values() for m in ms if m.startswith("aware:")})


def deltas(table: dict, method: str, baseline: str) -> dict:
    """{(network, subset): {level: method - baseline}} where both exist."""
    out = {}
    for key, ms in table.items():
        a, b = ms.get(method, {}), ms.get(baseline, {})
        common = {lv: a[lv] - b[lv] for lv in a if lv in b}
        if common:
            out[key] = common
    return out


def headline(table: dict, method: str, baseline: str = "agnostic") -> dict | None:
    """The paper's numbers: mean over levels per (network, subset), then the mean of those;
    and the maximum delta anywhere (with where it is)."""
    d = deltas(table, method, baseline)
    if not d:
        return None
    per = {k: float(np.mean(list(v.values()))) for k, v in d.items()}
    (net, subset), level, best = max(((k, lv, v) for k, by in d.items()
                                      for lv, v in by.items()), key=lambda t: t[2])
    return {"mean": float(np.mean(list(per.values()))), "max": best,
            "max_at": {"network": net, "subset": subset, "level": level},
            "per_subset_mean": {f"{n}/{s}": v for (n, s), v in per.items()},
            "cells": sum(len(v) for v in d.values())}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pp(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def subset_table(table: dict, key) -> str:
    ms = table[key]
    aware = [m for m in aware_methods(table) if m in ms]
    cols = [m for m in ORDER[1:] if m in ms] + aware
    unpruned = ms.get("unpruned", {}).get(0.0)
    restricted = ms.get("unpruned_restricted", {}).get(0.0)
    levels = sorted({lv for m in cols for lv in ms[m]})
    head = ["level %"] + cols + [f"Δ {m[6:]} vs agnostic" for m in aware if "agnostic" in ms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lv in levels:
        cells = [f"{100 * lv:.0f}"] + [_pct(ms[m].get(lv)) for m in cols]
        cells += [_pp(ms[m][lv] - ms["agnostic"][lv]) if lv in ms[m] and lv in ms["agnostic"]
                  else "-" for m in aware if "agnostic" in ms]
        lines.append("| " + " | ".join(cells) + " |")
    note = f" (logits restricted to the subset: {_pct(restricted)}%)" if restricted else ""
    return f"unpruned: {_pct(unpruned)}%{note}\n\n" + "\n".join(lines)


def summary_table(table: dict) -> str:
    lines = ["| data-aware method | vs | mean Δ (pp) | max Δ (pp) | max at | cells |",
             "|---|---|---|---|---|---|"]
    for m in aware_methods(table):
        for b in BASELINES:
            h = headline(table, m, b)
            if h:
                at = h["max_at"]
                lines.append(f"| {m} | {b} | {_pp(h['mean'])} | {_pp(h['max'])} | "
                             f"{at['subset']} {100 * at['level']:.0f}% | {h['cells']} |")
    return "\n".join(lines)


def plot(table: dict, key, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ms = table[key]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in [m for m in ORDER[1:] if m in ms] + [m for m in aware_methods(table) if m in ms]:
        lv = sorted(ms[m])
        ax.plot([100 * x for x in lv], [100 * ms[m][x] for x in lv], marker="o", label=m,
                linestyle="--" if m.startswith("control") else "-")
    if 0.0 in ms.get("unpruned", {}):
        ax.axhline(100 * ms["unpruned"][0.0], color="k", linestyle=":", label="unpruned")
    if 0.0 in ms.get("unpruned_restricted", {}):
        ax.axhline(100 * ms["unpruned_restricted"][0.0], color="k", linestyle="--",
                   label="unpruned, restricted logits")
    ax.set_xticks(sorted({100 * lv for m in ms for lv in ms[m] if not m.startswith("unpruned")}))
    ax.set(xlabel="pruning level (% of parameters removed)", ylabel="test accuracy (%)",
           title=f"{key[0]} on {key[1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=110)


def report(sweep_dir, out_dir=None) -> dict:
    """Write results.csv, summary.md, headline.json and plots/*.png; returns their paths."""
    out = Path(out_dir or Path(sweep_dir) / "report")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = collect(sweep_dir)
    write_csv(rows, out / "results.csv")
    table = means(rows)
    heads = {f"{m} vs {b}": headline(table, m, b) for m in aware_methods(table)
             for b in BASELINES}
    train.atomic_write_text(out / "headline.json", json.dumps(
        {k: v for k, v in heads.items() if v}, indent=1))
    md = ["# Data-aware vs data-agnostic pruning", "",
          f"{len(rows)} rows from {len({r['run'] for r in rows})} runs in `{sweep_dir}`. "
          "Accuracy: test accuracy (%) at the epoch of best validation accuracy, mean over "
          "seeds. Δ: data-aware minus baseline in percentage points; mean = mean over levels "
          "per (subset, network), then over (subset, network); max = largest Δ anywhere.", "",
          "## Headline", "", summary_table(table), ""]
    plots = []
    for key in sorted(table):
        name = f"{key[0]}_{protocol.safe_name(key[1])}.png"
        plot(table, key, out / "plots" / name)
        plots.append(out / "plots" / name)
        md += [f"## {key[1]} / {key[0]}", "", subset_table(table, key), "",
               f"![{key[1]}](plots/{name})", ""]
    train.atomic_write_text(out / "summary.md", "\n".join(md))
    return {"csv": out / "results.csv", "markdown": out / "summary.md", "plots": plots,
            "headline": out / "headline.json"}
