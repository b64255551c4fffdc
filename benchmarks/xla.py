"""Keras training with and without XLA, side by side in one run, on this machine's CPU.
Keras's "auto" leaves XLA off on machines without an accelerator, and tfprune keeps it so:
the main job's fine-tuning epoch runs no faster with XLA and pays 13-25 s more compilation
(results/xla.md). Two workloads on real images:

- `finetune`: the main job's fine-tuning step: ResNet-20 pruned to 50% of its parameters
  with a subset head (aquatic), distilled from the restricted original with feature maps and
  a cutmix copy of every batch (batch 64 + 64), as `tfprune.training.fit.finetune` runs it;
- `experiment`: the v2 sweep's step: the unpruned 100-way ResNet-20, cross-entropy, batch 128.

For each workload and mode: the first epoch's seconds (tracing and XLA compilation included)
and the median epoch time after it; and, from the same initial weights and batches, how far
the two modes' trainable weights (not a frozen teacher's) drift apart (float rounding, not a
different algorithm).

    python -m benchmarks.xla --data=sample

Writes benchmarks/results/xla.json and .md.
"""
import json
import os
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_string("data", "sample", "Data source spec.")
flags.DEFINE_string("model", "pretrained:resnet20", "Model spec.")
flags.DEFINE_string("subset", "aquatic", "Subset of the fine-tuning workload.")
flags.DEFINE_integer("epochs", 5, "Epochs per workload and mode (the first is not timed; the "
                     "experiment's epoch is 10 steps).", lower_bound=2)
flags.DEFINE_string("output", "benchmarks/results/xla", "Output stem.")
FLAGS = flags.FLAGS


def _workloads():
    """{name: (build(jit) -> compiled model, dataset, batch images)}; every build starts from
    the same weights."""
    import keras

    from tfprune import data, pruner
    from tfprune.core.head import slice_head
    from tfprune.models import loader
    from tfprune.training import distill, fit, taps

    base = loader.load_model(FLAGS.model)
    splits = data.load_subset(FLAGS.data, FLAGS.subset)
    head = data.relabel(splits)
    result = pruner.prune_model(base, "l1", 0.5, head_classes=splits.classes)
    teacher = slice_head(base, splits.classes)
    feature_taps = taps.feature_taps(result.pruned, result.plan)
    full = data.split(data.load_source(FLAGS.data), "all", 0)

    def clone(model):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        fit.set_batchnorm_momentum(copy, fit.FINETUNE_BN_MOMENTUM)
        return copy

    def finetune(jit):
        model = distill.compile_distill(clone(result.pruned), teacher, 0.01, 5e-4, 0.9,
                                        0.9, 4.0, feature_taps, 20.0)
        model.jit_compile = jit
        return model

    def experiment(jit):
        model = fit.compile_sgd(clone(base), 0.01, 1e-4)
        model.jit_compile = jit
        return model

    return {"finetune": (finetune, distill.with_mixed_views(
                data.as_dataset(head.train, 64, training=True, seed=0), "cutmix", 0), 128),
            "experiment": (experiment, data.as_dataset(full.train, 128, training=True,
                                                       seed=0).take(10), 128)}


def _time(build, ds, jit: bool, epochs: int) -> dict:
    """`fit` as the apps run it (the tf.data pipeline live): the first epoch's seconds and the
    median of the others'."""
    import keras

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model = build(jit)
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=[Timer()])
    weights = np.concatenate([np.ravel(w.numpy()) for w in model.trainable_weights])
    return {"first_epoch_s": round(times[0], 2), "epoch_s": float(np.median(times[1:])),
            "weights": weights}


def main(argv):
    del argv
    from tfprune import console, fileio
    console.quiet_logs()

    rows, load_before = [], os.getloadavg()
    for name, (build, ds, images) in _workloads().items():
        timed = {}
        for jit in (False, True, False, True):  # alternate, so drift in load hits both
            run = _time(build, ds, jit, FLAGS.epochs)
            timed.setdefault(jit, []).append(run)
            print(f"xla: {name} jit={jit}: first epoch {run['first_epoch_s']} s, "
                  f"median epoch {run['epoch_s']:.2f} s", flush=True)
        epoch = {jit: min(r["epoch_s"] for r in runs) for jit, runs in timed.items()}
        a, b = timed[False][0]["weights"], timed[True][0]["weights"]
        rows.append({"workload": name, "batch_images": images,
                     "epoch_s": {"graph": round(epoch[False], 2), "xla": round(epoch[True], 2)},
                     "first_epoch_s": {"graph": timed[False][0]["first_epoch_s"],
                                       "xla": timed[True][0]["first_epoch_s"]},
                     "speedup": round(epoch[False] / epoch[True], 2),
                     "weights_rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a))})
    out = {"model": FLAGS.model, "data": FLAGS.data, "epochs": FLAGS.epochs,
           "statistic": "best of two runs of the median epoch time, modes alternated",
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "cpus": os.cpu_count(), "rows": rows}
    stem = Path(FLAGS.output)
    fileio.atomic_write_text(stem.with_suffix(".json"), json.dumps(out, indent=1))
    md = ["# Keras training with and without XLA (CPU)", "",
          f"`fit` for {FLAGS.epochs} epochs per run, the data pipeline live; the first epoch "
          "(tracing, XLA compilation) is shown apart, the others' median is the epoch time; "
          "each mode run twice, alternating, the better kept. Load average before / after: "
          f"{load_before[0]:.1f} / {out['loadavg_after'][0]:.1f} on {os.cpu_count()} CPUs. "
          "Weight drift: relative L2 distance between the two modes' trainable weights after "
          "the same epochs from the same start (float rounding).", "",
          "| workload | images / step | epoch, graph (s) | epoch, XLA (s) | speed-up | "
          "first epoch, graph / XLA (s) | weight drift |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['workload']} | {r['batch_images']} | {r['epoch_s']['graph']} | "
           f"{r['epoch_s']['xla']} | {r['speedup']}x | {r['first_epoch_s']['graph']} / "
           f"{r['first_epoch_s']['xla']} | {r['weights_rel_diff']:.1e} |" for r in rows]
    fileio.atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    app.run(main)
