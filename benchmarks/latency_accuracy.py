"""The `--equal_latency` run of benchmarks/latency.py: accuracy of latency-targeted pruning
against params-targeted pruning at the same MEASURED LiteRT latency (issue #16).

For each requested latency cut the model (pretrained ResNet-20, the subset head) is pruned
with `act_l2` to that cut of predicted latency (`target=latency`, round_to=auto, the
runtime's latency model). The params-targeted plan (same criterion, round_to=auto) is then
searched for the params level whose measured latency (float32, 1 thread, the latency
model's clock, timed side by side with the latency-targeted model in interleaved rounds)
equals it: bisection on the paired latency ratio, keeping the closest level on each side
(slower and faster; their ms are the latency-targeted model's ms times the paired ratio). All of them get the same fine-tuning (distillation from the original
restricted to the subset, as benchmarks/adaptation.py's `levels` part), and accuracy at the
latency-targeted model's latency is interpolated linearly in measured latency between the
two params levels. Nothing is chosen on accuracy: the levels come from latency only; val
and test accuracy are both reported, the comparison is on test.

Rows go to benchmarks/results/latency_accuracy.json (a finished row is skipped on a re-run)
and latency_accuracy.md is rendered from them.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from tfprune import fileio

SEARCH_STEPS = 7


def _rows(path: Path) -> list:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _put(path: Path, row: dict, header: dict) -> list:
    rows = [r for r in _rows(path) if r["id"] != row["id"]] + [row]
    result = {**header, "rows": rows}
    fileio.atomic_write_text(path, json.dumps(result, indent=1))
    fileio.atomic_write_text(path.with_suffix(".md"), markdown(result))
    return rows


def _convert(model) -> bytes:
    from tfprune.litert import convert

    return convert.convert(model, "float32")


def _ratio(candidate: bytes, reference: bytes, threads: int, rounds: int, invokes: int):
    """(median paired ratio candidate / reference, candidate ms, reference ms), side by side."""
    from tfprune.latency import timing

    per = timing.time_interleaved({"c": candidate, "r": reference}, threads, rounds, invokes)
    ratio = timing.paired_ratio(per, "c", "r")
    return ratio, min(per["c"]), min(per["r"])


def run(data: str, subset: str, cuts, runtime: str, epochs: int, seeds, out: Path, cache,
        rounds: int = 7, invokes: int = 20, log=print, lr: float = 0.01, mix: str = "none",
        features: float = 0.0) -> list:
    """`lr`, `mix` and `features` (the feature maps' loss weight, tfprune.training.taps):
    the fine-tuning recipe every arm gets."""
    import keras

    from tfprune import data as data_mod, pruner
    from tfprune.core import counts, head
    from tfprune.core import plan as plan_mod
    from tfprune.core import surgery
    from tfprune.latency import parse_runtime, plan_terms
    from tfprune.models import loader
    from tfprune.training import fit as train
    from tfprune.training import taps

    rt = parse_runtime(runtime)
    header = {"benchmark": "latency accuracy", "model": "pretrained:resnet20", "data": data,
              "subset": subset, "runtime": runtime, "criterion": "act_l2", "epochs": epochs,
              "round_to": "auto", "rounds": rounds, "invokes": invokes, "lr": lr, "mix": mix,
              "features": features}
    full = data_mod.load_subset(data, subset, 0)
    splits = data_mod.relabel(full)
    original = loader.load_model("pretrained:resnet20")
    teacher = head.slice_head(original, full.classes)
    steps, cost = plan_terms(original, "latency", "auto", runtime, cache=cache, log=log)
    done = {r["id"]: r for r in _rows(out)}

    def prune(level, target):
        keras.utils.set_random_seed(0)
        return pruner.prune_model(original, "act_l2", level, target, round_to=steps,
                                  cost=cost if target == "latency" else None, splits=splits,
                                  calibration_batches=8, bn_batches=8,
                                  head_classes=full.classes, class_names=full.class_names)

    def params_plan(lat, level):
        """The params-targeted plan at `level` from the latency run's scores (the same
        scores prune_model computes: same model, data and seed)."""
        return plan_mod.make_plan(lat.graph, lat.scores, level, "params", "global", steps, 2,
                                  "act_l2", "mean", 0)

    rows = list(done.values())
    for cut in cuts:
        lat = prune(cut, "latency")
        lat_blob = _convert(lat.pruned)
        search_id = f"search:{data}:{subset}:{runtime}:{cut}"
        if search_id not in done:
            row = _search(cut, lat, lat_blob, lambda level: surgery.apply_plan(
                lat.source, params_plan(lat, level), graph=lat.graph), rt.threads, rounds,
                invokes, log)
            row.update(id=search_id, load_average_1min=round(os.getloadavg()[0], 2))
            rows = _put(out, row, header)
            done[search_id] = row
        search = done[search_id]
        models = {"latency": (lat, search["latency_ms"], cut)}
        for side in ("slower", "faster"):
            level = search[side]["params_level"]
            if level is not None:
                result = prune(level, "params")
                if plan_mod.kept_counts(result.plan) != plan_mod.kept_counts(
                        params_plan(lat, level)):
                    raise RuntimeError(f"params level {level}: prune_model planned other "
                                       "counts than the timed search")
                models[f"params_{side}"] = (result, search[side]["ratio"] *
                                            search["latency_ms"], level)
        for seed in seeds:
            for name, (result, ms, level) in models.items():
                row_id = f"ft:{data}:{subset}:{runtime}:{cut}:{name}:{epochs}:{seed}"
                if row_id in done:
                    continue
                keras.utils.set_random_seed(seed)
                model = keras.models.clone_model(result.pruned)
                model.set_weights(result.pruned.get_weights())
                start = time.time()
                train.finetune(model, splits.train, epochs, lr, weight_decay=5e-4,
                               batch_size=64, seed=seed, val_images=None, verbose=2,
                               bn_momentum=0.9, teacher=teacher, distill_alpha=0.9, mix=mix,
                               taps=taps.feature_taps(model, result.plan) if features else (),
                               feature_weight=features)
                row = {"id": row_id, "cut": cut, "arm": name, "target": result.plan["target"],
                       "level": level, "seed": seed, "measured_ms": ms,
                       "predicted_latency_level": result.plan["achieved"].get("latency_level"),
                       "params_level": result.plan["achieved"]["params_level"],
                       "params": counts.model_metrics(result.pruned)["params"],
                       "macs": counts.model_metrics(result.pruned)["macs"],
                       "finetune_seconds": round(time.time() - start, 1),
                       "val": train.accuracy(model, splits.val),
                       "test": train.accuracy(model, splits.test),
                       "bar_val": train.accuracy(teacher, splits.val),
                       "bar_test": train.accuracy(teacher, splits.test),
                       "train_images": len(splits.train), "test_images": len(splits.test)}
                log(f"latency_accuracy: cut {cut} {name} seed {seed}: test "
                    f"{row['test']:.3f} val {row['val']:.3f} at {ms:.3f} ms")
                rows = _put(out, row, header)
                done[row_id] = row
    return rows


def _search(cut, lat, lat_blob, pruned_at, threads, rounds, invokes, log) -> dict:
    """Bisection on the params level until its measured latency brackets the latency plan's:
    the closest slower and faster params levels, with their measured ms. `pruned_at(level)`
    is the params-targeted model (weights do not matter for latency)."""
    lo, hi = 0.0, 0.97          # params level: lo is slower than `lat`, hi faster
    slower = {"params_level": None, "ratio": None, "ms": None}
    faster = {"params_level": None, "ratio": None, "ms": None}
    tried, ref_ms = [], []
    level = lat.plan["achieved"]["params_level"]
    for _ in range(SEARCH_STEPS):
        ratio, ms, ref = _ratio(_convert(pruned_at(level)), lat_blob, threads, rounds,
                                invokes)
        ref_ms.append(ref)
        tried.append({"params_level": round(level, 4), "ratio": round(ratio, 4),
                      "ms": round(ms, 5)})
        log(f"latency_accuracy: cut {cut}: params level {level:.3f} runs {ratio:.3f}x the "
            "latency-targeted model")
        if ratio >= 1:
            lo = level
            if slower["ratio"] is None or ratio < slower["ratio"]:
                slower = tried[-1]
        else:
            hi = level
            if faster["ratio"] is None or ratio > faster["ratio"]:
                faster = tried[-1]
        if abs(ratio - 1) < 0.01:
            break
        level = (lo + hi) / 2
    return {"cut": cut, "predicted_latency_level": lat.plan["achieved"]["latency_level"],
            "latency_params_level": lat.plan["achieved"]["params_level"],
            "latency_ms": round(min(ref_ms), 5), "tried": tried, "slower": slower,
            "faster": faster}


def _interpolate(ms, a, b, key):
    """`key` accuracy at latency `ms` on the line between rows a and b (by measured ms)."""
    if a is None or b is None:
        return None
    if a["measured_ms"] == b["measured_ms"]:
        return (a[key] + b[key]) / 2
    t = (ms - a["measured_ms"]) / (b["measured_ms"] - a["measured_ms"])
    return a[key] + t * (b[key] - a[key])


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(result) -> str:
    rows = result["rows"]
    ft = [r for r in rows if r["id"].startswith("ft:")]
    lines = ["# Accuracy at equal measured latency: latency-targeted vs params-targeted pruning",
             "", f"`{result['model']}`, data `{result['data']}`, subset `{result['subset']}` "
             f"(subset head), criterion `{result['criterion']}`, round_to auto for both, "
             f"runtime `{result['runtime']}` (latency measured on the thread's CPU clock, "
             f"best of {result['rounds']} interleaved round medians of {result['invokes']} "
             f"invokes). Same fine-tuning for every model: {result['epochs']} epochs, "
             "distillation from the original restricted to the subset (alpha 0.9, T 4"
             + (f", feature maps x{result['features']:g}" if result.get("features") else "")
             + f"), BN momentum 0.9, lr {result.get('lr', 0.01):g} cosine, batch 64"
             + (f", {result['mix']} views" if result.get("mix", "none") != "none" else "")
             + ". Params levels were chosen by measured "
             "latency only (bisection on the paired latency ratio); no split chose anything. "
             "Accuracy on the test split (val beside it).", ""]
    for s in (r for r in rows if r["id"].startswith("search:")):
        lines += [f"## Latency cut {s['cut']:.0%}", "",
                  f"Latency-targeted plan: predicted cut {s['predicted_latency_level']:.1%}, "
                  f"params cut {s['latency_params_level']:.1%}, measured {s['latency_ms']:.3f} "
                  f"ms. Params levels tried (ratio = their latency / the latency-targeted "
                  "model's, side by side): " + ", ".join(
                      f"{t['params_level']:.3f} -> {t['ratio']:.3f}" for t in s["tried"])
                  + f" (load average {s.get('load_average_1min', '-')}).", "",
                  "| arm | level | params | MACs | measured ms | seed | val | test | bar test |",
                  "|---|---|---|---|---|---|---|---|---|"]
        mine = sorted((r for r in ft if r["cut"] == s["cut"]), key=lambda r: (r["seed"], r["arm"]))
        lines += [f"| {r['arm']} | {r['level']:.3f} | {r['params']:,} | {r['macs']:,} | "
                  f"{r['measured_ms']:.3f} | {r['seed']} | {_pct(r['val'])} | "
                  f"{_pct(r['test'])} | {_pct(r['bar_test'])} |" for r in mine]
        same = [r for r in mine if r["arm"].startswith("params_")]
        if len({(r["params"], r["macs"]) for r in same}) == 1 and len(same) > 1:
            ratios = [s["slower"]["ratio"], s["faster"]["ratio"]]
            lines += ["", f"The slower and faster params levels give the same plan (params "
                      f"cut {same[0]['params_level']:.3f}, the channel steps of round_to "
                      f"auto): its two paired timings ({ratios[0]:.3f}x and {ratios[1]:.3f}x) "
                      f"average {sum(ratios) / 2:.3f}x the latency-targeted model, equal "
                      "latency within the timing noise, so the comparison is between these "
                      "two models."]
        verdicts = []
        for seed in sorted({r["seed"] for r in mine}):
            by = {r["arm"]: r for r in mine if r["seed"] == seed}
            if "latency" not in by:
                continue
            ms = by["latency"]["measured_ms"]
            at = {k: _interpolate(ms, by.get("params_slower"), by.get("params_faster"), k)
                  for k in ("val", "test")}
            if at["test"] is None:
                continue
            verdicts.append(by["latency"]["test"] - at["test"])
            lines += ["", f"Seed {seed}: params-targeted accuracy interpolated to "
                      f"{ms:.3f} ms: test {_pct(at['test'])} (val {_pct(at['val'])}); "
                      f"latency-targeted {_pct(by['latency']['test'])} (val "
                      f"{_pct(by['latency']['val'])}): difference "
                      f"{100 * (by['latency']['test'] - at['test']):+.1f} pp on test."]
        if verdicts:
            n = mine[0]["test_images"]
            lines += ["", f"Mean test difference (latency-targeted minus params-targeted at "
                      f"equal latency) over {len(verdicts)} seed(s): "
                      f"{100 * statistics.mean(verdicts):+.1f} pp on {n} test images (one "
                      f"model's standard error on {n} images is about "
                      f"{100 * (0.5 * 0.5 / n) ** 0.5:.1f} pp at 50% accuracy)."]
        lines.append("")
    return "\n".join(lines) + "\n"
