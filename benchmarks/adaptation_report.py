"""Render benchmarks/results/adaptation.json as Markdown: the main job's default against its
baselines, the fine-tuning recipes, the levels on the full data, and the main job's recipes on
a phone's data (issue #14). Pure functions of the rows; `benchmarks.adaptation` writes them."""
from __future__ import annotations

import json

PREVIOUS_BASE = "59.97%"  # rows without a base were measured on the first base (all 50k images)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _render_recipes(recipes: list, base: str, main: list) -> list:
    lines = [f"## Fine-tuning recipes on the main job's pruned model (chosen on val), base "
             f"{base}", "", f"Bar: val {_pct(recipes[0]['bar_val'])}, test "
             f"{_pct(recipes[0]['bar_test'])} (100 val / 300 test images).", "",
             "| recipe | epochs | BN momentum | distill alpha | mix | val | test | "
             "fine-tune s |", "|---|---|---|---|---|---|---|---|"]
    for r in recipes:
        lines.append(f"| {r['recipe']} | {r['epochs']} | {r['bn_momentum']} | "
                     f"{r['distill_alpha']} | {r['mix']} | {_pct(r['val'])} | "
                     f"{_pct(r['test'])} | {r['finetune_seconds']:.0f} |")
    by = {r["recipe"]: r["finetune_seconds"] for r in recipes}
    if "ce15_bn09" in by and "kd15_bn09" in by:
        kd, ce = by["kd15_bn09"], by["ce15_bn09"]
        lines += ["", f"The teacher's cost in fine-tuning time: {kd:.0f} s with it against "
                  f"{ce:.0f} s without (x{kd / ce:.2f}, 15 epochs, wall time)."]
    if main:
        b = {r["model"].split(" ")[0]: r for r in main[0]["baselines"]}
        teacher, student = b["original"]["macs"], b["shipped"]["macs"]
        lines += [f"By arithmetic: a training step costs about 3 forward passes of the "
                  f"student ({student / 1e6:.1f}M MACs each), the teacher adds one forward "
                  f"pass ({teacher / 1e6:.1f}M): up to x{1 + teacher / (3 * student):.2f}."]
    return lines + [""]


def _render_phone(rows: list, phone_base: dict) -> list:
    lines = ["## The main job's recipe on a phone's data the base never saw (chosen on val)", "",
             "Device images: `per class` images a class from the subset's val split (held out "
             "of the clean base's pretraining); val: the next 50 a class; test: the official "
             "test images. Pruned as the main job (reconstruction; 50% of float32 latency "
             "unless the recipe says otherwise; the main job's default is 30% since recipe "
             "latency30), "
             "then fine-tuned with the recipe's settings over the recipe base (80 epochs, lr "
             "0.01, distillation alpha 0.9, T 4, feature maps x20, no mixed views; `default`: "
             "the main job's defaults). Values "
             "per seed (seed: which device images, and the training seed); `agree`: top-1 "
             "agreement with the bar on val; `speed-up`: the adapted model against the bar, "
             "LiteRT float32, 1 thread, timed side by side (15 interleaved rounds), and in "
             "brackets its share of the FLOPs cut (speed-up over the bar's MACs / the model's; "
             "issue #16's goal: at least 0.9).", "",
             "| host | data | subset | per class | recipe | settings | params | speed-up | "
             "seeds | val | test | val - bar (pp, mean) | test - bar (pp, mean) | agree val | "
             "fine-tune s |", "|" + "---|" * 15]
    groups: dict = {}
    for r in rows:
        key = (r.get("host", "earlier"), r["data"].split("/")[-1], r["subset"],
               r["train_per_class"], r["recipe"],
               json.dumps(r["finetune"], sort_keys=True) if r["recipe"].startswith("default")
               else "")
        groups.setdefault(key, {})[r["seed"]] = r  # a seed run again: its last row
    for (host, source, subset, per_class, recipe, _), by_seed in sorted(groups.items()):
        rs = [by_seed[seed] for seed in sorted(by_seed)]
        each = lambda key: " / ".join(_pct(r[key]["accuracy"]) for r in rs)
        gap = lambda key: sum(r[key]["accuracy"] - r[f"bar_{key}"] for r in rs) / len(rs)
        settings = ", ".join(f"{k} {v}" for k, v in rs[0]["settings"].items())
        if recipe.startswith("default"):
            settings = "defaults: " + ", ".join(
                [f"{k} {v}" for k, v in rs[0]["finetune"].items()
                 if phone_base.get(k) != v and k not in rs[0]["settings"]]
                + ([settings] if settings else []))
        params = " / ".join(f"{r['params']:,}" for r in rs if "params" in r) or "-"
        speed = " / ".join(f"{r['speedup']:.2f}x" + (
            f" ({r['speedup'] * r['macs'] / r['bar_macs']:.2f})" if "macs" in r else "")
            for r in rs if "speedup" in r) or "-"
        lines.append(f"| {host} | {source} | {subset} | {per_class} | {recipe} | {settings} | "
                     f"{params} | {speed} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{each('val')} | {each('test')} | {100 * gap('val'):+.1f} | {100 * gap('test'):+.1f} | "
                     f"{' / '.join(_pct(r['val']['agreement']) for r in rs)} | "
                     f"{sum(r['finetune_seconds'] for r in rs) / len(rs):.0f} |")
    bars = {(r["subset"], r["seed"]): (r["bar_val"], r["bar_test"]) for r in rows}
    lines += ["", "Bar (val / test) per seed: " + "; ".join(
        f"{subset} seed {seed}: {_pct(v)} / {_pct(t)}"
        for (subset, seed), (v, t) in sorted(bars.items())) + ".", ""]
    return lines


def _render_main(m: dict) -> list:
    wall = "not measured (the run was resumed)" if m["wall_seconds"] is None \
        else f"{m['wall_seconds']:.0f} s"
    lines = ["## Main job default (`python -m pipelines.run`)", "",
             f"Base {m.get('base', PREVIOUS_BASE)}; sample data, {m['config']['subset']}, "
             f"{m['config']['level']:.0%} "
             f"{m['config']['target']}, {m['test_images']} test images, wall "
             f"time {wall} (fine-tune {m['finetune_seconds']:.0f} s"
             + (f", `l1` baseline fine-tune {m['l1_finetune_seconds']:.0f} s"
                if m["l1_finetune_seconds"] else "") + ").", "",
             "| model | accuracy | vs the bar (pp) | params | MACs | float32 latency 1 "
             "thread (ms) |", "|---|---|---|---|---|---|"]
    for b in m["baselines"]:
        lat = "-" if b["latency_ms"] is None else f"{b['latency_ms']:.2f}"
        lines.append(f"| {b['model']} | {_pct(b['accuracy'])} | "
                     f"{100 * (b['accuracy'] - m['bar']):+.1f} | {b['params']:,} | "
                     f"{b['macs']:,} | {lat} |")
    ok = lambda acc: acc is not None and acc >= m["bar"] - 0.01
    time_goal = "not measured" if m["wall_seconds"] is None else (
        "met" if m["wall_seconds"] < 300 else "NOT met")
    return lines + ["", f"Goal (shipped >= bar - 1 pp, also after the device stage, under 5 "
                    f"minutes): shipped {'met' if ok(m['shipped']) else 'NOT met'}, device "
                    f"stage {'met' if ok(m['device']) else 'NOT met'}, time {time_goal}.", ""]


LEVELS_HEADER = [
    "## Levels on the full data set, `act_l2` against `l1` (same distillation fine-tune)", "",
    "Train images: all of the subset's train split, or `per class` as on a phone. `recon`: "
    "least-squares reconstruction on up to that many train images before the BatchNorm "
    "re-estimation (0: off). `pruned`: val accuracy before fine-tuning.", "",
    "| base | data | subset | target | level | criterion | per class | recon | params | "
    "epochs | lr, mix, round_to (auto: the host's kernel tile, 16 where not given; alpha if "
    "not 0.9; weight decay if not 5e-4; transfer images; seed if not 0; prunes if more than "
    "one; allocation if not global; branches removed whole) | features | pruned val | val | "
    "test | bar val | bar test | vs bar (pp) | fine-tune s |", "|" + "---|" * 19]


def _levels_order(r: dict) -> tuple:
    return (r.get("base", PREVIOUS_BASE), r["subset"], r.get("target", "params"),
            r.get("train_per_class", 0), r["level"], r["criterion"],
            r.get("reconstruct_images", 0), r.get("distill_features", 0), r.get("lr", 0.01),
            r.get("mix", "none"), r.get("transfer_images", 0), r.get("seed", 0),
            r.get("weight_decay", 5e-4), r.get("blocks", []), r.get("allocation", "global"))


def _levels_settings(r: dict) -> str:
    """The levels table's settings cell: lr, mix and round_to, then what is not the default."""
    parts = [f"{r.get('lr', 0.01):g}", r.get("mix", "none"),
             f"{r.get('round_to', 'auto')}" + (f" (tile {r['tile']})" if r.get("tile") else "")]
    if r["distill_alpha"] != 0.9:
        parts.append(f"alpha {r['distill_alpha']:g}")
    if r.get("weight_decay", 5e-4) != 5e-4:
        parts.append(f"wd {r['weight_decay']:g}")
    if r.get("transfer_images"):
        parts.append(f"{r['transfer_images']:,} transfer")
    if r.get("seed"):
        parts.append(f"seed {r['seed']}")
    if r.get("teacher_epochs"):
        parts.append(f"teacher tuned {r['teacher_epochs']} epochs "
                     f"({_pct(r['teacher_val'])} / {_pct(r['teacher_test'])})"
                     + (", pruned from it" if r.get("prune_tuned") else ""))
    if r.get("level_steps", 1) > 1:
        parts.append(f"{r['level_steps']} prunes")
    if r.get("allocation", "global") != "global":
        parts.append(f"{r['allocation']} allocation")
    if r.get("blocks"):
        parts.append(f"without {' '.join(r['blocks'])}")
    return ", ".join(parts)


def _render_levels(levels: list) -> list:
    lines = list(LEVELS_HEADER)
    for r in sorted(levels, key=_levels_order):
        cells = [r.get("base", PREVIOUS_BASE), r["data"].split("/")[-1], r["subset"],
                 r.get("target", "params"), f"{r['level']:.0%}", r["criterion"],
                 r.get("train_per_class") or "all", r.get("reconstruct_images", 0),
                 f"{r['params']:,}", r["epochs"], _levels_settings(r),
                 f"{r.get('distill_features', 0):g}", _pct(r.get("pruned_val")),
                 _pct(r["val"]), _pct(r["test"]), _pct(r["bar_val"]), _pct(r["bar_test"]),
                 f"{100 * (r['test'] - r['bar_test']):+.1f}", f"{r['finetune_seconds']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""]


def render(rows: list, phone_base: dict) -> str:
    """The Markdown of `rows`; `phone_base`: the phone recipes' base settings (a `default`
    recipe's settings column names what differs from it)."""
    lines = ["# Adaptation: adapted models against the restricted original (issue #14)", "",
             "The bar: the original pretrained ResNet-20 with its logits restricted to the "
             "subset's classes, no training. Generated by `benchmarks/adaptation.py` from "
             "`adaptation.json`; the machine is 2 shared cores (times are wall time under "
             "whatever else ran).", ""]
    main, recipes, levels, phone = ([r for r in rows if r["part"] == name]
                                    for name in ("main", "recipes", "levels", "phone"))
    if main:
        lines += _render_main(main[0])
    for base in sorted({r.get("base", PREVIOUS_BASE) for r in recipes}, reverse=True):
        lines += _render_recipes([r for r in recipes if r.get("base", PREVIOUS_BASE) == base],
                                 base, main)
    if levels:
        lines += _render_levels(levels)
    if phone:
        lines += _render_phone(phone, phone_base)
    return "\n".join(lines)
