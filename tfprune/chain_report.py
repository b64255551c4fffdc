"""report.md and report.png of a main-job run (see tfprune.chain): the unpruned model against
the pruned, fine-tuned one, and their converted forms with validation verdicts."""
from __future__ import annotations

from pathlib import Path

from tfprune import train


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(latency, threads: str) -> str:
    return "-" if not latency else f"{latency[threads]['median_ms']:.2f}"


def report_markdown(s: dict) -> str:
    cfg, o, p, f = s["config"], s["original"], s["pruned"], s["finetuned"]
    sub = s["subset"]
    lines = [
        "# tfprune run report", "",
        f"Model `{cfg['model']}` on `{cfg['data']}` subset `{cfg['subset']}` "
        f"({sub['classes']} classes; {sub['train']} train / {sub['val']} val / {sub['test']} "
        f"test images). Criterion `{cfg['criterion']}`, level {cfg['level']:.0%} of "
        f"{cfg['target']} (achieved {p['achieved']['level']:.1%}), fine-tuned "
        f"{cfg['finetune_epochs']} epochs.", "",
        "| model | test accuracy | params | MACs | weight bytes | filters |",
        "|---|---|---|---|---|---|"]
    for name, m in (("original", o), ("pruned (BN re-estimated)", p), ("pruned + fine-tuned", f)):
        lines.append(f"| {name} | {_pct(m['test_accuracy'])} | {m['params']:,} | {m['macs']:,} "
                     f"| {m['bytes']:,} | {m['filters']:,} |")
    lines += ["", "## Converted models (LiteRT)", "",
              "| file | size | accuracy | latency 1 thread (ms) | 2 threads (ms) | gates |",
              "|---|---|---|---|---|---|"]
    for name, t in s["tflite"].items():
        gates = ", ".join(f"{g} {'pass' if ok else 'FAIL'}" for g, ok in t["gates"].items())
        lines.append(f"| {name} | {t['size_bytes'] or 0:,} B | {_pct(t['accuracy'])} | "
                     f"{_ms(t['latency'], '1')} | {_ms(t['latency'], '2')} | {gates} |")
    verdict = "passed" if s["validation_passed"] else "FAILED: " + "; ".join(s["failed_gates"])
    lines += ["", f"Validation gate: {verdict} (details: validation.md).", "",
              "![accuracy and cost](report.png)", ""]
    return "\n".join(lines)


def write_plot(s: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["original", "pruned", "fine-tuned"]
    rows = [s["original"], s["pruned"], s["finetuned"]]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(axes, ("test_accuracy", "params", "macs"),
                              ("test accuracy", "parameters", "MACs")):
        ax.bar(names, [r[key] for r in rows], color=["#888", "#c66", "#4a8"])
        ax.set_title(title)
    fig.suptitle(f"{s['config']['model']} on {s['config']['subset']}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(summary: dict, run_dir) -> None:
    run_dir = Path(run_dir)
    write_plot(summary, run_dir / "report.png")
    train.atomic_write_text(run_dir / "report.md", report_markdown(summary))
