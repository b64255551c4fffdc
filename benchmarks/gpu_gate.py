"""What the real `android-gpu` gate costs, and how the GPU agrees with the CPU across the zoo.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.gpu_gate
Each model (the pretrained ResNet-20, and the zoo networks with random weights: agreement
with the CPU does not need trained weights, though near-ties of an untrained head flip more
easily) is converted to float32 (batch 1) and checked by `tfprune.litert.validate.gpu.check`
on --images real images of the bundled aquatic sample: the wall time of the whole check
(subprocess start, compile, GPU and CPU runs), the compile and per-image GPU times, full
acceleration, the ops that fall back, top-1 agreement and max |logit difference| with the
CPU, and the legacy GpuDelegate rules' verdict beside it. On a software Vulkan device
(lavapipe) these times are CPU times of a GPU emulation, not phone timings.
Writes benchmarks/results/gpu_gate.json and gpu_gate.md.
"""
import json
import tempfile
import time
from pathlib import Path

from absl import app, flags

from tfprune import fileio

flags.DEFINE_list("models", ["pretrained:resnet20", "resnet20", "resnet56", "mobilenetv2",
                             "squeezenet", "alexnet"], "Models (loader specs).")
flags.DEFINE_integer("images", 64, "Real images per GPU check.", lower_bound=1, upper_bound=300)
flags.DEFINE_string("output", "benchmarks/results/gpu_gate.json", "JSON result path.")
FLAGS = flags.FLAGS


def _row(spec: str, images, work: Path) -> dict:
    from tfprune import litert
    from tfprune.litert import targets
    from tfprune.litert.validate import android, gpu
    from tfprune.models import loader

    path = targets.export_inference(loader.load_model(spec), "float32",
                                    work / f"{spec.replace(':', '_')}.tflite")
    start = time.perf_counter()
    result = gpu.check(path, images, count=FLAGS.images)
    wall = time.perf_counter() - start
    legacy = android.check_gpu_legacy(litert.inspect(path), with_analyzer=False)
    parity = result.get("parity") or {}
    sec = result.get("seconds") or {}
    return {"model": spec, "size_bytes": path.stat().st_size, "status": result["status"],
            "fully_accelerated": result.get("fully_accelerated"),
            "fallback_ops": result.get("fallback_ops"), "adapter": result.get("adapter"),
            "images": result.get("examples"), "check_wall_s": round(wall, 2),
            "compile_s": sec.get("compile_s"),
            "gpu_ms_per_image": round(1000 * sec["gpu_run_s"] / result["examples"], 1)
            if sec else None,
            "cpu_ms_per_image": round(1000 * sec["cpu_run_s"] / result["examples"], 2)
            if sec else None,
            "top1_agreement": parity.get("top1_agreement"),
            "max_abs_logit_diff": parity.get("max_abs_logit_diff"),
            "cpu_max_abs_logit": max((o.get("cpu_max_abs", 0) for o in
                                      parity.get("outputs", {}).values()), default=None),
            "legacy_rules_passed": legacy["passed"], "legacy_summary": legacy["summary"],
            "summary": result["summary"]}


def _g(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _markdown(rows: list[dict]) -> str:
    adapter = next((r["adapter"] for r in rows if r.get("adapter")), "-")
    lines = ["# The real GPU gate (`android-gpu`): cost and agreement", "",
             f"`python -m benchmarks.gpu_gate`; {FLAGS.images} real images of the bundled "
             f"aquatic sample per model; Vulkan adapter: {adapter}.", "",
             "**These are not phone timings.** The GPU here is Mesa's lavapipe, a software "
             "Vulkan device running on the same 2 shared CPU cores (busy with other jobs while "
             "this ran): the numbers say what the gate costs in CI, not how fast a phone's GPU "
             "runs the model.", "",
             "| model | status | fully accelerated | top-1 agreement | max abs logit diff | "
             "max abs CPU logit | check wall s | compile s | GPU ms/image | CPU ms/image | "
             "legacy rules |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = "-" if r["top1_agreement"] is None else f"{100 * r['top1_agreement']:.1f}%"
        diff = "-" if r["max_abs_logit_diff"] is None else f"{r['max_abs_logit_diff']:.3g}"
        lines.append(f"| {r['model']} | {r['status']} | {r['fully_accelerated']} | {agree} | "
                     f"{diff} | {_g(r.get('cpu_max_abs_logit'))} | {r['check_wall_s']} | "
                     f"{r['compile_s'] or '-'} | "
                     f"{r['gpu_ms_per_image'] or '-'} | {r['cpu_ms_per_image'] or '-'} | "
                     f"{'pass' if r['legacy_rules_passed'] else 'fail'} |")
    lines += ["", "The GPU computes in fp16 (largest finite value 65504): a model whose "
              "activations grow beyond that (a deep network with random weights and no "
              "trained BatchNorm statistics) gives inf/NaN on the GPU, and the gate fails it.",
              "", "Summaries:", ""] + [f"- {r['model']}: {r['summary']}" for r in rows] + [""]
    return "\n".join(lines)


def main(argv):
    del argv
    from tfprune import console
    console.quiet_logs()
    from tfprune import data

    images = data.load_subset("sample", "aquatic").test
    with tempfile.TemporaryDirectory(prefix="gpu_gate_") as work:
        rows = []
        for spec in FLAGS.models:
            rows.append(_row(spec, images, Path(work)))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(FLAGS.output)
    fileio.atomic_write_text(out, json.dumps({"images": FLAGS.images, "rows": rows}, indent=1))
    fileio.atomic_write_text(out.with_suffix(".md"), _markdown(rows))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    app.run(main)
