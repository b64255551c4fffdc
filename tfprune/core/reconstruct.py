"""Refit a pruned model's kept weights so each layer reproduces the unpruned model's output.

Surgery keeps the weights of the kept filters, but every layer after a pruned one now sees
fewer (and changed) input channels. `reconstruct` walks the pruned model in order and, for
each Conv2D and Dense, solves a ridge least-squares problem on the device's images: its
kernel and bias, applied to the inputs the pruned model now feeds it, should give the source
model's output of that layer at the kept output channels (the reconstruction step of He et
al., "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017, and ThiNet).
Layers are solved in order, so each one also absorbs the error left upstream. No labels are
used: the targets are the source model's own activations.

The ridge term pulls towards the current weights (lambda scaled by the mean diagonal of the
normal equations), so a layer that lost nothing and sees its original inputs keeps its
weights. BatchNorm statistics are left as surgery sliced them; re-estimate them afterwards.
Depthwise, separable, grouped and transposed convolutions and shared layers are left as
they are (listed in the report as skipped).
"""
from __future__ import annotations

import numpy as np


def _kind(layer) -> str | None:
    import keras

    if len(getattr(layer, "_inbound_nodes", [])) > 1:
        return None
    if isinstance(layer, keras.layers.Conv2D):  # depthwise/separable/transposed are not
        plain = layer.groups == 1 and layer.data_format == "channels_last"
        return "conv" if plain else None
    if isinstance(layer, keras.layers.Dense) and len(layer.input.shape) == 2:
        return "dense"
    return None


def _rows(layer, kind: str, x):
    """The layer's input as a matrix whose rows times the flattened kernel give its output."""
    import tensorflow as tf

    if kind == "dense":
        return np.asarray(x, np.float64)
    kh, kw = layer.kernel_size
    patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, *layer.strides, 1],
                                       [1, *layer.dilation_rate, 1], layer.padding.upper())
    return np.asarray(patches, np.float64).reshape(-1, patches.shape[-1])


def _sse(w, gram, cross, target_sq: float) -> float:
    """Sum of squared errors of `rows @ w` against the targets, from the normal equations."""
    return float(np.einsum("ij,ij->", w, gram @ w) - 2 * np.einsum("ij,ij->", w, cross)
                 + target_sq)


def _solve(gram, cross, w0, ridge: float):
    reg = ridge * np.trace(gram) / len(gram)
    return np.linalg.solve(gram + reg * np.eye(len(gram)), cross + reg * w0)


def reconstruct(source, pruned, plan: dict, images: np.ndarray, ridge: float = 1e-3,
                batch_size: int = 100, log=None) -> list[dict]:
    """Refit `pruned`'s Conv2D/Dense weights in place (module doc) on `images` (model-ready
    inputs, N x H x W x C). `source` is the model the plan was applied to, or that model
    before residual branches were removed from it (`tfprune.core.depth`): every layer of
    `pruned` is in it by name, at its full width. Returns one row per layer: {layer,
    mse_before, mse_after} or {layer, skipped}."""
    import keras

    report = []
    for layer in pruned.layers:
        if not layer.weights or isinstance(layer, keras.layers.InputLayer):
            continue
        kind = _kind(layer)
        if kind is None:
            if any(hasattr(layer, k) for k in ("kernel", "depthwise_kernel")):
                report.append({"layer": layer.name, "skipped": "not a plain Conv2D/Dense"})
            continue
        target = source.get_layer(layer.name)
        kept = plan.get("layers", {}).get(layer.name, {}).get("out")
        inputs = keras.Model(pruned.inputs[0], layer.input)
        outputs = keras.Model(source.inputs[0], target.output)
        weights = layer.get_weights()
        kernel, bias = weights[0], (weights[1] if layer.use_bias else None)
        w0 = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
        if bias is not None:
            w0 = np.concatenate([w0, bias[None].astype(np.float64)])
        gram = np.zeros((len(w0), len(w0)))
        cross = np.zeros_like(w0)
        target_sq, entries = 0.0, 0
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            a = _rows(layer, kind, inputs(x, training=False))
            if bias is not None:
                a = np.concatenate([a, np.ones((len(a), 1))], 1)
            y = np.asarray(outputs(x, training=False), np.float64)
            y = (y[..., kept] if kept is not None else y).reshape(len(a), -1)
            gram += a.T @ a
            cross += a.T @ y
            target_sq += float((y * y).sum())
            entries += y.size
        w = _solve(gram, cross, w0, ridge)
        row = {"layer": layer.name,
               "mse_before": _sse(w0, gram, cross, target_sq) / entries,
               "mse_after": _sse(w, gram, cross, target_sq) / entries}
        kernel_rows = w[:-1] if bias is not None else w
        new = [kernel_rows.reshape(kernel.shape).astype(kernel.dtype)]
        if bias is not None:
            new.append(w[-1].astype(bias.dtype))
        layer.set_weights(new + weights[len(new):])
        report.append(row)
    refit = [r for r in report if "skipped" not in r]
    if log and refit:
        ratio = np.median([r["mse_after"] / max(r["mse_before"], 1e-12) for r in refit])
        log(f"reconstruct: refit {len(refit)} layers on {len(images)} images; median layer "
            f"output error {ratio:.2f}x of the pruned model's"
            + (f"; skipped {len(report) - len(refit)}" if len(refit) < len(report) else ""))
    return report
