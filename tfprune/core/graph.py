"""Channel dependency graph: which filters must be removed together, and which never.

`build_graph(model_or_spec, ignore=())` reads the model (see `tfprune.core.modelspec`) and walks its
layers in topological order, letting each layer's rule (`tfprune.core.rules`) map input channel
provenances to output ones. Every filter of a producer (Conv*, Dense, SeparableConv2D, ...)
is an *atom*; merges tie atoms together (union-find). The result:

- `Group`: producers coupled through merges; its channels (`size`) are the tied atom
  classes, pruned as one (the same index in every member). `member_channels[name][i]` is the
  group channel of filter i of member `name`. `flow` lists the layers the group's channels
  pass through (BatchNorm, activations, merges, pooling, concatenations, ...) in topological
  order, `consumers` the layers whose input channels get sliced. `blocked_by` lists
  (layer, reason) pairs that make the whole group unprunable (model outputs, `ignore`,
  Lambda/custom layers, LayerNormalization over channels, channel-moving Reshape, ...).
- `ChannelGraph.channel_path(producer)` / `measure_point(producer)`: the one walk from a
  filter to where its channel is consumed (through BatchNorm, activations and tying merges);
  data-aware criteria measure at the measure point, `bn_gamma` reads the first BatchNorm.
- `ChannelGraph.keep_mask(kept)` / `tensor_mask` / `counts`: turn kept group channels into
  per-tensor masks and parameter / MAC / filter counts, without building a model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from tfprune.core import modelspec
from tfprune.core import rules
from tfprune.errors import TfpruneError


@dataclasses.dataclass
class Group:
    id: int
    members: tuple
    size: int
    member_channels: dict
    flow: tuple = ()
    consumers: tuple = ()
    blocked_by: tuple = ()
    blocks: int = 1               # grouped convs: keep the same number in each of `blocks`

    @property
    def prunable(self) -> bool:
        return not self.blocked_by


ACTIVATIONS = ("ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU")


class GraphError(TfpruneError):
    """A model or option the graph cannot take; the message names the layer."""


class _Builder:
    """Atoms, their owners, union-find over atoms, and block reasons."""

    def __init__(self):
        self.parent, self.owner, self.blocks = [], [], {}
        self.producers, self.blocks_of = {}, {}

    def new_atoms(self, name, n, blocks=1):
        self.blocks_of[name] = blocks
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.owner.extend([name] * n)
        self.producers[name] = (start, n)
        return np.arange(start, start + n, dtype=np.int64)

    @staticmethod
    def fixed(n):
        return np.full(n, -1, dtype=np.int64)

    def find(self, a):
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, p, q, layer=None):
        for a, b in zip(p.tolist(), q.tolist()):
            if a < 0 or b < 0:
                if max(a, b) >= 0:
                    self.blocks.setdefault(max(a, b), set()).add(
                        (layer or "?", "tied to a channel that cannot be removed"))
                continue
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    def block(self, prov, layer, reason):
        for a in np.unique(prov[prov >= 0]).tolist():
            self.blocks.setdefault(a, set()).add((layer, reason))


class _LayerBuilder:
    """The builder as a rule sees it: unions and blocks name the layer."""

    def __init__(self, b, layer):
        self.b, self.layer = b, layer
        self.new_atoms, self.fixed, self.block = b.new_atoms, b.fixed, b.block

    def union(self, p, q):
        self.b.union(p, q, self.layer)


class ChannelGraph:
    def __init__(self, spec, ignore=()):
        self.spec = spec
        self.ignore = tuple(ignore)
        unknown = [n for n in self.ignore if n not in spec.layers]
        if unknown:
            raise GraphError(f"--ignore names no layer of the model: {', '.join(unknown)}")
        self.rules = {name: rules.rule_for(layer) for name, layer in spec.layers.items()}
        b = _Builder()
        self.prov, self._multi = {}, {}
        for name, layer in spec.layers.items():
            ins = [self._ref_prov(ref) for ref in layer.inputs]
            out = self.rules[name].propagate(layer, ins, _LayerBuilder(b, name))
            if isinstance(out, list):  # several outputs (all fixed): one array per output
                self._multi[name] = out
                out = np.concatenate(out)
            self.prov[name] = np.asarray(out)
        for ref in spec.outputs:
            b.block(self.prov[ref[0]], ref[0], "model output")
        for name in self.ignore:
            b.block(self.prov[name], name, "ignored (--ignore)")
        self._finish(b)

    def _finish(self, b):
        n = len(b.parent)
        roots = np.array([b.find(a) for a in range(n)], dtype=np.int64)
        owners = np.array(b.owner, dtype=object)
        producers = list(b.producers)
        pidx = {p: i for i, p in enumerate(producers)}
        pparent = list(range(len(producers)))

        def pfind(i):
            while pparent[i] != i:
                pparent[i] = pparent[pparent[i]]
                i = pparent[i]
            return i

        for a in range(n):
            r = roots[a]
            if r != a:
                x, y = pfind(pidx[owners[a]]), pfind(pidx[owners[r]])
                if x != y:
                    pparent[max(x, y)] = min(x, y)
        comp = {}
        for p in producers:
            comp.setdefault(pfind(pidx[p]), []).append(p)
        self.producers = b.producers
        self.atom_group = np.full(n + 1, -1, dtype=np.int64)
        self.atom_class = np.full(n + 1, -1, dtype=np.int64)
        self.groups = []
        for members in comp.values():
            gid = len(self.groups)
            atoms = np.concatenate([np.arange(*_span(b.producers[m])) for m in members])
            classes = np.unique(roots[atoms])
            self.atom_group[atoms] = gid
            self.atom_class[atoms] = np.searchsorted(classes, roots[atoms])
            reasons = sorted({r for a in atoms.tolist() for r in b.blocks.get(a, ())})
            member_channels = {m: self.atom_class[np.arange(*_span(b.producers[m]))]
                               for m in members}
            blocks = int(np.lcm.reduce([b.blocks_of[m] for m in members]))
            if blocks > 1 and any(not np.array_equal(member_channels[m], np.arange(len(classes)))
                                  for m in members if b.blocks_of[m] > 1):
                reasons.append((members[0], "grouped convolution tied out of channel order"))
            self.groups.append(Group(gid, tuple(members), len(classes), member_channels,
                                     blocked_by=tuple(reasons), blocks=blocks))
        self._flow()

    def _flow(self):
        flow = {g.id: [] for g in self.groups}
        consumers = {g.id: [] for g in self.groups}
        for name, layer in self.spec.layers.items():
            out = set(np.unique(self.atom_group[self.prov[name]]).tolist()) - {-1}
            ins = set()
            for prov in self.input_provs(name):
                ins |= set(np.unique(self.atom_group[prov]).tolist()) - {-1}
            for gid in out:
                if not self.rules[name].producer:
                    flow[gid].append(name)
            for gid in ins:
                if name not in flow[gid]:
                    consumers[gid].append(name)
        for g in self.groups:
            g.flow, g.consumers = tuple(flow[g.id]), tuple(consumers[g.id])

    # --- queries -------------------------------------------------------------------------
    def prunable_groups(self) -> list:
        return [g for g in self.groups if g.prunable and g.size > 0]

    def group_of(self, producer: str) -> Group:
        start, _ = self.producers[producer]
        return self.groups[self.atom_group[start]]

    def consumers_of(self, name: str) -> list:
        return [n for n, l in self.spec.layers.items() if any(r[0] == name for r in l.inputs)]

    def channel_path(self, producer: str) -> list[str]:
        """The layers `producer`'s filters pass through, in order, until their channels are
        consumed: single-consumer BatchNorm, activation layers and channel-tying merges (Add,
        Multiply, ...; not Concatenate), stopping where the tensor fans out, at a Keras
        backend op, or at anything else."""
        path, name = [], producer
        while True:
            nxt = self.consumers_of(name)
            if len(nxt) != 1 or self.spec.layers[nxt[0]].is_op:
                return path
            rule, layer = self.rules[nxt[0]], self.spec.layers[nxt[0]]
            follows = (isinstance(rule, (rules.BatchNorm, rules.Activation))
                       or type(rule) is rules.Merge
                       or (isinstance(rule, rules.PassThrough) and layer.class_name in ACTIVATIONS))
            if not follows:
                return path
            name = nxt[0]
            path.append(name)

    def measure_point(self, producer: str) -> str:
        """The layer whose output carries `producer`'s filters as the next layer sees them
        (the end of `channel_path`); for a residual group, the post-add activation."""
        path = self.channel_path(producer)
        return path[-1] if path else producer

    def _ref_prov(self, ref):
        return self._multi[ref[0]][ref[2]] if ref[0] in self._multi else self.prov[ref[0]]

    def input_provs(self, name: str) -> list:
        return [self._ref_prov(ref) for ref in self.spec.layers[name].inputs]

    def keep_mask(self, kept: dict | None = None) -> np.ndarray:
        """Bool per atom (plus a trailing True for fixed channels, index -1): `kept` maps a
        group id to its kept channel indices; groups not named keep everything."""
        mask = np.ones(len(self.atom_group), dtype=bool)
        for gid, idx in (kept or {}).items():
            sel = self.atom_group[:-1] == gid
            keep_class = np.zeros(self.groups[gid].size, dtype=bool)
            keep_class[np.asarray(idx, dtype=np.int64)] = True
            mask[:-1][sel] = keep_class[self.atom_class[:-1][sel]]
        return mask

    @staticmethod
    def tensor_mask(prov, keep) -> np.ndarray:
        return keep[prov]

    def counts(self, keep=None, per_layer=False) -> dict:
        """Parameters, MACs, weight bytes and producer filters of the model with `keep`."""
        keep = np.ones(len(self.atom_group), dtype=bool) if keep is None else keep
        totals = {"params": 0, "macs": 0, "bytes": 0, "filters": 0}
        layers = {}
        for name, layer in self.spec.layers.items():
            rule = self.rules[name]
            if not layer.weights and not rule.producer:
                continue
            n_out = int(keep[self.prov[name]].sum())
            ins = self.input_provs(name)
            n_in = int(keep[ins[0]].sum()) if ins else 0
            mult = int(layer.config.get("depth_multiplier", 1))
            sizes = []
            for w, axes in zip(layer.weights, rule.weight_axes(layer)):
                shape = list(w.shape)
                for axis, kind in axes.items():
                    shape[axis] = {"in": n_in, "in_rep": n_in * mult, "out": n_out}[kind]
                sizes.append((int(np.prod(shape, dtype=np.int64)), w.dtype.itemsize))
            params = sum(s for s, _ in sizes)
            macs = rule.positions(layer) * sum(sizes[i][0] for i in rule.mac_weights
                                               if i < len(sizes))
            row = {"params": params, "macs": int(macs), "bytes": sum(s * i for s, i in sizes),
                   "filters": n_out if rule.producer else 0}
            for k in totals:
                totals[k] += row[k]
            if per_layer:
                layers[name] = dict(row, class_name=layer.class_name)
        if per_layer:
            totals["layers"] = layers
        return totals

    def fingerprint(self) -> str:
        """sha256 of the architecture: layer names, types, wiring and weight shapes."""
        arch = [[n, l.class_name, [list(r) for r in l.inputs], [list(w.shape) for w in l.weights]]
                for n, l in self.spec.layers.items()]
        return hashlib.sha256(json.dumps(arch).encode()).hexdigest()

    def describe_blocked(self) -> list:
        return [{"group": g.id, "members": list(g.members), "channels": g.size,
                 "blocked_by": [{"layer": l, "reason": r} for l, r in g.blocked_by]}
                for g in self.groups if not g.prunable]


def _span(producer):
    start, n = producer
    return start, start + n


def build_graph(model_or_spec, ignore=()) -> ChannelGraph:
    """The channel graph of a Keras model (or an already read `ModelSpec`)."""
    spec = model_or_spec if isinstance(model_or_spec, modelspec.ModelSpec) else \
        modelspec.read_model(model_or_spec)
    return ChannelGraph(spec, ignore)
