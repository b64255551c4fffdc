"""Training and inference speed of the experiment's network at its pruning levels, to size
the v2 sweep (experiments/README.md): Keras `fit` steps (batch 128, augmented tf.data, SGD,
BatchNorm momentum 0.9) and `predict` (batch 500) of ResNet-20 pruned by `l1` (normalizer
none, as the v2 protocol) at each level, on real CIFAR-100 images.

    python benchmarks/experiment_rates.py --data=npz:/work/shared/data/cifar100.npz

Writes benchmarks/results/experiment_rates.json and .md (with the load average, since the
machine is shared: read the rates as those of the conditions recorded).
"""
import json
import os
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_string("data", "npz:/work/shared/data/cifar100.npz", "Data source spec.")
flags.DEFINE_string("model", "pretrained:resnet20", "Model spec.")
flags.DEFINE_list("levels", ["0", "0.5", "0.7", "0.9"], "Pruning levels (fraction of params).")
flags.DEFINE_integer("steps", 30, "Timed training steps per level.", lower_bound=5)
flags.DEFINE_integer("warmup", 5, "Untimed training steps first.", lower_bound=1)
flags.DEFINE_integer("infer_images", 5000, "Images timed for inference.", lower_bound=500)
flags.DEFINE_string("output", "benchmarks/results/experiment_rates", "Output stem.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import keras

    from tfprune import data, pruner
    from tfprune.experiments import protocol
    from tfprune.models import loader
    from tfprune import fileio
    from tfprune.training import fit

    splits = data.split(data.load_source(FLAGS.data), "all", 0)
    base = loader.load_model(FLAGS.model)
    rows, load_before = [], os.getloadavg()
    for level in map(float, FLAGS.levels):
        model = (pruner.prune_model(base, "l1", level, normalizer="none").pruned
                 if level else keras.models.clone_model(base))
        fit.set_batchnorm_momentum(model, 0.9)
        fit.compile_sgd(model, 0.01, 1e-4)
        ds = data.as_dataset(splits.train, 128, training=True, seed=0).repeat()
        times = []

        class Timer(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                times.append(time.perf_counter() - self.t0)

        model.fit(ds, epochs=1, steps_per_epoch=FLAGS.warmup + FLAGS.steps, verbose=0,
                  callbacks=[Timer()], shuffle=False)
        step = sorted(times[FLAGS.warmup:])[len(times[FLAGS.warmup:]) // 2]
        evalset = splits.test.take(np.arange(FLAGS.infer_images))
        protocol.evaluate(model, {"test": evalset}, {"all": splits.classes})  # trace
        t0 = time.perf_counter()
        protocol.evaluate(model, {"test": evalset}, {"all": splits.classes})
        infer = FLAGS.infer_images / (time.perf_counter() - t0)
        rows.append({"level": level, "params": int(model.count_params()),
                     "train_step_s": round(step, 4), "train_img_s": round(128 / step, 1),
                     "infer_img_s": round(infer, 1)})
        print(json.dumps(rows[-1]), flush=True)
        keras.backend.clear_session()
    out = {"model": FLAGS.model, "data": FLAGS.data, "batch_size": 128,
           "steps_timed": FLAGS.steps, "statistic": "median step time",
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "cpus": os.cpu_count(), "rows": rows}
    stem = Path(FLAGS.output)
    fileio.atomic_write_text(stem.with_suffix(".json"), json.dumps(out, indent=1))
    md = ["# Experiment rates (ResNet-20, batch 128)", "",
          f"Load average before / after: {load_before[0]:.1f} / {out['loadavg_after'][0]:.1f} "
          f"on {os.cpu_count()} CPUs (a shared machine: other jobs ran beside this).", "",
          "| level | params | train step (s) | train img/s | inference img/s |",
          "|---|---|---|---|---|"]
    md += [f"| {100 * r['level']:.0f}% | {r['params']:,} | {r['train_step_s']} | "
           f"{r['train_img_s']} | {r['infer_img_s']} |" for r in rows]
    fileio.atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")


if __name__ == "__main__":
    app.run(main)
