"""A thin LiteRT-side driver of a trainable .tflite: what an app does, in Python, without TF.

Opens the model in `ai_edge_litert` with its default XNNPACK delegate (`xnnpack=False`: builtin
kernels only). XNNPACK cannot take a CONV_2D with a variable filter, but it runs the
BATCH_MATMULs of the "matmul" conv lowering (grads.matmul_conv2d), multithreaded; the
builtin BATCH_MATMUL is a slow reference loop, so a model exported with conv_impl matmul
(the default) wants XNNPACK (conv_impl conv runs well on builtin kernels alone). It checks inputs before they
reach the interpreter (batch shape, dtype, label range), pads a final partial batch (label -1
/ valid 0 on the padding rows), and keeps checkpoints as `.npz` files: the flat `state` tensor
of the `save` signature plus the manifest's fingerprint and layout, written to a temp file and
renamed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.fileio import atomic_write

TFLITE_NAME, MANIFEST_NAME = "trainable.tflite", "trainable.json"
SIGNATURES = ("train", "infer", "save", "restore", "set_learning_rate")


class RuntimeInputError(TfpruneError):
    """Input the trainable model cannot take; the message says what and what it expects."""


class TrainableRuntime:
    """One interpreter over `trainable.tflite` with its manifest (`trainable.json` beside it)."""

    def __init__(self, tflite_path, manifest_path=None, num_threads: int = 2,
                 xnnpack: bool = True):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = Path(tflite_path)
        manifest_path = Path(manifest_path or self.path.with_name(MANIFEST_NAME))
        if not self.path.is_file():
            raise RuntimeInputError(f"trainable model {self.path} does not exist")
        if not manifest_path.is_file():
            raise RuntimeInputError(f"manifest {manifest_path} of {self.path} does not exist")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise RuntimeInputError(f"manifest {manifest_path} is not valid JSON: {err}") from None
        missing = [k for k in ("batch_size", "input_shape", "num_classes")
                   if k not in self.manifest]
        if missing:
            raise RuntimeInputError(f"manifest {manifest_path} lacks {', '.join(missing)}: not a "
                                    "trainable.json written by tfprune.ondevice.export_trainable")
        if self.manifest.get("flex_required"):
            raise RuntimeInputError(
                f"{self.path} needs the Flex runtime ({', '.join(self.manifest['flex_ops'])}), "
                "which ai_edge_litert does not include")
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads,
                                           experimental_op_resolver_type=resolver)
        except ValueError as err:  # not a .tflite, or ops this runtime lacks
            raise RuntimeInputError(f"LiteRT cannot open {self.path}: {err}") from None
        self.runners = {k: self.interpreter.get_signature_runner(k)
                        for k in self.interpreter.get_signature_list()}
        missing = [k for k in SIGNATURES if k not in self.runners]
        if missing:
            raise RuntimeInputError(
                f"{self.path} is not a trainable model: it lacks the signatures "
                f"{', '.join(missing)} (it has {', '.join(self.runners) or 'none'}); export one "
                "with `python -m pipelines.convert --mode=trainable`")
        self.batch_size = int(self.manifest["batch_size"])
        self.input_shape = tuple(self.manifest["input_shape"])
        self.num_classes = int(self.manifest["num_classes"])

    # ------------------------------------------------------------ input checks
    def _images(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise RuntimeInputError(f"images of shape {x.shape} do not fit {self.path.name}: "
                                    f"expected (N, {', '.join(map(str, self.input_shape))})")
        if x.dtype != np.float32:
            raise RuntimeInputError(f"images must be normalised float32 (tfprune.data."
                                    f"normalize_np), got {x.dtype}")
        return x

    def _pad(self, x, fill, n):
        if len(x) > self.batch_size:
            raise RuntimeInputError(f"a batch of {len(x)} exceeds the exported batch size "
                                    f"{self.batch_size}; split it (or use infer/evaluate)")
        pad = self.batch_size - n
        return np.concatenate([x, np.full((pad, *x.shape[1:]), fill, x.dtype)]) if pad else x

    # ------------------------------------------------------------ signatures
    def train_batch(self, x, y) -> tuple[float, int]:
        """One optimiser step on up to batch_size images; returns (mean loss, correct)."""
        x = self._images(x)
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise RuntimeInputError(f"labels must be integers of shape ({len(x)},), got "
                                    f"{y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            bad = y[(y < 0) | (y >= self.num_classes)]
            raise RuntimeInputError(f"labels {sorted(set(bad.tolist()))[:5]} are out of range "
                                    f"[0, {self.num_classes})")
        if len(x) == 0:
            raise RuntimeInputError("an empty batch cannot train")
        out = self.runners["train"](x=self._pad(x, 0.0, len(x)),
                                    y=self._pad(y.astype(np.int32), -1, len(x)))
        return float(out["loss"]), int(round(float(out["correct"])))

    def logits(self, x) -> np.ndarray:
        """Logits for any number of images (chunks of batch_size, the last one padded)."""
        x, out = self._images(x), []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            out.append(self.runners["infer"](x=self._pad(chunk, 0.0, len(chunk)))["logits"][:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def correct(self, x, y) -> np.ndarray:
        """Per image: is the top-1 class the label?"""
        return np.argmax(self.logits(x), -1) == np.asarray(y)

    def evaluate(self, x, y) -> float:
        """Top-1 accuracy."""
        return float(np.mean(self.correct(x, y))) if len(y) else 0.0

    def filter_stats(self, x) -> dict[str, dict[str, np.ndarray]]:
        """{layer: {sum_abs, sum_sq, zeros, count}} summed over all images (float64)."""
        x, total = self._images(x), {}
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            valid = self._pad(np.ones(len(chunk), np.float32), 0.0, len(chunk))
            out = self.runners["filter_stats"](x=self._pad(chunk, 0.0, len(chunk)), valid=valid)
            for key, value in out.items():
                if key == "samples":
                    continue
                layer, _, stat = key.rpartition("__")
                acc = total.setdefault(layer, {})
                acc[stat] = acc.get(stat, 0.0) + np.asarray(value, np.float64)
        return total

    def channel_stats(self, x, meta: dict | None = None):
        """`filter_stats` as tfprune.scoring.stats.ChannelStats (the host's structure and scores)."""
        from tfprune.scoring.stats import ChannelStats
        return ChannelStats.from_filter_stats(self.filter_stats(x), samples=len(x), meta=meta)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.runners["set_learning_rate"](learning_rate=np.float32(learning_rate))

    # ------------------------------------------------------------ checkpoints
    def state(self) -> np.ndarray:
        # `save` takes an ignored `unused` input where the export has it: Android's
        # runSignature refuses input-less calls.
        unused = {"unused": np.float32(0)} if self.runners["save"].get_input_details() else {}
        return np.array(self.runners["save"](**unused)["state"], copy=True)

    def variables(self) -> dict[str, np.ndarray]:
        """{layout name: array} of the current state (weights, slots, iterations, lr)."""
        state = self.state()
        return {e["name"]: state[e["offset"]:e["offset"] + e["size"]].reshape(e["shape"])
                for e in self.manifest["state_layout"]}

    def save(self, path) -> Path:
        return atomic_write(path, lambda tmp: np.savez(
            tmp, state=self.state(), fingerprint=np.str_(self.manifest["fingerprint"]),
            model=np.str_(self.manifest["model"]),
            names=np.array([e["name"] for e in self.manifest["state_layout"]])), ".npz")

    def restore(self, path) -> int:
        """Load a checkpoint written by `save`; returns the restored step count."""
        try:
            with np.load(path, allow_pickle=False) as ckpt:
                state, fingerprint, model = ckpt["state"], str(ckpt["fingerprint"]), str(ckpt["model"])
        except (OSError, ValueError, KeyError) as err:
            raise RuntimeInputError(f"{path} is not a tfprune on-device checkpoint: {err}") from None
        if fingerprint != self.manifest["fingerprint"]:
            raise RuntimeInputError(
                f"checkpoint {path} belongs to another model ({model}, fingerprint {fingerprint}); "
                f"{self.path.name} is {self.manifest['model']} with fingerprint "
                f"{self.manifest['fingerprint']}")
        if state.shape != (self.manifest["state_size"],) or state.dtype != np.float32:
            raise RuntimeInputError(f"checkpoint {path} holds {state.dtype} {state.shape}; "
                                    f"expected float32 ({self.manifest['state_size']},)")
        out = self.runners["restore"](state=state)
        return int(round(float(out["iterations"])))
