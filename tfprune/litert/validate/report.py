"""Render a validation report as validation.json and validation.md (written atomically)."""
from __future__ import annotations

import json
from pathlib import Path

from tfprune.fileio import atomic_write_text


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _status(gate: dict) -> str:
    if gate.get("status") == "not run":
        return "**NOT RUN**"
    return "pass" if gate["passed"] else "**FAIL**"


def _gpu_md(gpu: dict) -> list[str]:
    lines = ["", f"GPU (real run, {gpu['runtime']}): {gpu['status']}; adapter: "
                 f"{gpu.get('adapter') or '-'}."]
    if gpu.get("fallback_ops"):
        lines += ["Ops the accelerator leaves to the CPU, in its words: "
                  + "; ".join(f"{o['name']}: {o['why']}" for o in gpu["fallback_ops"])]
    if gpu.get("seconds"):
        sec = gpu["seconds"]
        lines.append(f"{gpu['examples']} inputs; compile {sec['compile_s']:.2f} s, GPU runs "
                     f"{sec['gpu_run_s']:.2f} s, CPU runs {sec['cpu_run_s']:.2f} s (a software "
                     "Vulkan device is not a phone's GPU: these are not phone timings).")
    return lines


def _file_md(f: dict) -> list[str]:
    lines = [f"## {Path(f['path']).name}", ""]
    if "size_bytes" in f:
        lines += [f"- size: {f['size_bytes']:,} bytes; kind: {f['kind']}; ops: {f['num_ops']}; "
                  f"MACs: {f['macs']:,}",
                  "- inputs: " + ", ".join(f"{t['name']} {t['shape']} {t['dtype']}"
                                           f"{' scale ' + str(t['scale']) + ' zp ' + str(t['zero_point']) if t['scale'] else ''}"
                                           for t in f["inputs"]),
                  "- outputs: " + ", ".join(f"{t['name']} {t['shape']} {t['dtype']}" for t in f["outputs"]),
                  "- signatures: " + (", ".join(f["signatures"]) or "-"), ""]
    lines += ["| gate | result | why |", "| --- | --- | --- |"]
    lines += [f"| {g['gate']} | {_status(g)} | {g['why']} |" for g in f["gates"]]
    if f.get("op_counts"):
        lines += ["", "| op | count |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in f["op_counts"].items()]
    tpu = f.get("targets", {}).get("edgetpu")
    if tpu:
        lines += ["", f"Edge TPU: {tpu['ops_mapped']}/{tpu['ops_total']} ops "
                      f"({_pct(tpu['ops_mapped_share'])}) and {_pct(tpu['macs_mapped_share'])} of "
                      f"{tpu['macs_total']:,} MACs would map."]
        if tpu["first_cpu_op"]:
            first = tpu["first_cpu_op"]
            lines.append(f"First CPU fallback: op {first['op']} {first['name']}: "
                         + "; ".join(first["problems"]))
        if tpu.get("compiler"):
            lines += ["", "edgetpu_compiler log:", "```", tpu["compiler"]["log"], "```"]
    if f.get("targets", {}).get("android-gpu"):
        lines += _gpu_md(f["targets"]["android-gpu"])
    gpu = f.get("targets", {}).get("android-gpu-legacy")
    if gpu and gpu.get("analyzer_verdict"):
        lines += ["", f"Legacy GPU delegate: {gpu['ops_on_gpu']}/{gpu['ops_total']} ops by the "
                      f"rule table (rules, not a run). tf.lite Analyzer said: "
                      f"\"{gpu['analyzer_verdict']}\" (not relied on)."]
    p = f.get("parity")
    if p:
        lines += ["", "| parity | value |", "| --- | ---: |",
                  f"| images | {p['images']} |", f"| top-1 agreement | {_pct(p['top1_agreement'])} |",
                  f"| max abs logit diff | {p['max_abs_logit_diff']:.4g} |",
                  f"| Keras accuracy | {_pct(p['keras_accuracy'])} |",
                  f"| TFLite accuracy | {_pct(p['tflite_accuracy'])} |",
                  f"| accuracy drop | {p['accuracy_drop_pp']:.2f} pp |"]
    lat = f.get("latency")
    if lat:
        lines += ["", "| threads | median ms | p90 ms |", "| ---: | ---: | ---: |"]
        lines += [f"| {n} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} |" for n, v in lat.items()]
    return lines + [""]


def to_markdown(report: dict) -> str:
    norm = report["normalisation"]
    lines = ["# Validation report", "",
             f"Result: **{'PASS' if report['passed'] else 'FAIL'}**; targets: "
             f"{', '.join(report['targets']) or '-'}; Keras source: {report.get('keras_model') or '-'}; "
             f"data: {report.get('data') or '-'}.",
             f"Model input: {norm['model_input']} with mean {norm['mean']} and std {norm['std']}.",
             f"Thresholds: {report['thresholds']}.", ""]
    if report["failed_gates"]:
        lines += ["Failed gates:", ""] + [f"- {g}" for g in report["failed_gates"]] + [""]
    if report.get("not_run"):
        lines += ["Not run here (did not pass):", ""] + [f"- {g}" for g in report["not_run"]] + [""]
    for f in report["files"]:
        lines += _file_md(f)
    return "\n".join(lines)


def write(report: dict, output_dir) -> tuple[Path, Path]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "validation.json", out / "validation.md"
    atomic_write_text(js, json.dumps(report, indent=2, default=str))
    atomic_write_text(md, to_markdown(report))
    return js, md
