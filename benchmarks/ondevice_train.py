"""On-device training throughput: the builtin-only `train` signature in ai_edge_litert vs
Keras 3 train_on_batch / fit and the standard Flex-based signature in TF 2.19, ResNet-20
unpruned and 50%-pruned (l1, params), batch 32.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.ondevice_train \
    --flex_python=/tmp/tf219full/bin/python
Modes: litert_train (--conv_impl lowering, XNNPACK delegate, --num_threads), its 1-thread
twin, litert_conv_builtin (the "conv" lowering on builtin kernels only, the design before
conv_impl), Keras train_on_batch and fit, and with --flex_python (a venv with the full
`tensorflow==2.19.0` wheel) flex_2_19 / flex_2_19_1thread: benchmarks/flex_path.py workers
running TF autodiff's Flex signature in TF 2.19's own interpreter (default delegates).
Each round times every mode back to back (rotating order) on the same cached batches; a
ratio is the median over rounds of the per-round ratio (the machine is shared and noisy).
Peak memory is the VmHWM (peak RSS) of a fresh process doing only that mode (LiteRT: no TF loaded).
Goal: LiteRT >= 0.5x Keras fit and >= the Flex path (111 img/s on a quiet machine).
Writes benchmarks/results/ondevice_train.json and .md beside it.
"""
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

from tfprune import fileio

flags.DEFINE_string("model", "resnet20", "Model spec (speed does not depend on the weights).")
flags.DEFINE_string("pruned", None, "A pruned .keras; default: prune --model 50% (l1, params).")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("steps", 6, "Timed steps per mode per round.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
flags.DEFINE_integer("num_threads", 2, "LiteRT threads.")
flags.DEFINE_enum("conv_impl", "matmul", ["matmul", "conv"], "Conv2D lowering of litert_train.")
flags.DEFINE_string("flex_python", "", "Python of a venv with tensorflow==2.19.0 (Flex runs in its "
                    "interpreter); empty: no Flex modes, the ratio uses the recorded 111 img/s.")
flags.DEFINE_float("learning_rate", 0.001, "SGD learning rate of both sides (momentum 0.9, wd 5e-4).")
flags.DEFINE_string("output", "benchmarks/results/ondevice_train.json", "JSON result path.")
flags.DEFINE_bool("zoo", False, "Instead: export every zoo model (batch --batch_size) and record "
                  "its ops, Flex ops and sizes in benchmarks/results/ondevice_zoo_ops.json.")
FLAGS = flags.FLAGS
FLEX_PATH_IMG_S = 111.0  # TF 2.19 interpreter + Flex delegate, quiet machine (DEVELOPERS.md)
FLEX_SCRIPT = Path(__file__).with_name("flex_path.py")

PROBE = Path(__file__).with_name("train_probe.py")


def _pruned(model):
    from tfprune import scoring
    from tfprune.core import graph
    from tfprune.core import plan
    from tfprune.core import surgery
    g = graph.build_graph(model)
    scores = scoring.compute_scores("l1", model, g)
    return surgery.apply_plan(model, plan.make_plan(g, scores, 0.5, "params", criterion="l1"), graph=g)


def _peak_mb(mode, path, batch):
    out = subprocess.run([sys.executable, str(PROBE), "peak", mode, str(path), "3", str(batch)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), out[-1] == "True"


class _FlexWorker:
    """benchmarks/flex_path.py `serve` in the TF 2.19 venv: one `train` run per request."""

    def __init__(self, keras_path, workdir, data, threads):
        import numpy as np

        tflite, xy = Path(workdir) / "flex.tflite", (Path(workdir) / "x.npy", Path(workdir) / "y.npy")
        if not tflite.exists():
            subprocess.run([FLAGS.flex_python, str(FLEX_SCRIPT), "export", str(keras_path), str(tflite),
                            str(FLAGS.batch_size), str(FLAGS.learning_rate)],
                           check=True, capture_output=True, text=True)
        for path, array in zip(xy, data):
            np.save(path, array)
        self.tflite_bytes = tflite.stat().st_size
        self.proc = subprocess.Popen([FLAGS.flex_python, str(FLEX_SCRIPT), "serve", str(tflite),
                                      str(threads), *map(str, xy)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.version = self.proc.stdout.readline().split()[-1]   # "ready <tf version>"

    def run(self):
        self.proc.stdin.write(f"{FLAGS.steps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline().split()[1])      # the last loss

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _variant(name, model, workdir, data):
    from tfprune.training import fit as train
    from tfprune.ondevice import export_trainable
    from tfprune.ondevice.runtime import TrainableRuntime

    x, y = data
    out = Path(workdir) / name
    start = time.time()
    manifest = export_trainable(model, out, batch_size=FLAGS.batch_size,
                                learning_rate=FLAGS.learning_rate, conv_impl=FLAGS.conv_impl)
    export_s = time.time() - start
    before = export_trainable(model, out / "conv", batch_size=FLAGS.batch_size,
                              learning_rate=FLAGS.learning_rate, conv_impl="conv")
    keras_path = out / "model.keras"
    model.save(keras_path)
    tflite = out / "trainable.tflite"
    rt = TrainableRuntime(tflite, num_threads=FLAGS.num_threads)
    rt1 = TrainableRuntime(tflite, num_threads=1)
    rt_conv = TrainableRuntime(out / "conv" / "trainable.tflite", num_threads=FLAGS.num_threads,
                               xnnpack=False)
    keras_model = train.compile_sgd(model, FLAGS.learning_rate, 5e-4)
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch_size).take(FLAGS.steps).cache()
    batches = [(x[i * FLAGS.batch_size:][:FLAGS.batch_size], y[i * FLAGS.batch_size:][:FLAGS.batch_size])
               for i in range(FLAGS.steps)]
    modes = {
        "litert_train": lambda: [rt.train_batch(xb, yb) for xb, yb in batches],
        "litert_train_1thread": lambda: [rt1.train_batch(xb, yb) for xb, yb in batches],
        "litert_conv_builtin": lambda: [rt_conv.train_batch(xb, yb) for xb, yb in batches],
        "keras_train_on_batch": lambda: [keras_model.train_on_batch(xb, yb) for xb, yb in batches],
        "keras_fit": lambda: keras_model.fit(ds, epochs=1, verbose=0, shuffle=False),
    }
    flex = {}
    if FLAGS.flex_python:
        for key, threads in (("flex_2_19", FLAGS.num_threads), ("flex_2_19_1thread", 1)):
            flex[key] = _FlexWorker(keras_path, out, (x[:FLAGS.steps * FLAGS.batch_size],
                                                      y[:FLAGS.steps * FLAGS.batch_size]), threads)
            modes[key] = flex[key].run
    for fn in modes.values():  # warm-up: tracing, allocation
        fn()
    times = {k: [] for k in modes}
    names = list(modes)
    for r in range(FLAGS.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            modes[k]()
            times[k].append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - t))
    losses = {"litert_train": rt.train_batch(*batches[0])[0],
              "litert_conv_builtin": rt_conv.train_batch(*batches[0])[0],
              "keras_train_on_batch": float(keras_model.train_on_batch(*batches[0])[0])}
    result = {"params": int(model.count_params()), "final_losses": losses, "export_seconds": round(export_s, 1),
              "conv_impl": FLAGS.conv_impl, "tflite_bytes": manifest["size_bytes"],
              "tflite_bytes_conv": before["size_bytes"], "keras_bytes": keras_path.stat().st_size,
              "flex_ops": manifest["flex_ops"], "ops": manifest["ops"], "ops_conv": before["ops"],
              "images_per_second": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "rounds": {k: [round(t, 1) for t in v] for k, v in times.items()}}
    refs = ["keras_fit", "keras_train_on_batch", "litert_conv_builtin", *flex]
    for ref in refs:
        result[f"litert_over_{ref}"] = round(statistics.median(
            a / b for a, b in zip(times["litert_train"], times[ref])), 3)
    ours = max(("litert_train", "litert_train_1thread"), key=lambda k: statistics.median(times[k]))
    result["litert_best_mode"] = ours
    result["litert_best_over_keras_fit"] = round(statistics.median(
        a / b for a, b in zip(times[ours], times["keras_fit"])), 3)
    if flex:  # best thread count on each side, per-round ratio
        best = max(flex, key=lambda k: statistics.median(times[k]))
        ratio = lambda a, b: round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)
        result["flex"] = {"tf_version": flex[best].version, "tflite_bytes": flex[best].tflite_bytes,
                          "best_mode": best, "litert_over_best": result[f"litert_over_{best}"],
                          "litert_best_over_best": ratio(ours, best),
                          "best_over_keras_fit": ratio(best, "keras_fit")}
        for worker in flex.values():
            worker.close()
    result["litert_over_flex_path_2_19"] = round(
        result["images_per_second"]["litert_train"] / FLEX_PATH_IMG_S, 3)
    lite_mb, tf_loaded = _peak_mb("litert", tflite, FLAGS.batch_size)
    result["peak_rss_mb"] = {"litert_train": round(lite_mb, 1), "litert_loaded_tf": tf_loaded,
                             "keras_train_on_batch": round(_peak_mb("keras", keras_path, FLAGS.batch_size)[0], 1)}
    return result


# perf symbols of a kernel's Eval (inclusive time) -> op type; XNNPACK's delegate kernel and GEMM.
OP_SYMBOL = re.compile(r"tflite::ops::builtin::([a-z_0-9]+)::.*Eval")
OP_NAMES = {"conv": "CONV_2D", "select": "SELECT_V2", "reduce": "SUM/MEAN", "activations": "RELU",
            "comparisons": "GREATER/LESS/EQUAL", "depthwise_conv": "DEPTHWISE_CONV_2D"}
XNN_SYMBOLS = {"XNNPACK delegate (all)": "tflite::xnnpack::(anonymous namespace)::SubgraphInvoke",
               "  of which GEMM (BATCH_MATMUL)": "xnn_compute_grouped_gemm"}


def _op_shares(tflite, xnnpack, steps=8):
    """(ms per step on 1 thread, {op type: share of the interpreter's time}) from `perf record`
    of a LiteRT-only process running `train` (inclusive time of each kernel's Eval)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        ms = float(subprocess.run(["perf", "record", "-q", "-g", "-o", str(data), sys.executable, str(PROBE),
                                   "cpu_ms", str(tflite), str(int(xnnpack)), str(steps)],
                                  capture_output=True, text=True, check=True).stdout.split()[-1])
        report = subprocess.run(["perf", "report", "-i", str(data), "--children", "--sort", "symbol",
                                 "--stdio", "-g", "none"], capture_output=True, text=True, check=True).stdout
    inclusive = {}
    for line in report.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].endswith("%") and parts[2] == "[.]":
            inclusive.setdefault(parts[3].split("  ")[0].strip(), float(parts[0][:-1]))
    total = inclusive.get("tflite::Subgraph::Invoke") or 100.0
    shares = {}
    for symbol, pct in inclusive.items():
        m = OP_SYMBOL.search(symbol)
        if m:
            name = OP_NAMES.get(m.group(1), m.group(1).upper())
            shares[name] = max(shares.get(name, 0.0), pct / total)
    for name, symbol in XNN_SYMBOLS.items():
        if symbol in inclusive:
            shares[name] = inclusive[symbol] / total
    return ms, shares


def _breakdown(after, before):
    import shutil
    if not shutil.which("perf"):
        return {"error": "perf not found: no per-op breakdown"}
    res = {}
    for key, path, xnn in (("before", before, False), ("after", after, True)):
        ms, shares = _op_shares(path, xnn)
        res[key] = {"ms_per_step_1thread_cpu": round(ms, 1), "xnnpack": xnn,
                    "shares": {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}}
    return res


def _markdown(res):
    lines = ["# On-device training throughput (batch %d, %d threads)" % (res["batch_size"], res["num_threads"]),
             "", f"Model: {res['model']}. Load average at start: {res['load_average']:.2f} (2 cores, shared). "
             "Images/s are medians over interleaved rounds; ratios are medians of per-round ratios.", "",
             "LiteRT/X: best LiteRT thread count over X; Flex best: its best thread count.", "",
             "| variant | params | LiteRT train (1 thread) | before: conv lowering, builtin | Flex TF 2.19 "
             "(1 thread) | Keras train_on_batch | Keras fit | LiteRT/fit | LiteRT/Flex best | .tflite MB "
             "| peak RSS LiteRT / Keras MB | Flex ops |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        ips = v["images_per_second"]
        flex = (f"{ips['flex_2_19']} ({ips['flex_2_19_1thread']})" if "flex_2_19" in ips else "-")
        lines.append(f"| {name} | {v['params']:,} | {ips['litert_train']} ({ips['litert_train_1thread']}) | "
                     f"{ips['litert_conv_builtin']} | {flex} | {ips['keras_train_on_batch']} | "
                     f"{ips['keras_fit']} | {v['litert_best_over_keras_fit']} | "
                     f"{v['flex']['litert_best_over_best'] if 'flex' in v else '-'} | "
                     f"{v['tflite_bytes'] / 1e6:.2f} | {v['peak_rss_mb']['litert_train']} / "
                     f"{v['peak_rss_mb']['keras_train_on_batch']} | {len(v['flex_ops'])} |")
    bd = res.get("breakdown", {})
    if "after" in bd:
        keys = sorted(set(bd["before"]["shares"]) | set(bd["after"]["shares"]),
                      key=lambda k: -max(bd["before"]["shares"].get(k, 0), bd["after"]["shares"].get(k, 0)))
        lines += ["", f"Where a {res['model']} train step spends its time (1 thread, `perf record`, "
                  "inclusive time of each kernel / the XNNPACK delegate; share of the interpreter's time):",
                  "", "| op type | before: conv lowering, builtin | after: %s lowering, XNNPACK |" % res["conv_impl"],
                  "|---|---|---|",
                  f"| ms per step (CPU) | {bd['before']['ms_per_step_1thread_cpu']} | "
                  f"{bd['after']['ms_per_step_1thread_cpu']} |"]
        for k in keys:
            b, a = bd["before"]["shares"].get(k, 0), bd["after"]["shares"].get(k, 0)
            if max(a, b) >= 0.005:
                lines.append(f"| {k} | {b:.1%} | {a:.1%} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """Why 2 threads were no faster than 1 on builtin kernels: on x86 LiteRT's CONV_2D with a
non-constant filter (every conv of a training graph: forward, the dilated-conv filter gradient)
runs im2col + `cpu_backend_gemm`, whose float path is Eigen's single-threaded GEMM (no ruy on
x86; the multithreaded Eigen conv kernel requires a constant filter), and TRANSPOSE_CONV the
same; the builtin BATCH_MATMUL is a reference loop. XNNPACK refuses variable conv filters but
runs BATCH_MATMUL with two dynamic operands, so `conv_impl=matmul` (the default) lowers every
conv, forward and both gradients, to BATCH_MATMULs (grads.matmul_conv2d): a stride-1 conv is
one GEMM per image over the flattened image with only its kw column shifts concatenated, all
kernel rows in one wider GEMM whose outputs are summed shifted (XNNPACK's CONCATENATION
interleaves C floats at a time, so full im2col's 9x concatenation cost more than the GEMMs);
a strided conv is a stride-1 conv over SPACE_TO_DEPTH blocks. On a loaded machine XNNPACK's
spinning worker threads make 2 threads slower than 1 (the Flex path's default XNNPACK even
more so); its TF kernels (Conv2DBackpropFilter) use TF's own thread pool whatever num_threads
says."""


def _zoo_ops():
    from tfprune.models import zoo
    from tfprune.ondevice import export_trainable

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in zoo.MODELS:
            start = time.time()
            m = export_trainable(zoo.build(name), Path(tmp) / name, batch_size=FLAGS.batch_size)
            res[name] = {"export_seconds": round(time.time() - start, 1), "flex_ops": m["flex_ops"],
                         "flex_required": m["flex_required"], "tflite_bytes": m["size_bytes"],
                         "trainable_variables": len(m["trainable_variables"]), "ops": m["ops"]}
            print(name, res[name]["flex_ops"], res[name]["export_seconds"], flush=True)
    out = Path(FLAGS.output).with_name("ondevice_zoo_ops.json")
    fileio.atomic_write_text(out, json.dumps(res, indent=1))


def main(argv):
    del argv
    import os

    if FLAGS.zoo:
        return _zoo_ops()

    import numpy as np

    from tfprune import data
    from tfprune.models import loader as modelio
    from tfprune.models import zoo
    from tfprune.ondevice.reference import calibrate_batchnorm

    model, model_name = modelio.load_model(FLAGS.model), FLAGS.model
    source = data.load_source("sample")
    x = data.normalize_np(source.train.x[:FLAGS.batch_size * FLAGS.steps])
    y = source.train.y[:FLAGS.batch_size * FLAGS.steps].astype(np.int32)
    if FLAGS.model in zoo.MODELS:  # random weights: give BN sane statistics, or the
        calibrate_batchnorm(model, x)  # frozen-BN device step diverges into inf/NaN/denormals
    pruned = modelio.load_model(FLAGS.pruned) if FLAGS.pruned else _pruned(model)
    res = {"model": model_name, "batch_size": FLAGS.batch_size, "num_threads": FLAGS.num_threads,
           "steps": FLAGS.steps, "rounds": FLAGS.rounds, "load_average": os.getloadavg()[0],
           "flex_path_2_19_images_per_second": FLEX_PATH_IMG_S, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in (("resnet20", model), ("resnet20_pruned50", pruned)):
            res["variants"][name] = _variant(name, m, tmp, (x, y))
            print(name, json.dumps(res["variants"][name]["images_per_second"]), flush=True)
        res["conv_impl"] = FLAGS.conv_impl
        res["breakdown"] = _breakdown(Path(tmp) / "resnet20" / "trainable.tflite",
                                      Path(tmp) / "resnet20" / "conv" / "trainable.tflite")
    out = Path(FLAGS.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(out, json.dumps(res, indent=1))
    fileio.atomic_write_text(out.with_suffix(".md"), _markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    app.run(main)
