"""Does pruning buy real speed? LiteRT latency speed-up per unit of FLOPs reduction.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.latency
ResNet-56 and MobileNetV2 (random weights: latency does not depend on their values) are pruned
with l1 to 30/50/70% of FLOPs with round_to 1 and 8, converted to float32 and full int8
(static batch 1), and timed in ai_edge_litert (single image, --threads). Efficiency =
(latency of the unpruned model / latency of the pruned one) / (MACs unpruned / MACs pruned);
1.0 means every removed MAC turned into saved time, the goal is >= 0.9.
The machine is shared, and load only ever slows a run down: all models of one (net,
precision) are timed in interleaved rounds of --invokes runs, and each model's latency is its
best round median; the median over rounds of the paired speed-up is reported beside it.
To explain shortfalls, each (net, precision, round_to) series is fitted with
latency = fixed + per_MAC * MACs: a fixed cost (per-op and invoke overhead, the unpruned stem,
pooling and head, memory traffic that does not shrink with channels) caps the speed-up below
the FLOPs reduction. Writes benchmarks/results/latency.json, latency.md and latency.png.
`--channel_sweep` instead times a stack of four 3x3 convolutions (16x16 maps) at a range of
channel counts, float32 and int8, and reports MACs per ns: how LiteRT's kernels' efficiency
depends on the channel count (tiles of 8/16 channels), which is what rounding controls.
Writes benchmarks/results/latency_channels.json and .md.
`--target_grid` prunes to requested cuts of predicted latency (`--target=latency`) on every
`--runtimes` entry and measures the cut and the latency model's error
(benchmarks/latency_target.py); writes benchmarks/results/latency_target.json and .md:
flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.latency --target_grid
(`--grid_blocks=auto --grid_name=latency_target_blocks` removes residual branches too, the
fewest that make each cut reachable).
`--main_job=RUN_DIR` times a main-job run's unpruned and pruned files side by side against
its FLOPs reduction (benchmarks/latency_main_job.py); writes
benchmarks/results/latency_main_job.json and .md.
`--equal_latency` compares latency-targeted with params-targeted pruning at equal measured
latency after the same fine-tuning (benchmarks/latency_accuracy.py); writes
benchmarks/results/latency_accuracy.json and .md (a fine-tuning recipe other than lr 0.01
alone names the files, e.g. latency_accuracy_lr0.1_cutmix_f20 for the main job's):
.venv/bin/python -m benchmarks.latency --equal_latency \
    --accuracy_data=npz:/work/shared/data/cifar100.npz --accuracy_cuts=0.5,0.7
"""
import json
import statistics
import time
from pathlib import Path

from absl import app, flags

from benchmarks.latency_main_job import GOAL
from tfprune import fileio

flags.DEFINE_list("models", ["resnet56", "mobilenetv2"], "Zoo models.")
flags.DEFINE_list("levels", ["0.3", "0.5", "0.7"], "FLOPs fractions to remove.")
flags.DEFINE_list("round_to", ["1", "8"], "Channel rounding.")
flags.DEFINE_list("precisions", ["float32", "int8"], "Conversion modes.")
flags.DEFINE_integer("threads", 1, "LiteRT threads.")
flags.DEFINE_integer("rounds", 40, "Interleaved timing rounds (many short rounds: a round's ratio "
                     "spreads +-10 points on a shared machine).")
flags.DEFINE_integer("invokes", 10, "Timed invokes per model per round.")
flags.DEFINE_string("output", "benchmarks/results/latency.json", "JSON result path.")
flags.DEFINE_bool("channel_sweep", False, "Run the conv channel-count sweep instead.")
flags.DEFINE_list("channels", ["8", "12", "15", "16", "20", "24", "31", "32", "40", "48", "63",
                               "64"], "Channel counts for --channel_sweep.")
flags.DEFINE_bool("target_grid", False, "Run the --target=latency grid instead.")
flags.DEFINE_list("target_models", ["resnet20", "resnet56", "mobilenetv2", "mobilenetv3small_96"],
                  "Models of --target_grid (zoo names, mobilenetv3small_96: keras.applications "
                  "MobileNetV3Small at 96 px, random weights).")
flags.DEFINE_list("cuts", ["0.3", "0.5", "0.7"], "Latency fractions to remove (--target_grid).")
flags.DEFINE_enum("grid_blocks", "0", ["0", "auto"], "--target_grid: residual branches to "
                  "remove whole first (auto: the fewest whose channel plan reaches the cut).")
flags.DEFINE_string("grid_name", "latency_target", "File stem of --target_grid's results in "
                    "--output's directory.")
flags.DEFINE_bool("feedback", True, "--target_grid: measure each plan and re-plan "
                  "(tfprune.latency.feedback), as the apps do; off: the one-shot plan.")
flags.DEFINE_list("runtimes", ["litert-float32-1t", "litert-float32-2t", "litert-int8-1t",
                               "litert-int8-2t"], "Runtimes of --target_grid.")
flags.DEFINE_string("latency_cache", None, "Latency table cache (default: the user cache).")
flags.DEFINE_string("main_job", None, "Time a main-job run directory's unpruned and pruned "
                    "files side by side instead (benchmarks/latency_main_job.py).")
flags.DEFINE_list("main_job_threads", ["1", "2"], "Thread counts of --main_job.")
flags.DEFINE_string("main_job_name", "latency_main_job", "File stem of --main_job's results "
                    "(beside --output).")
flags.DEFINE_bool("equal_latency", False, "Run the accuracy-at-equal-latency comparison instead.")
flags.DEFINE_string("accuracy_data", "sample", "Data of --equal_latency.")
flags.DEFINE_string("accuracy_subset", "aquatic", "Subset of --equal_latency.")
flags.DEFINE_list("accuracy_cuts", ["0.5"], "Latency cuts of --equal_latency.")
flags.DEFINE_string("accuracy_runtime", "litert-float32-1t", "Runtime of --equal_latency.")
flags.DEFINE_integer("accuracy_epochs", 15, "Fine-tuning epochs of --equal_latency.",
                     lower_bound=1)
flags.DEFINE_list("accuracy_seeds", ["0"], "Fine-tuning seeds of --equal_latency.")
flags.DEFINE_float("accuracy_lr", 0.01, "Fine-tuning peak rate of --equal_latency.",
                   lower_bound=0.0)
flags.DEFINE_enum("accuracy_mix", "none", ["none", "mixup", "cutmix"],
                  "Mixed views in the fine-tuning of --equal_latency.")
flags.DEFINE_float("accuracy_features", 0.0, "Feature maps' loss weight in the fine-tuning "
                   "of --equal_latency (the main job's: 20).", lower_bound=0.0)
FLAGS = flags.FLAGS


def _variants(name, levels, round_tos):
    """[(label, level, round_to, keras model, MACs)] with the unpruned model first."""
    import keras

    from tfprune import scoring
    from tfprune.core import graph
    from tfprune.core import plan
    from tfprune.models import zoo

    keras.utils.set_random_seed(0)
    base = zoo.build(name)
    g = graph.build_graph(base)
    scores = scoring.compute_scores("l1", base, g)
    out = [("unpruned", 0.0, 1, base, None)]
    for level in levels:
        for r in round_tos:
            p = plan.make_plan(g, scores, level, target="flops", round_to=r, criterion="l1")
            out.append((f"{level:.0%} r{r}", level, r, _apply(base, p, g), p))
    return out


def _apply(model, p, g):
    from tfprune.core import surgery

    return surgery.apply_plan(model, p, graph=g)


def _measure(blobs, threads, rounds, invokes):
    """{label: [round median ms]} on the wall clock, every model once per round, the order
    rotating (tfprune.latency.timing.time_interleaved)."""
    from tfprune.latency import timing

    wall = {}
    timing.time_interleaved(blobs, threads, rounds, invokes, wall=wall)
    return wall


def main(argv):
    del argv
    from tfprune import console
    console.quiet_logs()
    if FLAGS.channel_sweep:
        return _channel_sweep()
    if FLAGS.target_grid:
        return _target_grid()
    if FLAGS.equal_latency:
        return _equal_latency()
    if FLAGS.main_job:
        return _main_job()
    from tfprune import data, litert
    from tfprune.models import cards as card
    from tfprune.litert import convert

    levels = [float(v) for v in FLAGS.levels]
    round_tos = [int(v) for v in FLAGS.round_to]
    calibration = convert.calibration_images(data.load_source("sample").train, 100)
    rows, started = [], time.time()
    for name in FLAGS.models:
        variants = _variants(name, levels, round_tos)
        for precision in FLAGS.precisions:
            blobs = {label: convert.convert(m, precision, calibration=calibration)
                     for label, _, _, m, _ in variants}
            macs = {label: sum(op.macs for op in litert.inspect(b).ops) for label, b in blobs.items()}
            print(f"latency: {name} {precision}: timing {len(blobs)} models", flush=True)
            per_round = _measure(blobs, FLAGS.threads, FLAGS.rounds, FLAGS.invokes)
            best = {label: min(v) for label, v in per_round.items()}
            for label, level, r, model, p in variants:
                flops_x = macs["unpruned"] / macs[label]
                speedup = best["unpruned"] / best[label]
                paired = statistics.median(u / v for u, v in zip(per_round["unpruned"],
                                                                per_round[label]))
                rows.append({
                    "model": name, "precision": precision, "variant": label, "level": level,
                    "round_to": r, "achieved_flops_level": None if p is None else
                    round(1 - macs[label] / macs["unpruned"], 4),
                    "params": int(model.count_params()), "macs": int(macs[label]),
                    "size_bytes": len(blobs[label]), "latency_ms": round(best[label], 4),
                    "round_medians_ms": [round(v, 4) for v in per_round[label]],
                    "flops_reduction": round(flops_x, 4), "speedup": round(speedup, 4),
                    "speedup_paired_median": round(paired, 4),
                    "efficiency": round(speedup / flops_x, 4)})
                print(f"  {label:>10}: {best[label]:7.3f} ms  x{speedup:.2f} for FLOPs "
                      f"x{flops_x:.2f} -> efficiency {speedup / flops_x:.2f}", flush=True)
    result = {"benchmark": "latency", "goal_efficiency": GOAL, "fits": _fits(rows), "threads": FLAGS.threads,
              "rounds": FLAGS.rounds, "invokes": FLAGS.invokes, "runtime": "ai_edge_litert",
              "batch": 1, "criterion": "l1", "weights": "random (zoo init, seed 0)",
              "wall_s": round(time.time() - started, 1), "versions": card.versions(),
              "rows": rows}
    out = Path(FLAGS.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(out, json.dumps(result, indent=2))
    fileio.atomic_write_text(out.with_suffix(".md"), _markdown(result))
    _plot(rows, out.with_suffix(".png"))
    print(f"latency: wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _target_grid():
    from benchmarks import latency_target
    from tfprune.latency.cache import LatencyCache
    from tfprune.latency.runtimes import environment
    from tfprune.models import cards as card

    cache, started = LatencyCache(FLAGS.latency_cache), time.time()
    out = Path(FLAGS.output).with_name(f"{FLAGS.grid_name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(m, r) for m in FLAGS.target_models for r in FLAGS.runtimes}
    rows = [r for r in json.loads(out.read_text())["rows"] if (r["model"], r["runtime"])
            not in done] if out.exists() else []  # other models' and runtimes' rows stay
    for name, rt in ((m, r) for m in FLAGS.target_models for r in FLAGS.runtimes):
        rows += latency_target.run_model(name, [rt], [float(c) for c in FLAGS.cuts], cache,
                                         FLAGS.rounds, FLAGS.invokes, FLAGS.feedback,
                                         blocks=FLAGS.grid_blocks)
        result = {"benchmark": "latency target", "rounds": FLAGS.rounds,
                  "feedback": FLAGS.feedback, "blocks": FLAGS.grid_blocks,
                  "invokes": FLAGS.invokes, "criterion": "l1", "round_to": "auto",
                  "weights": "random (seed 0)", "environment": environment(),
                  "wall_s": round(time.time() - started, 1), "versions": card.versions(),
                  "rows": rows}
        fileio.atomic_write_text(out, json.dumps(result, indent=2))
        fileio.atomic_write_text(out.with_suffix(".md"), latency_target.markdown(result))
    print(f"latency: wrote {out} and {out.with_suffix('.md')}")


def _equal_latency():
    from benchmarks import latency_accuracy
    from tfprune.latency.cache import LatencyCache

    recipe = "".join([f"_lr{FLAGS.accuracy_lr:g}" if FLAGS.accuracy_lr != 0.01 else "",
                      f"_{FLAGS.accuracy_mix}" if FLAGS.accuracy_mix != "none" else "",
                      f"_f{FLAGS.accuracy_features:g}" if FLAGS.accuracy_features else ""])
    out = Path(FLAGS.output).with_name(f"latency_accuracy{recipe}.json")
    latency_accuracy.run(FLAGS.accuracy_data, FLAGS.accuracy_subset,
                         [float(c) for c in FLAGS.accuracy_cuts], FLAGS.accuracy_runtime,
                         FLAGS.accuracy_epochs, [int(s) for s in FLAGS.accuracy_seeds], out,
                         LatencyCache(FLAGS.latency_cache), FLAGS.rounds, FLAGS.invokes,
                         lr=FLAGS.accuracy_lr, mix=FLAGS.accuracy_mix,
                         features=FLAGS.accuracy_features)
    print(f"latency: wrote {out} and {out.with_suffix('.md')}")


def _main_job():
    from benchmarks import latency_main_job

    result = latency_main_job.run(Path(FLAGS.main_job), [int(t) for t in FLAGS.main_job_threads],
                                  FLAGS.rounds, FLAGS.invokes)
    out = Path(FLAGS.output).with_name(f"{FLAGS.main_job_name}.json")
    fileio.atomic_write_text(out, json.dumps(result, indent=2))
    fileio.atomic_write_text(out.with_suffix(".md"), latency_main_job.markdown(result))
    print(f"latency: wrote {out} and {out.with_suffix('.md')}")


def _channel_sweep():
    import keras
    import numpy as np

    from tfprune.litert import convert

    rows = []
    for precision in FLAGS.precisions:
        blobs, macs = {}, {}
        for c in (int(v) for v in FLAGS.channels):
            keras.utils.set_random_seed(0)
            x = inp = keras.Input((16, 16, c))
            for _ in range(4):
                x = keras.layers.Conv2D(c, 3, padding="same", activation="relu")(x)
            cal = np.random.default_rng(0).normal(size=(16, 16, 16, c)).astype(np.float32)
            blobs[c] = convert.convert(keras.Model(inp, x), precision, calibration=cal)
            macs[c] = 4 * 16 * 16 * 9 * c * c
        per_round = _measure(blobs, FLAGS.threads, FLAGS.rounds, FLAGS.invokes)
        for c, times in per_round.items():
            best = min(times)
            rows.append({"precision": precision, "channels": c, "macs": macs[c],
                         "latency_ms": round(best, 4),
                         "macs_per_ns": round(macs[c] / (best * 1e6), 3)})
            print(f"  {precision} c={c:3d}: {best:.4f} ms, {macs[c] / (best * 1e6):.2f} MAC/ns",
                  flush=True)
    out = Path(FLAGS.output).with_name("latency_channels.json")
    fileio.atomic_write_text(out, json.dumps({
        "benchmark": "conv channel sweep", "threads": FLAGS.threads,
        "layers": "4 x Conv2D 3x3 same + ReLU, 16x16xC -> 16x16xC", "rows": rows}, indent=2))
    lines = ["# Conv throughput vs channel count (4 x 3x3 conv, 16x16 maps, batch 1)", "",
             "| channels | " + " | ".join(f"{p} MAC/ns" for p in FLAGS.precisions) + " |",
             "| ---: |" + " ---: |" * len(FLAGS.precisions)]
    for c in sorted({r["channels"] for r in rows}):
        lines.append(f"| {c} | " + " | ".join(
            str(next(r["macs_per_ns"] for r in rows if r["channels"] == c and r["precision"] == p))
            for p in FLAGS.precisions) + " |")
    fileio.atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"latency: wrote {out} and {out.with_suffix('.md')}")


def _fits(rows):
    """Least-squares latency = fixed_ms + ns_per_mac * MACs per series (unpruned included)."""
    import numpy as np

    fits = []
    for key in sorted({(r["model"], r["precision"], r["round_to"]) for r in rows if r["level"]}):
        pts = [r for r in rows if (r["model"], r["precision"]) == key[:2]
               and (r["round_to"] == key[2] or not r["level"])]
        macs = np.array([r["macs"] for r in pts], float)
        ms = np.array([r["latency_ms"] for r in pts])
        slope, fixed = np.polyfit(macs, ms, 1)
        base = max(pts, key=lambda r: r["macs"])
        fits.append({"model": key[0], "precision": key[1], "round_to": key[2],
                     "fixed_ms": round(float(fixed), 4), "ns_per_mac": round(float(slope) * 1e6, 6),
                     "fixed_share_of_unpruned": round(float(fixed) / base["latency_ms"], 4)})
    return fits


def _markdown(result):
    lines = ["# LiteRT latency vs FLOPs after pruning", "",
             f"Single image, {result['threads']} thread(s), best round median of "
             f"{result['invokes']} invokes over {result['rounds']} interleaved rounds; "
             f"efficiency = speed-up / FLOPs reduction (goal >= {result['goal_efficiency']}).", "",
             "| model | precision | variant | MACs | size KB | ms | speed-up | paired | FLOPs x "
             "| efficiency |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['variant']} | {r['macs']:,} | "
                     f"{r['size_bytes'] / 1024:.0f} | {r['latency_ms']:.3f} | {r['speedup']:.2f} | "
                     f"{r['speedup_paired_median']:.2f} | {r['flops_reduction']:.2f} | "
                     f"{r['efficiency']:.2f} |")
    lines += ["", "Fit latency = fixed + per-MAC cost (per series, unpruned included):", "",
              "| model | precision | round_to | fixed ms | ns / MAC | fixed share of unpruned |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {f['model']} | {f['precision']} | {f['round_to']} | {f['fixed_ms']:.3f} | "
              f"{f['ns_per_mac']:.4f} | {f['fixed_share_of_unpruned']:.0%} |" for f in result["fits"]]
    return "\n".join(lines) + "\n"


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key in sorted({(r["model"], r["precision"], r["round_to"]) for r in rows}):
        pts = [r for r in rows if (r["model"], r["precision"], r["round_to"]) == key]
        pts.sort(key=lambda r: r["flops_reduction"])
        ax.plot([r["flops_reduction"] for r in pts], [r["speedup"] for r in pts], marker="o",
                label=f"{key[0]} {key[1]} round_to {key[2]}")
    top = max(r["flops_reduction"] for r in rows) * 1.05
    ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (speed-up = FLOPs reduction)")
    ax.plot([1, top], [1, GOAL * top], "k:", lw=1, label=f"goal ({GOAL})")
    ax.set_xlabel("FLOPs reduction (x)")
    ax.set_ylabel("measured LiteRT speed-up (x)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=120)


if __name__ == "__main__":
    app.run(main)
