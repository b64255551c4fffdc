"""On-device training throughput: the builtin-only `train` signature in ai_edge_litert vs
Keras 3 train_on_batch / fit, ResNet-20 unpruned and 50%-pruned (l1, params), batch 32.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.ondevice_train
Each round times every mode back to back (rotating order) on the same cached batches; a
ratio is the median over rounds of the per-round ratio (the machine is shared and noisy).
Peak memory is the VmHWM (peak RSS) of a fresh process doing only that mode (LiteRT: no TF loaded).
Goal: LiteRT >= 0.5x Keras fit (and >= the TF 2.19 Flex path, 111 img/s, not runnable here).
Writes benchmarks/results/ondevice_train.json and .md beside it.
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("model", "resnet20", "Model spec (speed does not depend on the weights).")
flags.DEFINE_string("pruned", None, "A pruned .keras; default: prune --model 50% (l1, params).")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("steps", 6, "Timed steps per mode per round.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
flags.DEFINE_integer("num_threads", 2, "LiteRT threads.")
flags.DEFINE_float("learning_rate", 0.001, "SGD learning rate of both sides (momentum 0.9, wd 5e-4).")
flags.DEFINE_string("output", "benchmarks/results/ondevice_train.json", "JSON result path.")
flags.DEFINE_bool("zoo", False, "Instead: export every zoo model (batch --batch_size) and record "
                  "its ops, Flex ops and sizes in benchmarks/results/ondevice_zoo_ops.json.")
FLAGS = flags.FLAGS
FLEX_PATH_IMG_S = 111.0  # TF 2.19 interpreter + Flex delegate, same model and batch (DEVELOPERS.md)

MEMORY_PROBE = """
import sys, numpy as np
mode, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
if mode == "litert":
    from tfprune.ondevice.runtime import TrainableRuntime
    rt = TrainableRuntime(path); b = rt.batch_size
    x = rng.normal(size=(b, 32, 32, 3)).astype(np.float32); y = rng.integers(0, 100, b)
    for _ in range(steps): rt.train_batch(x, y)
    loaded_tf = "tensorflow" in sys.modules
else:
    import keras
    from tfprune import train
    m = train.compile_sgd(keras.models.load_model(path, compile=False), 1e-3, 5e-4); b = int(sys.argv[4])
    x = rng.normal(size=(b, 32, 32, 3)).astype(np.float32); y = rng.integers(0, 100, b)
    for _ in range(steps): m.train_on_batch(x, y)
    loaded_tf = True
# VmHWM, not ru_maxrss: after fork+exec, ru_maxrss keeps the parent's high-water mark.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) / 1024, loaded_tf)
"""


def _pruned(model):
    from tfprune import graph, plan, scoring, surgery
    g = graph.build_graph(model)
    scores = scoring.compute_scores("l1", model, g)
    return surgery.apply_plan(model, plan.make_plan(g, scores, 0.5, "params", criterion="l1"), graph=g)


def _peak_mb(mode, path, batch):
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode, str(path), "3", str(batch)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), out[-1] == "True"


def _variant(name, model, workdir, data):
    import numpy as np
    from tfprune import train
    from tfprune.ondevice import export_trainable
    from tfprune.ondevice.runtime import TrainableRuntime

    x, y = data
    out = Path(workdir) / name
    start = time.time()
    manifest = export_trainable(model, out, batch_size=FLAGS.batch_size,
                                learning_rate=FLAGS.learning_rate)
    export_s = time.time() - start
    keras_path = out / "model.keras"
    model.save(keras_path)
    rt = TrainableRuntime(out / "trainable.tflite", num_threads=FLAGS.num_threads)
    keras_model = train.compile_sgd(model, FLAGS.learning_rate, 5e-4)
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch_size).take(FLAGS.steps).cache()
    rt1 = TrainableRuntime(out / "trainable.tflite", num_threads=1)
    batches = [(x[i * FLAGS.batch_size:][:FLAGS.batch_size], y[i * FLAGS.batch_size:][:FLAGS.batch_size])
               for i in range(FLAGS.steps)]
    modes = {
        "litert_train": lambda: [rt.train_batch(xb, yb) for xb, yb in batches],
        "litert_train_1thread": lambda: [rt1.train_batch(xb, yb) for xb, yb in batches],
        "keras_train_on_batch": lambda: [keras_model.train_on_batch(xb, yb) for xb, yb in batches],
        "keras_fit": lambda: keras_model.fit(ds, epochs=1, verbose=0, shuffle=False),
    }
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
              "keras_train_on_batch": float(keras_model.train_on_batch(*batches[0])[0])}
    result = {"params": int(model.count_params()), "final_losses": losses, "export_seconds": round(export_s, 1),
              "tflite_bytes": manifest["size_bytes"], "keras_bytes": keras_path.stat().st_size,
              "flex_ops": manifest["flex_ops"], "ops": manifest["ops"],
              "images_per_second": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "rounds": {k: [round(t, 1) for t in v] for k, v in times.items()}}
    for ref in ("keras_fit", "keras_train_on_batch"):
        result[f"litert_over_{ref}"] = round(statistics.median(
            a / b for a, b in zip(times["litert_train"], times[ref])), 3)
    result["litert_over_flex_path_2_19"] = round(
        result["images_per_second"]["litert_train"] / FLEX_PATH_IMG_S, 3)
    lite_mb, tf_loaded = _peak_mb("litert", out / "trainable.tflite", FLAGS.batch_size)
    result["peak_rss_mb"] = {"litert_train": round(lite_mb, 1), "litert_loaded_tf": tf_loaded,
                             "keras_train_on_batch": round(_peak_mb("keras", keras_path, FLAGS.batch_size)[0], 1)}
    return result


def _markdown(res):
    lines = ["# On-device training throughput (batch %d, %d threads)" % (res["batch_size"], res["num_threads"]),
             "", f"Model: {res['model']}. Load average at start: {res['load_average']}.", "",
             "| variant | params | LiteRT train img/s (1 thread) | Keras train_on_batch | Keras fit | "
             "LiteRT/fit | LiteRT/Flex 2.19 | .tflite MB | peak RSS LiteRT / Keras MB | Flex ops |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        ips = v["images_per_second"]
        lines.append(f"| {name} | {v['params']:,} | {ips['litert_train']} ({ips['litert_train_1thread']}) | "
                     f"{ips['keras_train_on_batch']} | "
                     f"{ips['keras_fit']} | {v['litert_over_keras_fit']} | {v['litert_over_flex_path_2_19']} | "
                     f"{v['tflite_bytes'] / 1e6:.2f} | {v['peak_rss_mb']['litert_train']} / "
                     f"{v['peak_rss_mb']['keras_train_on_batch']} | {len(v['flex_ops'])} |")
    return "\n".join(lines) + "\n"


def _zoo_ops():
    from tfprune import zoo
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
    out.write_text(json.dumps(res, indent=1))


def main(argv):
    del argv
    import os

    if FLAGS.zoo:
        return _zoo_ops()

    import numpy as np

    from tfprune import data, modelio, zoo
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
    out = Path(FLAGS.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(_markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    app.run(main)
