"""A sweep's aggregation (tfprune.experiments.sweep runs it): one CSV row per (run,
evaluated subset), mean accuracy over seeds per (network, subset, method, level), the paper's
headline numbers (mean over levels per subset, then over subsets; max anywhere) against every
baseline with paired-bootstrap 95% CIs (tfprune.experiments.stats), convergence flags,
Markdown tables, JSON and PNG plots of accuracy against pruning level with CI bands.

Several sweep directories (the shards of one grid, `SWEEP/shard_*`, or copies from other
machines) merge into one report: runs are keyed by run id, and a run found twice is counted
once (the first directory given wins; the report lists the duplicates).

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
from tfprune.experiments import stats

BASELINES = ("agnostic", "control1", "control2", "control3", "control4")
FIELDS = ["network", "subset", "level", "seed", "method", "test_accuracy", "val_accuracy",
          "epoch", "converged", "last_epoch_gain", "pruned_test_accuracy", "achieved_level",
          "params", "run", "sweep_dir"]


def run_files(sweep_dirs) -> tuple[list[Path], list[str]]:
    """result.json of every run in `sweep_dirs` (each with its `shard_*` sub-directories),
    one per run id, the first found winning; and the run ids found more than once."""
    dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else list(sweep_dirs)
    seen, duplicates = {}, []
    for d in dirs:
        for root in [Path(d)] + sorted(Path(d).glob("shard_*")):
            for path in sorted(root.glob("runs/*/" + protocol.RESULT)):
                if path.parent.name in seen:
                    duplicates.append(path.parent.name)
                else:
                    seen[path.parent.name] = path
    return [seen[k] for k in sorted(seen)], sorted(set(duplicates))


def _label(res: dict) -> str:
    """The sweep's method label of a result (`aware:finetune_l1@mean` for a variant)."""
    name = (f"{res['method']}:{res['criterion']}" if res["method"] in
            protocol.CRITERION_METHODS else res["method"])
    variant = res.get("normalizer_variant")
    return f"{name}@{variant}" if variant else name


def earlier_subsets(path: Path) -> dict:
    """{subset: (evaluation, run name)} of the subsets the run of result `path` lacks that an
    earlier training of it (moved to `rerun/` for Control 4, `tfprune.experiments.sweep`)
    was evaluated on, the first such training first."""
    run = path.parent
    found, have = {}, set(json.loads(path.read_text())["subsets"])
    rerun = run.parent.parent / "rerun"
    for earlier in [rerun / run.name] + sorted(rerun.glob(run.name + ".*")):
        if (earlier / protocol.RESULT).exists():
            for subset, r in json.loads((earlier / protocol.RESULT).read_text())[
                    "subsets"].items():
                if subset not in have and subset not in found:
                    found[subset] = (r, f"rerun/{earlier.name}")
    return found


def collect(sweep_dirs) -> list[dict]:
    """One row per (run, evaluated subset); the agnostic run adds a `control1` row
    (`control1@N` for agnostic@N), and the subsets an earlier training of it covered that it
    does not (`earlier_subsets`). A row's `correct` holds the selected epoch's per-image test
    correctness (None if not stored)."""
    rows = []
    for path in run_files(sweep_dirs)[0]:
        res = json.loads(path.read_text())
        label = _label(res)
        achieved = res.get("achieved", {}).get("params_level", 0.0)
        evaluated = {k: (r, path.parent.name) for k, r in res["subsets"].items()}
        if res["method"] == "agnostic":
            evaluated.update(earlier_subsets(path))
        for subset, (r, run_name) in evaluated.items():
            base = {"network": res["network"], "subset": subset, "level": res["level"],
                    "seed": res["seed"], "achieved_level": achieved,
                    "params": res.get("params_after", ""), "run": run_name,
                    "sweep_dir": str(path.parent.parent.parent)}
            pruned = r.get("pruned", {})
            entries = [(label, r, pruned)]
            if res["method"] == "agnostic":
                entries.append((label.replace("agnostic", "control1", 1), r["restricted"],
                                pruned.get("restricted", {})))
            if res["method"] == "unpruned" and "restricted" in r:
                entries.append(("unpruned_restricted", {
                    **r["restricted"], "test_correct": r.get("restricted_test_correct")}, {}))
            for name, e, p in entries:
                packed = e.get("test_correct")
                rows.append({**base, "method": name, "test_accuracy": e["test_accuracy"],
                             "val_accuracy": e["val_accuracy"], "epoch": e.get("epoch", ""),
                             "converged": e.get("converged", ""),
                             "last_epoch_gain": e.get("last_epoch_gain", ""),
                             "pruned_test_accuracy": p.get("test_accuracy", ""),
                             "correct": protocol.unpack_bits(packed) if packed else None})
    return rows


def write_csv(rows, path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    fileio.atomic_write_text(Path(path), buf.getvalue())


def means(rows) -> dict:
    """{(network, subset): {method: {level: mean test accuracy over seeds}}}; unpruned at
    level 0."""
    acc = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        acc[(r["network"], r["subset"])][r["method"]][float(r["level"])].append(
            float(r["test_accuracy"]))
    return {k: {m: {lv: float(np.mean(v)) for lv, v in sorted(by.items())}
                for m, by in ms.items()} for k, ms in acc.items()}


def baseline_methods(table: dict) -> list[str]:
    """The baselines of a table in BASELINES order, each followed by its @variants."""
    present = sorted({m for ms in table.values() for m in ms})
    return [m for b in BASELINES for m in present if m == b or m.startswith(b + "@")]


def aware_methods(table: dict) -> list[str]:
    """The data-aware methods of a table (aware:* and adapt:*, variants included)."""
    return sorted({m for ms in table.values() for m in ms
                   if m.split(":")[0] in protocol.CRITERION_METHODS})


def deltas(table: dict, method: str, baseline: str, boot=None) -> dict:
    """{(network, subset): {level: method - baseline}} where both exist; with `boot`
    (stats.Bootstrap) the paired deltas' bootstrap results instead of numbers."""
    out = {}
    for key, ms in table.items():
        a, b = ms.get(method, {}), ms.get(baseline, {})
        if boot is None:
            common = {lv: a[lv] - b[lv] for lv in a if lv in b}
        else:
            common = {lv: d for lv in a if lv in b
                      if (d := boot.delta(key, method, baseline, lv)) is not None}
        if common:
            out[key] = common
    return out


def headline(table: dict, method: str, baseline: str = "agnostic", boot=None) -> dict | None:
    """The paper's numbers: mean over levels per (network, subset), then the mean of those;
    and the maximum delta anywhere (with where it is). With `boot`, deltas are paired by
    seed and each number gets its bootstrap 95% interval (`*_ci`; the max's is the interval
    of the delta in the cell where it is)."""
    d = deltas(table, method, baseline, boot)
    if not d:
        return None
    value = (lambda x: x) if boot is None else (lambda x: x["delta"])
    per = {k: float(np.mean([value(x) for x in v.values()])) for k, v in d.items()}
    (net, subset), level, best = max(((k, lv, value(v)) for k, by in d.items()
                                      for lv, v in by.items()), key=lambda t: t[2])
    out = {"mean": float(np.mean(list(per.values()))), "max": best,
           "max_at": {"network": net, "subset": subset, "level": level},
           "per_subset_mean": {f"{n}/{s}": v for (n, s), v in per.items()},
           "cells": sum(len(v) for v in d.values())}
    if boot is not None:
        per_reps = {k: np.mean([x["replicates"] for x in v.values()], axis=0)
                    for k, v in d.items()}
        out["mean_ci"] = stats.ci(np.mean(list(per_reps.values()), axis=0))
        out["max_ci"] = stats.ci(d[(net, subset)][level]["replicates"])
        out["per_subset_ci"] = {f"{n}/{s}": stats.ci(r) for (n, s), r in per_reps.items()}
        out["seeds"] = sorted({s for v in d.values() for x in v.values() for s in x["seeds"]})
    return out


def by_level(table: dict, method: str, baseline: str, boot) -> dict:
    """{level: mean over (network, subset) of the paired delta, its 95% CI, subsets}."""
    d = deltas(table, method, baseline, boot)
    levels = sorted({lv for v in d.values() for lv in v})
    out = {}
    for lv in levels:
        cells = [v[lv] for v in d.values() if lv in v]
        reps = np.mean([c["replicates"] for c in cells], axis=0)
        out[lv] = {"delta": float(np.mean([c["delta"] for c in cells])), "ci": stats.ci(reps),
                   "subsets": len(cells)}
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pp(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def _pp_ci(x, interval) -> str:
    return f"{_pp(x)} [{_pp(interval[0])}, {_pp(interval[1])}]"


def unconverged(rows) -> set:
    """{(network, subset, method, level)} cells with a run marked not converged."""
    return {(r["network"], r["subset"], r["method"], float(r["level"])) for r in rows
            if r.get("converged") is False}


def subset_table(table: dict, key, flagged=frozenset()) -> str:
    ms = table[key]
    aware = [m for m in aware_methods(table) if m in ms]
    cols = [m for m in baseline_methods(table) if m in ms] + aware
    unpruned = ms.get("unpruned", {}).get(0.0)
    restricted = ms.get("unpruned_restricted", {}).get(0.0)
    levels = sorted({lv for m in cols for lv in ms[m]})
    head = ["level %"] + cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lv in levels:
        cells = [f"{100 * lv:.0f}"] + [
            _pct(ms[m].get(lv)) + ("†" if (*key, m, lv) in flagged else "") for m in cols]
        lines.append("| " + " | ".join(cells) + " |")
    note = f" (logits restricted to the subset: {_pct(restricted)}%)" if restricted else ""
    return f"unpruned: {_pct(unpruned)}%{note}\n\n" + "\n".join(lines)


def delta_table(table: dict, key, boot) -> str:
    """Every data-aware method against every baseline in one (network, subset), per level:
    paired delta (pp) [95% CI]; a line saying so when no data-aware run is in yet."""
    ms = table[key]
    levels = sorted({lv for m in aware_methods(table) if m in ms for lv in ms[m]})
    if not levels:
        return "No data-aware run of this subset yet: baselines only."
    lines = ["| method | vs | " + " | ".join(f"{100 * lv:.0f}%" for lv in levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for m in [m for m in aware_methods(table) if m in ms]:
        for b in [b for b in baseline_methods(table) if b in ms]:
            cells = []
            for lv in levels:
                d = boot.delta(key, m, b, lv) if lv in ms[m] and lv in ms[b] else None
                cells.append("-" if d is None else _pp_ci(d["delta"], (d["lo"], d["hi"])))
            lines.append(f"| {m} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(table: dict, boot=None) -> str:
    ci_head = " 95% CI |" if boot is not None else ""
    lines = [f"| data-aware method | vs | mean Δ (pp) |{ci_head} max Δ (pp) |{ci_head} "
             "max at | cells |",
             "|---|---|---|" + ("---|" if boot is not None else "") + "---|"
             + ("---|" if boot is not None else "") + "---|---|"]
    for m in aware_methods(table):
        for b in baseline_methods(table):
            h = headline(table, m, b, boot)
            if h:
                at = h["max_at"]
                mean_ci = f" [{_pp(h['mean_ci'][0])}, {_pp(h['mean_ci'][1])}] |" if boot else ""
                max_ci = f" [{_pp(h['max_ci'][0])}, {_pp(h['max_ci'][1])}] |" if boot else ""
                lines.append(f"| {m} | {b} | {_pp(h['mean'])} |{mean_ci} {_pp(h['max'])} |"
                             f"{max_ci} {at['subset']} {100 * at['level']:.0f}% | "
                             f"{h['cells']} |")
    return "\n".join(lines)


def level_table(table: dict, boot) -> str:
    """Mean over subsets of each data-aware method's paired delta at each level [95% CI]."""
    levels = sorted({lv for ms in table.values() for m in aware_methods(table) if m in ms
                     for lv in ms[m]})
    lines = ["| method | vs | " + " | ".join(f"{100 * lv:.0f}%" for lv in levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for m in aware_methods(table):
        for b in baseline_methods(table):
            per = by_level(table, m, b, boot)
            if per:
                lines.append(f"| {m} | {b} | " + " | ".join(
                    _pp_ci(per[lv]["delta"], per[lv]["ci"]) + f" ({per[lv]['subsets']})"
                    if lv in per else "-" for lv in levels) + " |")
    return "\n".join(lines)


def convergence_table(rows) -> str:
    counts = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        if r["method"].startswith("unpruned"):
            continue
        counts[r["method"]][{True: 0, False: 1}.get(r.get("converged"), 2)] += 1
    lines = ["| method | converged | not converged | not known |", "|---|---|---|---|"]
    lines += [f"| {m} | {c[0]} | {c[1]} | {c[2]} |" for m, c in sorted(counts.items())]
    return "\n".join(lines)


def plot(table: dict, key, path, boot=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ms = table[key]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in [m for m in baseline_methods(table) + aware_methods(table) if m in ms]:
        lv = sorted(ms[m])
        line, = ax.plot([100 * x for x in lv], [100 * ms[m][x] for x in lv], marker="o",
                        label=m, linestyle="--" if m.startswith("control") else "-")
        if boot is not None:
            bands = [boot.accuracy(key, m, x) for x in lv]
            ax.fill_between([100 * x for x in lv], [100 * b["lo"] for b in bands],
                            [100 * b["hi"] for b in bands], color=line.get_color(), alpha=0.15)
    if 0.0 in ms.get("unpruned", {}):
        ax.axhline(100 * ms["unpruned"][0.0], color="k", linestyle=":", label="unpruned")
    if 0.0 in ms.get("unpruned_restricted", {}):
        ax.axhline(100 * ms["unpruned_restricted"][0.0], color="k", linestyle="--",
                   label="unpruned, restricted logits")
    ax.set_xticks(sorted({100 * lv for m in ms for lv in ms[m] if not m.startswith("unpruned")}))
    ax.set(xlabel="pruning level (% of parameters removed)", ylabel="test accuracy (%)",
           title=f"{key[0]} on {key[1]}" + (" (bands: bootstrap 95% CI)" if boot else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=110)


def _jsonable(h: dict | None):
    if h is None:
        return None
    return {k: v for k, v in h.items() if k != "replicates"}


def report(sweep_dirs, out_dir=None, samples: int = 1000) -> dict:
    """Write results.csv, summary.md, headline.json, deltas.json and plots/*.png from one
    sweep directory or several (merged, see module doc); returns their paths. The default
    output is the first directory's `report/`."""
    dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else list(sweep_dirs)
    out = Path(out_dir or Path(dirs[0]) / "report")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files, duplicates = run_files(dirs)
    rows = collect(dirs)
    write_csv(rows, out / "results.csv")
    table = means(rows)
    boot = stats.Bootstrap(rows, samples)
    methods, baselines = aware_methods(table), baseline_methods(table)
    heads = {f"{m} vs {b}": headline(table, m, b, boot) for m in methods for b in baselines}
    levels = {f"{m} vs {b}": {str(lv): v for lv, v in by_level(table, m, b, boot).items()}
              for m in methods for b in baselines}
    fileio.atomic_write_text(out / "headline.json", json.dumps(
        {"headline": {k: v for k, v in heads.items() if v},
         "by_level": {k: v for k, v in levels.items() if v},
         "runs": len(files), "duplicates": duplicates}, indent=1))
    cells = [{"network": key[0], "subset": key[1], "method": m, "vs": b, "level": lv,
              **_jsonable(d)} for m in methods for b in baselines
             for key, by in deltas(table, m, b, boot).items() for lv, d in by.items()]
    fileio.atomic_write_text(out / "deltas.json", json.dumps(cells, indent=1))
    flagged = unconverged(rows)
    where = ", ".join(f"`{d}`" for d in dirs)
    md = ["# Data-aware vs data-agnostic pruning", "",
          f"{len(rows)} rows from {len(files)} runs in {where}"
          + (f" (duplicates counted once: {', '.join(duplicates)})" if duplicates else "")
          + ". Accuracy: test accuracy (%) at the epoch of best validation accuracy, mean "
          "over seeds. Δ: data-aware minus baseline in percentage points, paired by seed; "
          "mean = mean over levels per (subset, network), then over (subset, network); max = "
          "largest Δ anywhere. [95% CI]: paired bootstrap over seeds and test images "
          f"({samples} samples, tfprune.experiments.stats). † = a run of that cell did not "
          f"converge (last-epoch validation gain >= {100 * protocol.CONVERGED_GAIN:.1f} pp).",
          "", "## Headline", "", summary_table(table, boot), "",
          "## By level (mean over subsets; number of subsets in brackets)", "",
          level_table(table, boot), "", "## Convergence", "", convergence_table(rows), ""]
    plots = []
    for key in sorted(table):
        name = f"{key[0]}_{protocol.safe_name(key[1])}.png"
        plot(table, key, out / "plots" / name, boot)
        plots.append(out / "plots" / name)
        md += [f"## {key[1]} / {key[0]}", "", subset_table(table, key, flagged), "",
               delta_table(table, key, boot), "", f"![{key[1]}](plots/{name})", ""]
    fileio.atomic_write_text(out / "summary.md", "\n".join(md))
    return {"csv": out / "results.csv", "markdown": out / "summary.md", "plots": plots,
            "headline": out / "headline.json", "deltas": out / "deltas.json"}
