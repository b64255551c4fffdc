"""report.md and report.png of a main-job run (see tfprune.jobs.main_job): the unpruned model against
the pruned, fine-tuned one, and their converted forms with validation verdicts."""
from __future__ import annotations

from pathlib import Path

from tfprune import fileio


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _kept(device: dict) -> str:
    """Which weights the device stage kept (tfprune.ondevice.finetune.kept_epoch), in words."""
    kept = device.get("kept_epoch")
    if kept is None:
        return "the last epoch; no held-out images"
    if kept == 0:
        return ("the shipped weights: no epoch beat them on the held-out val images beyond "
                "those images' noise (paired sign test)")
    return (f"epoch {kept}, the best of the epochs that beat the shipped weights on the "
            "held-out val images beyond their noise (paired sign test)")


def _gate(status) -> str:
    """A gate's status ("pass", "fail", "not run"; older summaries hold booleans)."""
    if isinstance(status, bool):
        status = "pass" if status else "fail"
    return {"fail": "FAIL", "not run": "NOT RUN"}.get(status, status)


def _ms(measured: dict, role: str) -> str:
    """`role`'s side-by-side latency in one runtime's entry of speed.json, or "-"."""
    ms = (measured.get("ms") or {}).get(role)
    return "-" if ms is None else f"{ms:.2f}"


def _precision(file_name: str, role: str) -> str | None:
    """The precision whose side-by-side file of `role` is `file_name`, else None (a file the
    speed stage does not time: trainable.tflite)."""
    from tfprune.latency.report import SIDE_BY_SIDE
    return next((p for p, files in SIDE_BY_SIDE.items()
                 if role in files and Path(files[role]).name == file_name), None)


def _depth(entry) -> str:
    if not entry or not entry.get("removed"):
        return ""
    text = (f"{len(entry['removed'])} of {len(entry['removable'])} residual branches removed "
            f"whole first (`{entry.get('criterion')}`: {', '.join(entry['removed'])}); ")
    if entry.get("requested") != "auto":
        return text + "the level counts from the model without them. "
    tried = ", ".join(f"{r['branches']}: KL {r['kl']:.3f}" for r in entry["search"] if "kl" in r)
    return text + ("the level counts from the model before them; the count is the candidate "
                   f"closest to the model at the same predicted latency ({tried}). ")


def report_markdown(s: dict) -> str:
    cfg, o, p, f = s["config"], s["original"], s["pruned"], s["finetuned"]
    sub = s["subset"]
    lines = [
        "# tfprune run report", "",
        f"Model `{cfg['model']}` on `{cfg['data']}` subset `{cfg['subset']}` "
        f"({sub['classes']} classes; {sub['train']} train / {sub['val']} val / {sub['test']} "
        f"test images). " + _depth(p.get("depth"))
        + f"Criterion `{cfg['criterion']}`, level {cfg['level']:.0%} of "
        f"{cfg['target']}{' on ' + cfg['runtime'] if cfg.get('runtime') else ''} "
        f"(achieved {p['achieved']['level']:.1%}, round_to {cfg.get('round_to', 1)})"
        + (f", reconstructed by least squares on {cfg['reconstruct_images']} training images at "
           "most" if cfg.get("reconstruct_images") else "") + ", fine-tuned "
        f"{cfg['finetune_epochs']} epochs from lr {cfg.get('finetune_lr', '-')}"
        + _distillation(cfg)
        + f"; head `{cfg.get('head', 'full')}`.", "",
        *baselines_markdown(s),
        "| model | test accuracy | params | MACs | weight bytes | filters |",
        "|---|---|---|---|---|---|"]
    pruned_label = ("pruned (reconstructed, BN re-estimated)" if cfg.get("reconstruct_images")
                    else "pruned (BN re-estimated)")
    for name, m in (("original", o), (pruned_label, p), ("pruned + fine-tuned", f)):
        lines.append(f"| {name} | {_pct(m['test_accuracy'])} | {m['params']:,} | {m['macs']:,} "
                     f"| {m['bytes']:,} | {m['filters']:,} |")
    speed = s.get("speed") or {}
    lines += ["", "## Converted models (LiteRT): unpruned against pruned", "",
              "Latency: timed side by side (see below); speed-up: the 100-way original's "
              "1-thread latency over the file's, per round.", "",
              "| model | file | size | accuracy | latency 1 thread (ms) | 2 threads (ms) | "
              "speed-up (1 thread) | gates |", "|---|---|---|---|---|---|---|---|"]
    before = s.get("original_tflite") or {}
    for label, rows in (("unpruned", before), ("pruned + fine-tuned", s["tflite"])):
        role = "original" if label == "unpruned" else "shipped"
        for name, t in rows.items():
            gates = ", ".join(f"{g} {_gate(status)}" for g, status in t["gates"].items())
            one, two = (speed.get(f"litert-{_precision(name, role)}-{n}t") or {} for n in (1, 2))
            ratio = (one.get("vs_shipped") or {}).get("original")
            speedup = f"{ratio:.2f}x" if role == "shipped" and ratio else "-"
            lines.append(f"| {label} | {name} | {t['size_bytes'] or 0:,} B | {_pct(t['accuracy'])}"
                         f" | {_ms(one, role)} | {_ms(two, role)} | {speedup} | {gates} |")
    verdict = "passed" if s["validation_passed"] else "FAILED: " + "; ".join(s["failed_gates"])
    lines += ["", f"Validation gate of the shipped models: {verdict} (details: validation.md; "
              "the unpruned model's: original/validation.md).", ""]
    if p.get("predicted_latency_ms"):
        from tfprune.latency.report import markdown as latency_table
        lines += ["## Latency: predicted and measured, next to the FLOPs reduction", ""]
        lines += latency_table(p["predicted_latency_ms"], speed, o["macs"], f["macs"]) + [""]
    gpu = [(name, t["gpu_check"]) for name, t in s["tflite"].items() if t.get("gpu_check")]
    lines += [f"GPU check of {name} (android-gpu: a real run through LiteRT's GPU accelerator; "
              f"android-gpu-legacy: the old GpuDelegate's rules, not a run): {said}"
              for name, said in gpu] + ([""] if gpu else [])
    if s.get("bundle"):
        b = s["bundle"]
        lines += ["## Android bundle", "", "`bundle/` in the run directory (start with its android/README.md):", "",
                  "| file | bytes |", "|---|---|"]
        lines += [f"| {name} | {size:,} |" for name, size in b["files"].items()]
        lines.append("")
    if s.get("device"):
        d, cfg = s["device"], s["config"]
        last = d["history"][-1] if d["history"] else {}
        restart = d.get("restart") or {}
        lines += ["## On-device fine-tuning (simulated device: LiteRT, builtin ops only)", "",
                  f"`{Path(d['trainable']).name}` trained {d['epochs_done']} epochs on the "
                  f"subset's training images at lr {cfg['device_lr']}, batch from the export; "
                  f"an app restart (new interpreter + restore) after epoch "
                  f"{restart.get('after_epoch', '-')}: bit-identical "
                  f"{restart.get('bit_identical', '-')}.", "",
                  "| test accuracy before | after the last epoch | kept | train img/s (last "
                  "epoch) |", "|---|---|---|---|",
                  f"| {_pct(d['initial_test_accuracy'])} | {_pct(last.get('test_accuracy'))} | "
                  f"{_pct(d['final_test_accuracy'])} ({_kept(d)}) | "
                  f"{last.get('images_per_second', 0):.1f} |", ""]
    if s.get("stage_seconds"):
        t = s["stage_seconds"]
        lines += ["## Time per stage (wall seconds, when each stage ran)", "",
                  "| " + " | ".join(t) + " | total |", "|" + "---|" * (len(t) + 1),
                  "| " + " | ".join(f"{v:.0f}" for v in t.values())
                  + f" | {sum(t.values()):.0f} |", ""]
    lines += ["![accuracy and cost](report.png)", ""]
    return "\n".join(lines)


def _distillation(cfg: dict) -> str:
    terms = []
    if cfg.get("distill_alpha"):
        terms.append(f"logits: alpha {cfg['distill_alpha']}, T {cfg['distill_temperature']}")
    if cfg.get("distill_features"):
        terms.append(f"feature maps x{cfg['distill_features']}")
    if not terms:
        return ""
    mix = cfg.get("distill_mix", "none")
    views = f"; label-free {mix} views added" if mix != "none" else ""
    return f" with distillation from the restricted original ({'; '.join(terms)}{views})"


def baselines_markdown(s: dict) -> list[str]:
    """The comparison on the same test images: the bar is the original restricted to the
    subset (its logits of the subset's classes, no training)."""
    rows = s.get("baselines")
    if not rows:
        return []
    bar = s["restricted"]["test_accuracy"]
    out = [f"## Against the baselines ({s['subset']['test']} test images)", "",
           "| model | accuracy | vs the bar (pp) | params | MACs | LiteRT float32 latency, 1 "
           "thread (ms) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.2f}"
        out.append(f"| {r['model']} | {_pct(r['accuracy'])} | {100 * (r['accuracy'] - bar):+.1f} "
                   f"| {r['params']:,} | {r['macs']:,} | {lat} |")
    line = s.get("verdict")
    return out + (["", f"Verdict: {line}"] if line else []) + [""]


def verdict(rows: list[dict], speedup: float | None = None) -> str | None:
    """One line for the user: the shipped model against the bar, in accuracy and in speed-up
    (LiteRT float32, 1 thread, side by side)."""
    by = {r.get("role"): r for r in rows}
    bar, shipped = by.get("bar"), by.get("shipped")
    if not bar or not shipped:
        return None
    gap = 100 * (shipped["accuracy"] - bar["accuracy"])
    speed = f" and {speedup:.2f}x faster (LiteRT float32, 1 thread)" if speedup else ""
    if gap >= -1:
        return (f"the shipped model is within 1 pp of the restricted original ({gap:+.1f} pp)"
                f"{speed}.")
    return (f"the shipped model is {-gap:.1f} pp less accurate than the restricted original"
            f"{speed}. If accuracy matters more than speed, ship "
            "original/restricted_float32.tflite (the unpruned model, its logits restricted) or "
            "prune less (--level); more training images narrow the gap.")


def write_plot(s: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["original", "pruned", "fine-tuned"]
    rows = [s["original"], s["pruned"], s["finetuned"]]
    accuracy = [r["test_accuracy"] for r in rows]
    if s.get("device"):
        names, accuracy = names + ["+ device"], accuracy + [s["device"]["final_test_accuracy"]]
    colors = ["#888", "#c66", "#4a8", "#48c"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    axes[0].bar(names, accuracy, color=colors[:len(names)])
    axes[0].set_title("test accuracy")
    for ax, key, title in zip(axes[1:3], ("params", "macs"), ("parameters", "MACs")):
        ax.bar(names[:3], [r[key] for r in rows], color=colors[:3])
        ax.set_title(title)
    fmt = [p for p in ("float32", "int8") if f"litert-{p}-1t" in (s.get("speed") or {})]
    for offset, (label, role, color) in enumerate((("unpruned", "original", "#888"),
                                                    ("pruned", "shipped", "#4a8"))):
        axes[3].bar([i + 0.4 * offset for i in range(len(fmt))],
                    [s["speed"][f"litert-{p}-1t"]["ms"][role] for p in fmt], 0.4, label=label,
                    color=color)
    axes[3].set_xticks([i + 0.2 for i in range(len(fmt))], fmt)
    axes[3].set_title("LiteRT latency, 1 thread (ms, side by side)")
    axes[3].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{s['config']['model']} on {s['config']['subset']}")
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=100)


def write_report(summary: dict, run_dir) -> None:
    run_dir = Path(run_dir)
    write_plot(summary, run_dir / "report.png")
    fileio.atomic_write_text(run_dir / "report.md", report_markdown(summary))
