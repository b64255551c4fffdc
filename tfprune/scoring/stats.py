"""Streaming per-channel activation statistics, measured where each filter's channel is consumed.

`measure_points(model)` names, for every producer of a prunable group of the core's channel
graph, the layer whose output carries its filters as the next layer sees them: the producer's
output followed through BatchNormalization and activation layers, and through merges (Add,
...) to the activation after them, stopping where the tensor fans out or reaches anything
else. `collect` streams a tf.data pipeline of (x, y) batches through one compiled forward pass
per batch (plus a backward pass for the Taylor sums) over a multi-output model of the measured
layers, reduced in the graph to per-image per-channel sums and added on the host in image
order (float64), so memory is proportional to the number of channels and the result does not
depend on how the images were batched. The result is a `ChannelStats`: plain sums,
JSON-serialisable, mergeable (phone-side `filter_stats` outputs turn into the same structure),
and turned into per-channel scores by `ChannelStats.scores(criterion)`.

Per measured layer (C channels), reducing over every axis but the last (N*H*W elements):
  sum_abs[C] = sum |a|     sum_sq[C] = sum a^2     zeros[C] = count of a == 0 exactly
  count      = elements per channel (N*H*W)        samples = N (images)
  taylor[C]  = sum over images of |sum_{h,w} a * dL/da|, L the per-image loss (optional)
Scores (higher = more important): act_l1 = sum_abs/count, act_l2 = sqrt(sum_sq/count),
apoz = 1 - zeros/count, taylor = taylor/samples.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError

FORMAT = "tfprune.channel_stats/1"
SUMS = ("sum_abs", "sum_sq", "zeros", "taylor")
NEEDS = {"act_l1": "sum_abs", "act_l2": "sum_sq", "apoz": "zeros", "taylor": "taylor"}
CRITERIA = tuple(NEEDS)


class StatsError(TfpruneError):
    """Statistics that cannot be collected, merged or scored; the message says why."""


# ---------------------------------------------------------------- where to measure
def measure_points(model, graph=None) -> dict[str, list[str]]:
    """{producer: [measured layer]} for every member of every prunable group of the core's
    channel graph (`tfprune.core.graph.build_graph(model)` unless `graph` is given): each
    producer's `ChannelGraph.measure_point`."""
    if graph is None:
        from tfprune.core.graph import build_graph
        graph = build_graph(model)
    return {m: [graph.measure_point(m)] for g in graph.prunable_groups() for m in g.members}


def measured_layers(points: dict[str, list[str]], model=None) -> list[str]:
    """The distinct measured layers of `points`, in the model's layer order when given."""
    wanted = {n for names in points.values() for n in names}
    if model is None:
        return sorted(wanted)
    return [layer.name for layer in model.layers if layer.name in wanted]


# ---------------------------------------------------------------- the statistics
@dataclasses.dataclass
class LayerStats:
    """Per-channel sums for one measured layer (see the module docstring). A sum that was not
    collected (`collect(fields=...)`) is None; scoring a criterion that needs it says so."""

    sum_abs: np.ndarray | None
    sum_sq: np.ndarray | None
    zeros: np.ndarray | None
    count: int
    samples: int
    taylor: np.ndarray | None = None

    def __post_init__(self):
        for name in SUMS:
            value = getattr(self, name)
            if value is not None:
                value = np.round(value).astype(np.int64) if name == "zeros" else value
                setattr(self, name, np.asarray(value, np.float64 if name != "zeros" else np.int64
                                               ).reshape(-1))
        self.count, self.samples = int(np.max(self.count)), int(self.samples)
        lengths = {len(v) for v in self._present().values()}
        if len(lengths) != 1:
            raise StatsError(f"per-channel arrays of different lengths {sorted(lengths)}"
                             if lengths else "no per-channel sums")

    def _present(self) -> dict:
        return {n: getattr(self, n) for n in SUMS if getattr(self, n) is not None}

    @property
    def channels(self) -> int:
        return len(next(iter(self._present().values())))

    def __add__(self, other: "LayerStats") -> "LayerStats":
        if other.channels != self.channels:
            raise StatsError(f"cannot merge {self.channels} channels with {other.channels}")
        if set(self._present()) != set(other._present()):
            raise StatsError(f"cannot merge sums {sorted(self._present())} with "
                             f"{sorted(other._present())}")
        both = {n: v + getattr(other, n) for n, v in self._present().items()}
        return LayerStats(**{n: both.get(n) for n in SUMS}, count=self.count + other.count,
                          samples=self.samples + other.samples)

    def score(self, criterion: str) -> np.ndarray:
        if criterion not in NEEDS:
            raise StatsError(f"unknown statistic criterion {criterion!r}; known: {', '.join(NEEDS)}")
        value = getattr(self, NEEDS[criterion])
        if value is None:
            why = " (collected without labels)" if criterion == "taylor" else ""
            raise StatsError(f"these statistics hold no {NEEDS[criterion]} sums{why}, which "
                             f"{criterion} needs")
        if self.count == 0:
            raise StatsError("no elements were measured")
        return {"act_l1": lambda: value / self.count, "act_l2": lambda: np.sqrt(value / self.count),
                "apoz": lambda: 1.0 - value / self.count,
                "taylor": lambda: value / self.samples}[criterion]()

    def to_json(self) -> dict:
        return {"channels": self.channels, "count": self.count, "samples": self.samples,
                **{n: v.tolist() for n, v in self._present().items()}}


@dataclasses.dataclass
class ChannelStats:
    """Per-channel sums for each measured layer, by layer name, plus free-form metadata."""

    layers: dict[str, LayerStats]
    meta: dict = dataclasses.field(default_factory=dict)

    def merge(self, other: "ChannelStats") -> "ChannelStats":
        if set(self.layers) != set(other.layers):
            raise StatsError(f"cannot merge statistics of different layers: "
                             f"{sorted(set(self.layers) ^ set(other.layers))}")
        return ChannelStats({n: s + other.layers[n] for n, s in self.layers.items()}, dict(self.meta))

    def scores(self, criterion: str) -> dict[str, np.ndarray]:
        """{measured layer: per-channel score} (higher = keep)."""
        out = {}
        for name, layer in self.layers.items():
            try:
                out[name] = layer.score(criterion)
            except StatsError as err:
                raise StatsError(f"layer {name!r}: {err}") from None
        return out

    def to_json(self) -> dict:
        return {"format": FORMAT, "meta": self.meta,
                "layers": {n: s.to_json() for n, s in self.layers.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> "ChannelStats":
        if obj.get("format") != FORMAT:
            raise StatsError(f"not channel statistics (format {obj.get('format')!r}, want {FORMAT})")
        layers = {n: LayerStats(**{k: d.get(k) for k in SUMS}, count=d["count"],
                                samples=d["samples"]) for n, d in obj["layers"].items()}
        return cls(layers, obj.get("meta", {}))

    @classmethod
    def from_filter_stats(cls, outputs: dict, samples: int = 0, meta: dict | None = None):
        """From per-layer sums computed elsewhere (the TFLite `filter_stats` signature):
        `{layer: {"sum_abs", "sum_sq", "zeros", "count"}}`, `count` a scalar or per-channel."""
        layers = {}
        for name, d in outputs.items():
            missing = {"sum_abs", "sum_sq", "zeros", "count"} - set(d)
            if missing:
                raise StatsError(f"filter_stats for layer {name!r} lacks {sorted(missing)}")
            layers[name] = LayerStats(d["sum_abs"], d["sum_sq"], d["zeros"], d["count"], samples)
        return cls(layers, dict(meta or {}))

    def save(self, path) -> None:
        from tfprune.fileio import atomic_write_text
        atomic_write_text(Path(path), json.dumps(self.to_json()))

    @classmethod
    def load(cls, path) -> "ChannelStats":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise StatsError(f"cannot read channel statistics from {path}: {err}") from None


# ---------------------------------------------------------------- streaming collection
def check_input(model, dataset) -> bool:
    """Raises on images that don't fit the model's input; True when batches carry labels."""
    spec = dataset.element_spec
    has_labels = isinstance(spec, tuple) and len(spec) >= 2
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    want = tuple(model.inputs[0].shape[1:])
    got = tuple(x_spec.shape[1:]) if x_spec.shape.rank is not None else None
    if got is None or len(got) != len(want) or any(
            w is not None and g is not None and w != g for w, g in zip(want, got)):
        raise StatsError(f"dataset images of shape {got} do not fit model {model.name!r} "
                         f"input {want}")
    return has_labels


def _from_logits(model) -> bool:
    """False when the last layer ends in softmax (a Softmax layer, or softmax as the
    activation in its config), so the Taylor loss reads probabilities."""
    last = model.layers[-1]
    return type(last).__name__ != "Softmax" and last.get_config().get("activation") != "softmax"


def probe_model(model, layers: list[str]):
    """A multi-output model over the same layers (Keras 3 or tf_keras, as `model` is): the
    measured outputs, then the model's (first) output."""
    import importlib
    keras = importlib.import_module(type(model).__module__.split(".")[0])
    missing = [n for n in layers if n not in {layer.name for layer in model.layers}]
    if missing:
        raise StatsError(f"model {model.name!r} has no layer(s) {missing}")
    return keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                       [model.get_layer(n).output for n in layers]
                       + [model.outputs[0]])


def make_step(model, layers: list[str], taylor: bool, fields=SUMS[:3]):
    """The compiled per-batch step: (x[, y]) -> per layer {sum: per-image sums [N, C]} for the
    activation `fields` (of sum_abs, sum_sq, zeros), plus `count` and, if `taylor`, `taylor`."""
    import keras
    import tensorflow as tf
    probe, from_logits = probe_model(model, layers), _from_logits(model)
    unknown = set(fields) - set(SUMS[:3])
    if unknown:
        raise StatsError(f"unknown statistics {sorted(unknown)}; known: {', '.join(SUMS[:3])}")

    def reduce(a, g=None):
        """Per-image sums (added over images on the host, in image order), only those asked
        for: |a| and its sum; the fused euclidean norm, squared (sum a^2); sign(|a|) and its
        sum (non-zeros; exact, at most H*W per image). Memory passes, not FLOPs, cost here."""
        axes = list(range(1, a.shape.rank - 1))
        total = (lambda t: tf.reduce_sum(t, axes)) if axes else (lambda t: t)
        out = {"count": tf.size(a, out_type=tf.int64) // tf.cast(tf.shape(a)[-1], tf.int64)}
        magnitude = tf.abs(a) if {"sum_abs", "zeros"} & set(fields) else None
        if "sum_abs" in fields:
            out["sum_abs"] = total(magnitude)
        if "sum_sq" in fields:
            out["sum_sq"] = tf.square(tf.math.reduce_euclidean_norm(a, axes)) if axes else tf.square(a)
        if "zeros" in fields:
            per_image = tf.cast(tf.reduce_prod(tf.shape(a)[1:-1]), tf.float32)
            out["zeros"] = per_image - total(tf.sign(magnitude))
        if g is not None:  # per image: |sum over positions of a * dL/da|
            out["taylor"] = tf.abs(total(a * g))
        return out

    @tf.function(reduce_retracing=True)
    def activations(x):
        return [reduce(a) for a in probe(x, training=False)[:-1]]

    @tf.function(reduce_retracing=True)
    def with_taylor(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outs = probe(x, training=False)
            # Summed per-image losses: each image's gradient is its own, whatever the batching.
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                y, outs[-1], from_logits=from_logits))
        grads = tape.gradient(loss, outs[:-1])
        return [reduce(a, g) for a, g in zip(outs[:-1], grads)]

    return with_taylor if taylor else activations


def _add_in_order(total, per_image):
    """`total` plus each image's row, one at a time (cumsum is sequential), so the sum is the
    same float64 number however the images were split into batches."""
    per_image = np.asarray(per_image, np.float64)
    if per_image.ndim == 0:
        return total + int(per_image)
    return np.cumsum(np.concatenate([total[None], per_image]), axis=0)[-1]


def collect(model, dataset, layers: list[str] | None = None, taylor: bool = False,
            batches: int | None = None, progress: bool = True, step=None,
            fields=SUMS[:3]) -> ChannelStats:
    """Stream `dataset` ((x, y) or x batches, already normalised) through `model` and sum the
    per-channel statistics of `layers` (default: every measure point). `taylor` also sums
    first-order Taylor terms and needs labels. `batches` caps the number of batches. `fields`:
    the activation sums to collect (default all three; fewer is faster). `step`: a
    `make_step(model, layers, taylor, fields)` to reuse (compiled once) across calls."""
    import tensorflow as tf
    from tqdm import tqdm
    layers = layers or measured_layers(measure_points(model), model)
    if not layers:
        raise StatsError(f"model {model.name!r} has no prunable layer to measure")
    has_labels = check_input(model, dataset)
    if taylor and not has_labels:
        raise StatsError("the taylor criterion needs labels: the dataset yields images only")
    if batches is not None:
        if batches < 1:
            raise StatsError(f"calibration batches must be >= 1, got {batches}")
        dataset = dataset.take(batches)
    step = step or make_step(model, layers, taylor, fields)
    totals, samples, seen = None, 0, 0
    for batch in tqdm(dataset, desc="channel statistics", unit="batch", disable=not progress,
                      total=batches):
        x = batch[0] if isinstance(batch, tuple) else batch
        if int(tf.shape(x)[0]) == 0:
            continue
        out = step(x, batch[1]) if taylor else step(x)
        if totals is None:
            totals = [{k: np.zeros(np.shape(v)[1:]) if np.ndim(v) else 0 for k, v in layer.items()}
                      for layer in out]
        totals = [{k: _add_in_order(t[k], v) for k, v in o.items()} for t, o in zip(totals, out)]
        samples, seen = samples + int(x.shape[0]), seen + 1
    if totals is None:
        raise StatsError("the calibration data yielded zero usable batches")
    stats = {n: LayerStats(**{k: t.get(k) for k in SUMS}, count=int(t["count"]), samples=samples)
             for n, t in zip(layers, totals)}
    return ChannelStats(stats, {"model": model.name, "batches": seen, "samples": samples})


def group_score(stats: ChannelStats, points: list[str], criterion: str, channels: int) -> np.ndarray:
    """One group's per-channel score: the mean over its measure points of each point's score.
    Every point's score is a per-element (or per-image) mean, so a group's score is the same
    kind of number as a single layer's and ranks on the same footing in global allocation. A
    point with `channels * m` channels (depthwise multiplier m) is averaged over its m copies."""
    if not points:
        raise StatsError("a group without measure points cannot be scored from statistics")
    parts = []
    for name in points:
        if name not in stats.layers:
            raise StatsError(f"no statistics for measured layer {name!r}")
        score = stats.layers[name].score(criterion)
        if len(score) % channels:
            raise StatsError(f"layer {name!r} has {len(score)} channels, group has {channels}")
        parts.append(score.reshape(channels, -1).mean(axis=1))
    return np.mean(parts, axis=0)
