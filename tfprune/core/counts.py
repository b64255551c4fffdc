"""Model size metrics: parameters, MACs and weight bytes per layer and in total.

Parameters are all weight elements (trainable or not, as `model.count_params()`); bytes are
parameters times their dtype size; MACs count the multiply-accumulates of convolution
(incl. depthwise, separable, transposed) and Dense layers for one input (batch 1): output
positions x kernel elements. Bias adds, BatchNorm, activations and pooling are not counted
(they fold into the convolutions on the targets we ship to).
"""
from __future__ import annotations

from tfprune import fileio
from tfprune.core import graph as graph_mod

KEYS = ("params", "macs", "bytes")


def model_metrics(model_or_graph) -> dict:
    """{"params", "macs", "bytes", "filters", "layers": {name: {...}}} of a model."""
    g = model_or_graph if isinstance(model_or_graph, graph_mod.ChannelGraph) else \
        graph_mod.build_graph(model_or_graph)
    return g.counts(per_layer=True)


def compare(before: dict, after: dict) -> dict:
    """Before/after totals and ratios, JSON-ready."""
    out = {"before": {k: v for k, v in before.items() if k != "layers"},
           "after": {k: v for k, v in after.items() if k != "layers"}}
    out["removed_fraction"] = {k: round(1 - after[k] / before[k], 6) if before[k] else 0.0
                               for k in KEYS + ("filters",)}
    out["layers"] = {name: {"class_name": row["class_name"],
                            **{f"{k}_before": row[k] for k in KEYS},
                            **{f"{k}_after": after["layers"].get(name, {}).get(k, 0) for k in KEYS}}
                     for name, row in before["layers"].items()}
    return out


def _fmt(n: int) -> str:
    return f"{n:,}"


def markdown_table(comparison: dict, changed_only: bool = False) -> str:
    """The per-layer table (and a total row) of `compare(...)` as Markdown."""
    lines = ["| layer | type | params before | params after | MACs before | MACs after | kept |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in comparison["layers"].items():
        if changed_only and row["params_after"] == row["params_before"]:
            continue
        kept = row["params_after"] / row["params_before"] if row["params_before"] else 1.0
        lines.append(f"| {name} | {row['class_name']} | {_fmt(row['params_before'])} | "
                     f"{_fmt(row['params_after'])} | {_fmt(row['macs_before'])} | "
                     f"{_fmt(row['macs_after'])} | {kept:.0%} |")
    b, a = comparison["before"], comparison["after"]
    lines.append(f"| **total** | | {_fmt(b['params'])} | {_fmt(a['params'])} | "
                 f"{_fmt(b['macs'])} | {_fmt(a['macs'])} | {a['params'] / b['params']:.0%} |")
    return "\n".join(lines)


def summary_table(comparison: dict) -> str:
    b, a, r = comparison["before"], comparison["after"], comparison["removed_fraction"]
    lines = ["| measure | before | after | removed |", "| --- | ---: | ---: | ---: |"]
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("bytes", "weight bytes"),
                       ("filters", "filters")):
        lines.append(f"| {label} | {_fmt(b[key])} | {_fmt(a[key])} | {r[key]:.1%} |")
    return "\n".join(lines)


def plot_layers(comparison: dict, path) -> None:
    """A PNG bar chart: parameters per weighted layer before and after pruning."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, r) for n, r in comparison["layers"].items() if r["params_before"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(rows) + 2), 4))
    x = range(len(rows))
    ax.bar(x, [r["params_before"] for _, r in rows], color="#c8c8c8", label="before")
    ax.bar(x, [r["params_after"] for _, r in rows], color="#2b6cb0", label="after")
    ax.set_yscale("log")
    ax.set_ylabel("parameters")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n for n, _ in rows], rotation=90, fontsize=5)
    ax.legend()
    ax.set_title(f"params {comparison['before']['params']:,} -> {comparison['after']['params']:,}")
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=120)
