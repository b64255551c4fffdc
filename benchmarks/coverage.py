"""keras.applications coverage: every model pruned equivalently, or refused with its reasons.

flock /tmp/tfprune_bench.lock nice -n 10 .venv/bin/python -m benchmarks.coverage
For every keras.applications constructor (weights=None, 10 classes, no softmax) built at the
smallest input it accepts of `--sizes`: flatten nested models (`tfprune.core.flatten`), read
the channel graph, give every 1-D weight random values (so no channel is trivially zero),
plan `--level` of the parameters away (l1, global), apply the plan, and compare the pruned
model with the original whose dropped weights are zeroed on `--images` real test images of
`--data` resized to the input (max |difference| relative to the output scale, tolerance
`--atol`). Timed: flatten, graph, plan and apply (the surgery). A model with nothing
prunable is "refused" and lists the reason of every blocked group; a model that builds at
none of the sizes says why. Writes benchmarks/results/coverage.json after every model
(re-running resumes; `--fresh` starts over) and coverage.md beside it.
"""
import collections
import gc
import json
import os
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_list("models", [], "keras.applications constructors (default: every one).")
flags.DEFINE_list("sizes", ["32", "75"], "Input sizes tried in order; the first that builds.")
flags.DEFINE_float("level", 0.5, "Fraction of parameters to remove.", lower_bound=0.0,
                   upper_bound=0.95)
flags.DEFINE_string("data", "sample", "Real images: sample, npz:PATH, tfds:NAME, folder:PATH.")
flags.DEFINE_integer("images", 4, "Test images compared.", lower_bound=1, upper_bound=64)
flags.DEFINE_float("atol", 2e-4, "Tolerance relative to max(1, max |output|).",
                   lower_bound=0.0)
flags.DEFINE_bool("fresh", False, "Ignore results already in --output.")
flags.DEFINE_bool("report_only", False, "Only rewrite the Markdown from --output's JSON.")
flags.DEFINE_string("output", "benchmarks/results/coverage.json", "JSON result path.")
FLAGS = flags.FLAGS


def constructors() -> dict:
    """{name: (family, constructor)} of keras.applications (family: its module's name)."""
    import keras
    apps = keras.applications
    return {name: (getattr(apps, name).__module__.rsplit(".", 1)[-1], getattr(apps, name))
            for name in sorted(n for n in dir(apps) if n[0].isupper())}


def build(fn, sizes):
    errors = []
    for size in sizes:
        try:
            return fn(weights=None, input_shape=(size, size, 3), classes=10,
                      classifier_activation=None), size
        except ValueError as err:
            errors.append(f"{size}: {str(err).splitlines()[0][:160]}")
    raise ValueError("; ".join(errors))


def random_vectors(model, seed=0):
    """Every 1-D weight random (biases, BatchNorm/LayerNorm gamma and beta, LayerScale,
    BatchNorm variances in [0.5, 2]): at their initial values (zeros, ones, 1e-6) a dropped
    channel could vanish from the output whether or not the surgery is right. Kernels keep
    their random initial values."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if any(w.ndim == 1 for w in weights):
            layer.set_weights([
                w if w.ndim != 1 else
                (rng.uniform(0.5, 2.0, w.shape) if "variance" in v.path
                 else rng.normal(0.0, 0.5, w.shape)).astype(w.dtype)
                for w, v in zip(weights, layer.weights)])


def images(source, size, n):
    import tensorflow as tf
    x = source.test.x[:n].astype("float32")
    return (tf.image.resize(x, (size, size)).numpy() if x.shape[1] != size else x) / 127.5 - 1.0


def blocked_reasons(g) -> list:
    return [{"members": b["members"][:3] + (["..."] if len(b["members"]) > 3 else []),
             "channels": b["channels"],
             "reasons": sorted({f"{r['layer']}: {r['reason']}" for r in b["blocked_by"]})}
            for b in g.describe_blocked()]


def measure(name, fn, source) -> dict:
    import numpy as np
    from tfprune import scoring
    from tfprune.core import flatten, graph, plan as plan_mod, surgery

    t = time.perf_counter()
    model, size = build(fn, [int(s) for s in FLAGS.sizes])
    row = {"input": size, "build_s": round(time.perf_counter() - t, 2),
           "params": int(model.count_params())}
    t = time.perf_counter()
    model, info = flatten.flatten(model)
    row["flatten_s"] = round(time.perf_counter() - t, 3)
    row["flattened"] = info.describe() if info else None
    random_vectors(model)
    t = time.perf_counter()
    g = graph.build_graph(model)
    row["graph_s"] = round(time.perf_counter() - t, 3)
    row["layers"] = len(g.spec.layers)
    row["groups"], row["prunable_groups"] = len(g.groups), len(g.prunable_groups())
    row["blocked"] = blocked_reasons(g)
    row["blocked_reasons"] = dict(collections.Counter(
        r.split(": ", 1)[1] for b in row["blocked"] for r in b["reasons"]).most_common())
    if not g.prunable_groups():
        row["status"] = "refused"
        return row
    t = time.perf_counter()
    plan = plan_mod.make_plan(g, scoring.compute_scores("l1", model, g), FLAGS.level,
                              "params", "global")
    row["plan_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    pruned = surgery.apply_plan(model, plan, graph=g)
    row["surgery_s"] = round(time.perf_counter() - t, 3)
    row["params_after"] = int(pruned.count_params())
    row["achieved_level"] = round(plan["achieved"]["params_level"], 4)
    x = images(source, size, FLAGS.images)
    a = np.asarray(pruned(x))
    del pruned
    b = np.asarray(surgery.zero_dropped(model, plan, graph=g, in_place=True)(x))
    scale = max(1.0, float(np.abs(b).max()))
    row["max_diff_relative"] = float(np.abs(a - b).max() / scale)
    row["status"] = ("pruned equivalently" if row["max_diff_relative"] <= FLAGS.atol
                     else "NOT equivalent")
    return row


def markdown(results: dict, meta: dict, missing=()) -> str:
    done = [r for r in results.values() if r.get("status") == "pruned equivalently"]
    lines = [
        "# keras.applications coverage", "",
        f"Every keras.applications model (weights=None, 10 classes) at the smallest input of "
        f"{', '.join(FLAGS.sizes)} px it builds at, nested models flattened, every 1-D "
        f"weight (biases, norms, scales) random, {meta['level']:.0%} of the parameters pruned (l1, global), the "
        f"pruned model compared with the original with dropped weights zeroed on "
        f"{meta['images']} real `{meta['data']}` test images (tolerance {meta['atol']:g} of the "
        f"output scale). {len(done)} of {len(results)} pruned equivalently. Surgery = "
        f"`apply_plan` (edited configs, sliced weights, `from_config`). 2 shared cores, "
        f"load average {meta['load_average_1min']:.1f} at the end.", "",
        "| family | model | input | params | pruned params (level) | groups prunable / all | "
        "status | max rel. diff | flatten s | graph s | surgery s |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, r in sorted(results.items(), key=lambda kv: (kv[1]["family"], kv[0])):
        if "error" in r:
            lines.append(f"| {r['family']} | {name} | | | | | build failed: {r['error']} | | | | |")
            continue
        after = (f"{r['params_after']:,} ({r['achieved_level']:.3f})" if "params_after" in r
                 else "-")
        diff = f"{r['max_diff_relative']:.1e}" if "max_diff_relative" in r else "-"
        lines.append(
            f"| {r['family']} | {name} | {r['input']} | {r['params']:,} | {after} | "
            f"{r['prunable_groups']} / {r['groups']} | {r['status']} | {diff} | "
            f"{r['flatten_s']:.2f} | {r['graph_s']:.2f} | {r.get('surgery_s', 0):.2f} |")
    lines += ["", "## Why groups stay (blocked groups per reason)", "",
              "| model | flattened | blocked groups: reason (count) |", "| --- | --- | --- |"]
    for name, r in sorted(results.items(), key=lambda kv: (kv[1]["family"], kv[0])):
        if "error" not in r:
            why = "; ".join(f"{k} ({v})" for k, v in r["blocked_reasons"].items())
            flat = "yes" if r["flattened"] else "no"
            lines.append(f"| {name} | {flat} | {why} |")
    lines += ["", "Every blocked group with its members and reasons: `coverage.json` "
              "(`blocked`).", ""]
    if missing:
        lines += [f"Not measured yet: {', '.join(missing)}.", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    import keras
    import tensorflow as tf  # noqa: F401

    from tfprune import data, fileio
    from tfprune.models import cards

    path = Path(FLAGS.output)
    known = constructors()
    names = FLAGS.models or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"coverage: not keras.applications models: {', '.join(unknown)}")
    previous = {}
    if path.exists() and not FLAGS.fresh:
        previous = json.loads(path.read_text()).get("models", {})
    if FLAGS.report_only:
        out = json.loads(path.read_text())
        missing = [n for n in known if n not in out["models"]]
        fileio.atomic_write_text(path.with_suffix(".md"), markdown(out["models"], out, missing))
        return
    source = data.load_source(FLAGS.data)
    results = {}
    meta = {"benchmark": "coverage", "level": FLAGS.level, "data": FLAGS.data,
            "images": FLAGS.images, "atol": FLAGS.atol, "sizes": FLAGS.sizes}
    for name in names:
        family, fn = known[name]
        if name in previous:
            results[name] = previous[name]
            continue
        try:
            row = measure(name, fn, source)
        except ValueError as err:
            row = {"error": str(err)}
        results[name] = {"family": family, **row}
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "blocked"}),
              flush=True)
        meta.update(load_average_1min=os.getloadavg()[0], cpus=os.cpu_count(),
                    versions=cards.versions())
        out = dict(meta, models={**previous, **results})
        fileio.atomic_write_text(path, json.dumps(out, indent=1))
        fileio.atomic_write_text(path.with_suffix(".md"), markdown(out["models"], meta))
        keras.backend.clear_session()
        gc.collect()


if __name__ == "__main__":
    app.run(main)
