"""The latency model of one runtime: its channel tile, per-block tables, whole-model cost.

    lm = LatencyModel("litert-int8-1t")          # cache: tfprune.latency.cache.default_path()
    steps = lm.auto_steps(graph)                  # round_to=auto: {group id: channel step}
    cost = lm.graph_cost(graph, steps, model)     # times what the cache lacks, with progress
    cost.total({gid: kept})                       # predicted ms of the model pruned to `kept`

Tile (`tile.py`): a 3x3 conv on 16x16 maps is timed at 16..64 channels on one thread and the
channel multiple read from the staircase its times make (16 for XNNPACK float32 on AVX-512,
8 for int8; both thread counts share it). `auto_steps` prunes groups in whole tiles,
and groups smaller than two tiles in halves of their largest power of two (a 16-channel
stage may drop to 8).

Tables: every block whose channels can change is timed alone (`blocks.block_model`) on a grid
of at most 3 x 3 (cin, cout) counts taken from its groups' allowed counts; the invoke
overhead of an empty model is subtracted. Between grid points the table is interpolated
bilinearly (exact for cost = a + b*cin + c*cout + d*cin*cout; counts between grid points
that are off the tile are predicted too cheap: use round_to=auto).

Whole model: predicted = offset + scale * sum of tables, calibrated on two whole models
converted the way they ship and timed side by side: the unpruned one and a reference cut
(every group pruned uniformly to half its parameters, on its steps). Both points are met
exactly: scale is the measured saving of the reference cut over its tables' saving, offset
the rest of the unpruned time. Blocks timed alone miss what pruning does to the whole model
(smaller weights and maps staying in cache, per-op costs between blocks), and a fixed cost
taken from the unpruned model alone predicted cuts 4-5 points short. When the reference cut
cannot be made or saves nothing on its tables, one point: the excess of the unpruned model
over its tables is fixed cost (scale 1), a shortfall scales the tables down (offset 0).
`GraphCost.recalibrate` moves the second point onto a measured plan (`measured_ratio`), which
`GraphCost.fit` uses to re-plan until the measured cut is the level (`feedback.py`).
"""
from __future__ import annotations

import json
import time

import numpy as np

from tfprune.latency import blocks as blocks_mod
from tfprune.latency import tile as tile_mod
from tfprune.latency import timing
from tfprune.latency.cache import LatencyCache, cache_key
from tfprune.latency.runtimes import DEFAULT, LatencyError, environment, parse_runtime

MAX_POINTS = 3
ROUNDS, INVOKES = 5, 15
# A whole model's per-round ratio spreads +-10 points on a shared machine; the median of many
# short rounds is steadier, and cheap (a round of 10 invokes takes 10-40 ms).
CALIBRATION_ROUNDS, CALIBRATION_INVOKES = 40, 10
_BLOBS: dict = {}   # (precision, what) -> .tflite bytes: 1 and 2 threads share a conversion


def _interp(xs, ys, x):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) == 1:
        return ys[0]
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + t * (ys[i + 1] - ys[i])


class Table:
    """Latency (ms, invoke overhead removed) of one block on a (cin, cout) grid (both
    ascending). A block never gets faster with more channels, but times taken on a busy
    machine can say so, and a planner that believed them would take cuts that cost time: each
    entry is raised to the largest of the entries at fewer channels."""

    def __init__(self, cins, couts, ms):
        ms = np.maximum.accumulate(np.maximum.accumulate(np.asarray(ms, float), axis=0), axis=1)
        self.cins, self.couts, self.ms = list(cins), list(couts), ms

    def __call__(self, cin: float, cout: float) -> float:
        rows = [_interp(self.couts, self.ms[i], cout) for i in range(len(self.cins))]
        return max(0.0, float(_interp(self.cins, rows, cin)))


class GraphCost:
    """Predicted latency of `graph`'s model as a function of its groups' kept counts; the
    cost object `tfprune.core.plan.make_plan(..., cost=)` takes (`total`, `delta`)."""

    def __init__(self, graph, runtime, tile, blocks, tables, measured_ms, env,
                 reference=None, measurer=None):
        """`reference`: ({group id: kept}, measured ms) of the reference cut, or None;
        `measurer`: the LatencyModel that built it (`fit` measures plans with it)."""
        self.runtime, self.tile, self.env = runtime, tile, env
        self.blocks, self.tables = blocks, tables
        self.measured_ms = measured_ms
        self.sizes = {g.id: g.size for g in graph.groups}
        self.measurer, self.feedback = measurer, []
        self.by_group = {}
        for i, b in enumerate(blocks):
            for gid in set(b.cin.share) | set(b.cout.share):
                self.by_group.setdefault(gid, []).append(i)
        self.reference = reference
        self.floor_ms = 0.02 * measured_ms   # a negative offset never predicts below this
        self._calibrate(reference)

    def _calibrate(self, point) -> bool:
        """Fit offset and scale through the unpruned model and `point` ({kept}, ms), or, with
        no usable point, through the unpruned model alone. True if two points were used."""
        self.scale, self.offset_ms = 1.0, 0.0
        full = sum(self._block_ms(i, {}) for i in range(len(self.blocks)))
        cut = sum(self._block_ms(i, point[0]) for i in range(len(self.blocks))) \
            if point else full
        saved = self.measured_ms - point[1] if point else 0.0
        if full - cut > 0.05 * full and saved > 0:   # two points
            self.scale = saved / (full - cut)
            self.offset_ms = self.measured_ms - self.scale * full
            return True
        if self.measured_ms >= full:  # one point: what the blocks miss is fixed cost
            self.offset_ms = self.measured_ms - full
        elif full > 0:                # blocks timed alone cost more than inside the model
            self.scale = self.measured_ms / full
        return False

    def recalibrate(self, counts: dict, ratio: float) -> bool:
        """Calibrate on a measured plan instead of the reference cut: the model pruned to
        `counts` measured at `ratio` of the unpruned one. False (calibration unchanged) when
        that point cannot anchor a fit (it saves too little on its tables, or nothing)."""
        before = (self.scale, self.offset_ms)
        if self._calibrate((counts, ratio * self.measured_ms)):
            return True
        self.scale, self.offset_ms = before
        return False

    def reset(self) -> None:
        """Back to the calibration it was built with (the reference cut), no feedback."""
        self._calibrate(self.reference)
        self.feedback = []

    def fit(self, make, source, graph, level: float, log=None) -> dict:
        """The plan of `make(level)`, measured and re-planned (`tfprune.latency.feedback`);
        without a measurer (a cost not built by a LatencyModel) the plan as made."""
        if self.measurer is None:
            return make(level)
        from tfprune.latency import feedback
        return feedback.fit_plan(self, make, source, graph, level, log)

    def ratio_of(self, source, graph, other, what: dict) -> float | None:
        """`other`'s latency over `source`'s (`graph`'s model), timed side by side and cached
        by `what`; None for a cost not built by a LatencyModel (nothing to time with)."""
        if self.measurer is None:
            return None
        return self.measurer.measured_ratio(source, graph, other, what)

    def _block_ms(self, i, counts):
        b = self.blocks[i]
        cout = b.cout.kept(counts, self.sizes)
        cin = cout if b.tied else b.cin.kept(counts, self.sizes)
        return self.tables[i](cin, cout)

    def total(self, counts: dict) -> float:
        return max(self.floor_ms, self.offset_ms + self.scale * sum(
            self._block_ms(i, counts) for i in range(len(self.blocks))))

    def delta(self, counts: dict, gid: int, new: int) -> float:
        """Change of `total` when group `gid` goes from counts[gid] to `new` channels."""
        after = dict(counts)
        after[gid] = new
        return self.scale * sum(self._block_ms(i, after) - self._block_ms(i, counts)
                                for i in self.by_group.get(gid, ()))

    def describe(self) -> dict:
        return {"runtime": self.runtime, "tile": self.tile, "litert": self.env["litert"],
                "clock": timing.clock_of(parse_runtime(self.runtime).threads),
                "cpu": self.env["cpu"], "measured_unpruned_ms": round(self.measured_ms, 5),
                "offset_ms": round(self.offset_ms, 5), "scale": round(self.scale, 5),
                "reference_cut_ms": None if not self.reference else round(self.reference[1], 5),
                "timed_blocks": len(self.blocks), "feedback": self.feedback}


class LatencyModel:
    def __init__(self, runtime: str = DEFAULT, cache: LatencyCache | None = None, log=print):
        self.rt = parse_runtime(runtime)
        self.cache = cache if cache is not None else LatencyCache()
        self.log = log or (lambda *_: None)
        self.env = environment()
        self._warned = False

    def _key(self, signature, rt=None) -> str:
        """The cache key of `signature` timed on `rt` (default: this model's runtime)."""
        rt = rt or self.rt
        return cache_key({"timed": signature, "clock": timing.clock_of(rt.threads)}, rt.name,
                         self.env)

    def _blob(self, build, what) -> bytes:
        """The .tflite of `build()`; `what` (JSON data) names it for the in-process memo."""
        key = (self.rt.precision, json.dumps(what, sort_keys=True, default=str))
        if key not in _BLOBS:
            if len(_BLOBS) > 4000:
                _BLOBS.clear()
            _BLOBS[key] = timing.to_tflite(build(), self.rt.precision)
        return _BLOBS[key]

    def _time_all(self, builds: dict, rounds=ROUNDS, invokes=INVOKES, threads=None) -> dict:
        """{label: best round median ms} of {label: (build, what)}, timed side by side."""
        blobs = {k: self._blob(b, w) for k, (b, w) in builds.items()}
        per_round = timing.time_interleaved(blobs, threads or self.rt.threads, rounds, invokes)
        return {k: min(v) for k, v in per_round.items()}

    def _time(self, build, what, rounds=ROUNDS, invokes=INVOKES) -> float:
        return self._time_all({0: (build, what)}, rounds, invokes)[0]

    def overhead_ms(self) -> float:
        """Invoke time of a model that does (almost) nothing: subtracted from every block."""
        key = self._key({"probe": "overhead"})
        if self.cache.get(key) is None:
            import keras

            def build():
                inp = keras.Input((1, 1, 1), batch_size=1)
                return keras.Model(inp, keras.layers.ReLU()(inp))
            ms = self._time(build, "overhead", 7, 30)
            self.cache.put(key, {"runtime": self.rt.name, "ms": ms})
        return self.cache.get(key)["ms"]

    def tile(self) -> int:
        """The channel multiple this runtime's conv kernels work in (cached; `tile.py`).

        The tile belongs to the micro-kernel, which threads share, so it is probed on one
        thread of the runtime's precision, timed by the thread's CPU clock: 2-thread wall
        times are too noisy to read a staircase from. A poor fit is re-timed twice, keeping
        each count's fastest time."""
        probe_rt = parse_runtime(f"litert-{self.rt.precision}-1t")
        key = self._key({"probe": "tile", "channels": tile_mod.CHANNELS, "fit": "staircase"},
                        probe_rt)
        entry = self.cache.get(key)
        if entry is None:
            import keras
            start = time.time()

            def build(c):
                keras.utils.set_random_seed(0)
                inp = keras.Input((16, 16, c), batch_size=1)
                return keras.Model(inp, keras.layers.Conv2D(c, 3, padding="same")(inp))
            builds = {c: (lambda c=c: build(c), ["probe", c]) for c in tile_mod.CHANNELS}
            ms = {}
            for _ in range(3):
                timed = self._time_all(builds, rounds=9, invokes=20, threads=probe_rt.threads)
                ms = {c: min(t, ms.get(c, t)) for c, t in timed.items()}
                tile, res = tile_mod.choose_tile(list(ms), list(ms.values()))
                if min(res.values()) <= tile_mod.CLEAN_FIT:
                    break
            entry = {"runtime": probe_rt.name, "tile": tile, "ms": ms, "residuals": res}
            self.cache.put(key, entry)
            self.log(f"latency: {self.rt.precision}: channel tile {tile} "
                     f"({time.time() - start:.0f} s probe)")
        return int(entry["tile"])

    def auto_steps(self, graph) -> dict:
        """round_to=auto: {group id: step}: whole tiles, or halves of a group under two tiles."""
        tile = self.tile()
        return {g.id: tile if g.size >= 2 * tile else
                max(1, 2 ** int(np.floor(np.log2(max(g.size, 2) / 2))))
                for g in graph.prunable_groups()}

    def _points(self, dims, steps, sizes):
        if not dims.varies:
            return [dims.full]
        gid = max(dims.share, key=dims.share.get)
        size, step = sizes[gid], steps.get(gid, 1)
        allowed = sorted(set(list(range(step, size, step)) + [size]))
        if len(allowed) > MAX_POINTS:
            idx = np.unique(np.round(np.linspace(0, len(allowed) - 1, MAX_POINTS)).astype(int))
            allowed = [allowed[i] for i in idx]
        counts = {g: 0 for g in dims.share}
        pts = []
        for k in allowed:
            counts.update({g: k * sizes[g] / size for g in dims.share})
            pts.append(int(round(dims.kept(counts, sizes))))
        return sorted(set(max(1, p) for p in pts))

    def _busy_load(self) -> float:
        """The 1-minute load average, with one warning per model when it exceeds the cores and
        this runtime times on the wall clock: tables timed so come out slow and stay cached
        (2-thread tables built at load 5 on 2 cores priced ResNet-20 28% slow)."""
        import os
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        if self.rt.threads > 1 and load > cores and not self._warned:
            self._warned = True
            self.log(f"latency: warning: timing {self.rt.name} tables at load {load:.1f} on "
                     f"{cores} cores; wall-clock times of a busy machine are slow and stay in "
                     f"the cache ({self.cache.path}): build them on a quiet machine")
        return round(load, 2)

    def table(self, graph, block, steps) -> Table:
        sizes = {g.id: g.size for g in graph.groups}
        couts = self._points(block.cout, steps, sizes)
        cins = [None] if block.tied else self._points(block.cin, steps, sizes)
        key = self._key({"block": block.signature, "cins": cins, "couts": couts,
                         "tied": block.tied})
        entry = self.cache.get(key)
        if entry is None:
            import keras
            load = self._busy_load()
            overhead = self.overhead_ms()

            def build(ci, co):
                keras.utils.set_random_seed(0)
                return blocks_mod.block_model(graph, block, co if ci is None else ci, co)
            timed = self._time_all({(ci, co): (lambda ci=ci, co=co: build(ci, co),
                                               [block.signature, ci, co])
                                    for ci in cins for co in couts})
            ms = [[max(0.0, timed[ci, co] - overhead) for co in couts] for ci in cins]
            entry = {"runtime": self.rt.name, "head": block.head, "cins": cins,
                     "couts": couts, "ms": ms, "load": load}
            self.cache.put(key, entry)
        cins = [0] if block.tied else entry["cins"]
        return Table(cins, entry["couts"], entry["ms"])

    def _shipped(self, model, what) -> bytes:
        """`model` converted the way it ships (`tfprune.litert.convert`), memoised by `what`."""
        memo = (self.rt.precision, json.dumps(what, sort_keys=True, default=str))
        if memo not in _BLOBS:
            from tfprune.litert import convert

            shape = tuple(model.inputs[0].shape[1:])
            cal = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
            _BLOBS[memo] = convert.convert(model, self.rt.precision, calibration=cal)
        return _BLOBS[memo]

    @staticmethod
    def reference_cut(graph, model, steps):
        """({group id: kept}, pruned model): every group cut uniformly to half its parameters
        on its steps (l1 picks the channels: latency does not depend on which), or None."""
        from tfprune import scoring
        from tfprune.core import plan as plan_mod
        from tfprune.core import surgery

        try:
            p = plan_mod.make_plan(graph, scoring.compute_scores("l1", model, graph), 0.5,
                                   "params", "uniform", steps, criterion="l1")
        except plan_mod.PlanError:
            return None
        counts = plan_mod.kept_counts(p)
        return counts, surgery.apply_plan(model, p, graph=graph)

    def calibrate(self, graph, model, steps) -> tuple:
        """(unpruned ms, reference cut or None): both converted the way they ship and timed
        side by side (interleaved rounds); the reference's ms is the unpruned best round
        median times the median paired ratio. Cached by the model's fingerprint and steps."""
        key = self._key({"model": graph.fingerprint(), "calibration": "two-point",
                         "steps": {str(k): v for k, v in sorted(steps.items())},
                         "rounds": [CALIBRATION_ROUNDS, CALIBRATION_INVOKES]})
        if self.cache.get(key) is None:
            blobs = {"full": self._shipped(model, ["model", graph.fingerprint()])}
            ref = self.reference_cut(graph, model, steps)
            if ref is not None:
                blobs["cut"] = self._shipped(ref[1], ["cut", graph.fingerprint(), steps])
            per = timing.time_interleaved(blobs, self.rt.threads, CALIBRATION_ROUNDS,
                                          CALIBRATION_INVOKES)
            ms = min(per["full"])
            entry = {"runtime": self.rt.name, "model": graph.spec.name, "ms": ms}
            if ref is not None:
                ratio = timing.paired_ratio(per, "cut", "full")
                entry["reference"] = {"counts": {str(k): v for k, v in ref[0].items()},
                                      "ms": ms * ratio}
            self.cache.put(key, entry)
        entry = self.cache.get(key)
        ref = entry.get("reference")
        return entry["ms"], None if ref is None else (
            {int(k): v for k, v in ref["counts"].items()}, ref["ms"])

    def measured_ratio(self, source, graph, pruned, counts: dict) -> float:
        """Latency of `pruned` over that of `source` (the model it was cut from, `graph`'s),
        both converted the way they ship and timed side by side: the median of the paired
        per-round ratios. Cached by the source's fingerprint and `counts` (the kept counts,
        or any JSON-able description of the cut that names it)."""
        what = {str(k): v for k, v in sorted(counts.items())}
        key = self._key({"model": graph.fingerprint(), "measured": what,
                         "rounds": [CALIBRATION_ROUNDS, CALIBRATION_INVOKES]})
        if self.cache.get(key) is None:
            blobs = {"full": self._shipped(source, ["model", graph.fingerprint()]),
                     "cut": self._shipped(pruned, ["plan", graph.fingerprint(), what])}
            per = timing.time_interleaved(blobs, self.rt.threads, CALIBRATION_ROUNDS,
                                          CALIBRATION_INVOKES)
            self.cache.put(key, {"runtime": self.rt.name, "model": graph.spec.name,
                                 "ratio": timing.paired_ratio(per, "cut", "full")})
        return float(self.cache.get(key)["ratio"])

    def graph_cost(self, graph, steps: dict, model) -> GraphCost:
        """Tables for every changing block of `graph` (timed when not cached, with progress)
        and the whole-model calibration (`calibrate`)."""
        found = [b for b in blocks_mod.decompose(graph) if b.varies]
        tables, start = [], time.time()
        for i, b in enumerate(found):
            try:
                tables.append(self.table(graph, b, steps))
            except (ValueError, TypeError) as err:
                raise LatencyError(f"cannot time block {b.head} ({b.signature['layers'][0][0]}) "
                                   f"alone: {err}") from None
            if time.time() - start > 5 and (i + 1) % 5 == 0:
                self.log(f"latency: {graph.spec.name} {self.rt.name}: {i + 1}/{len(found)} "
                         f"blocks, {(time.time() - start) / 60:.1f} min")
        ms, reference = self.calibrate(graph, model, steps)
        cost = GraphCost(graph, self.rt.name, self.tile(), found, tables, ms, self.env,
                         reference, measurer=self)
        if time.time() - start > 5:
            self.log(f"latency: {graph.spec.name} {self.rt.name}: model built, {len(found)} "
                     f"blocks in {(time.time() - start) / 60:.1f} min")
        return cost
