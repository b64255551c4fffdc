"""A sweep's aggregation (tfprune.experiments.sweep runs it): one CSV row per (run, evaluated subset),
mean accuracy over seeds per (network, subset, method, level), the paper's headline numbers
(mean over levels per subset, then over subsets; max anywhere) against every baseline,
Markdown tables and PNG plots of accuracy against pruning level.

Control 1 (the agnostic run's restricted-logits accuracy) appears as method `control1`, the
unpruned model's restricted-logits accuracy as `unpruned_restricted`.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from tfprune import fileio
from tfprune.experiments import protocol
from tfprune.training import fit as train

BASELINES = ("agnostic", "control1", "control2", "control3")
ORDER = ("unpruned", "agnostic", "control1", "control2", "control3")


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
