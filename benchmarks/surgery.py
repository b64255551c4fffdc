"""Pruning speed: median time to read the channel graph, plan and apply a 50% plan.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.surgery
For ResNet-56 and MobileNetV2 (zoo, 32x32), after TensorFlow is imported and the model is
built (neither timed), each repeat times: `build_graph` (read the model, channel groups),
`plan` (l1 scores + `make_plan` for 50% of parameters, global), `apply` (`apply_plan`: edited
configs, sliced weights, `from_config` rebuild). Side by side, each repeat also times plain
`Model.from_config(model.get_config())` of the unpruned model: the floor any config-based
rebuild pays. Goal: under 1 s in total for ResNet-56.
Writes benchmarks/results/surgery.json (and a Markdown table beside it). The machine is
shared; the 1-minute load average is recorded with the result.
"""
import json
import os
import statistics
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_list("models", ["resnet56", "mobilenetv2"], "Zoo models to time.")
flags.DEFINE_integer("repeats", 7, "Timed repeats per model (after one warm-up).")
flags.DEFINE_float("level", 0.5, "Pruning level (fraction of parameters).")
flags.DEFINE_string("output", "benchmarks/results/surgery.json", "JSON result path.")
FLAGS = flags.FLAGS
GOAL_SECONDS = {"resnet56": 1.0}


def time_once(model, level):
    from tfprune import scoring
    from tfprune.core import graph
    from tfprune.core import plan
    from tfprune.core import surgery
    t0 = time.perf_counter()
    g = graph.build_graph(model)
    t1 = time.perf_counter()
    p = plan.make_plan(g, scoring.compute_scores("l1", model, g), level, "params", "global")
    t2 = time.perf_counter()
    pruned = surgery.apply_plan(model, p, graph=g)
    t3 = time.perf_counter()
    type(model).from_config(model.get_config())  # the floor: Keras rebuilding the same model
    t4 = time.perf_counter()
    return {"graph": t1 - t0, "plan": t2 - t1, "apply": t3 - t2, "total": t3 - t0,
            "keras_from_config": t4 - t3}, p, pruned


def main(argv):
    del argv
    import tensorflow as tf  # noqa: F401  (imported before timing)

    from tfprune import fileio
    from tfprune.models import cards as card
    from tfprune.models import zoo

    results = {}
    for name in FLAGS.models:
        model = zoo.build(name)
        time_once(model, FLAGS.level)  # warm-up
        runs = []
        for _ in range(FLAGS.repeats):
            timing, p, pruned = time_once(model, FLAGS.level)
            runs.append(timing)
        median = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
        results[name] = {"median_seconds": median, "repeats": FLAGS.repeats,
                         "params_before": model.count_params(),
                         "params_after": pruned.count_params(),
                         "achieved_level": p["achieved"]["level"], "layers": len(model.layers)}
        if name in GOAL_SECONDS:
            results[name]["goal_seconds"] = GOAL_SECONDS[name]
            results[name]["goal_met"] = median["total"] < GOAL_SECONDS[name]
        print(name, json.dumps(results[name]))
    out = {"benchmark": "surgery", "level": FLAGS.level, "models": results,
           "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
           "versions": card.versions()}
    path = Path(FLAGS.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(path, json.dumps(out, indent=1))
    rows = ["| model | graph s | plan s | apply s | total s | Keras from_config s | params | level |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        m = r["median_seconds"]
        rows.append(f"| {name} | {m['graph']:.3f} | {m['plan']:.3f} | {m['apply']:.3f} | "
                    f"{m['total']:.3f} | {m['keras_from_config']:.3f} | {r['params_before']:,} -> {r['params_after']:,} | "
                    f"{r['achieved_level']:.3f} |")
    fileio.atomic_write_text(path.with_suffix(".md"), "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)
