"""Differentiable ops whose backward pass lowers to builtin TFLite ops only.

Plain TF autodiff of a conv net emits Conv2DBackpropFilter, ReluGrad, MaxPoolGrad,
BiasAddGrad, SparseSoftmaxCrossEntropyWithLogits..., which exist in TFLite only as Flex ops.
Each op here is a `tf.custom_gradient` whose gradient is written with ops that have builtin
TFLite kernels:

- conv2d, "matmul" lowering (the default, for the XNNPACK delegate; `matmul_conv2d`):
  BATCH_MATMULs forward and back over shifted rows of the flattened image (stride 1) or of its
  SPACE_TO_DEPTH blocks (stride s).
  "conv" lowering: input gradient = conv2d_transpose (TRANSPOSE_CONV); filter gradient
  = ONE CONV_2D: dW[kh,kw,ci,co] = sum_{n,h,w} xpad[n, h*s+kh, w*s+kw, ci] * dy[n,h,w,co] is a VALID
  convolution of xpad transposed to (ci, H, W, N) with dy transposed to (Ho, Wo, N, co) as the
  filter, dilation = stride, cropped to (kh, kw). 1x1 kernels use one matmul instead.
- depthwise_conv2d: input gradient = depthwise conv of the zero-upsampled dy with the flipped
  kernel; filter gradient = kh*kw strided slices, MUL and SUM.
- relu / relu6: MUL by SIGN of the saved output; max_pool (window == stride): the gradient goes
  to the first maximum of each window (TF's MaxPoolGrad rule), by slices, compares and SELECT.
- dense: matmuls; global average pooling: a broadcast; softmax cross-entropy: softmax - one_hot.
"""
from __future__ import annotations

import tensorflow as tf

from tfprune.errors import TfpruneError


def same_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TF's SAME / VALID rule on one spatial axis."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _pads(shape, kernel, strides, padding):
    (oh, pt, pb), (ow, pl, pr) = (same_padding(shape[1], kernel[0], strides[0], padding),
                                  same_padding(shape[2], kernel[1], strides[1], padding))
    return (oh, ow), [[0, 0], [pt, pb], [pl, pr], [0, 0]]


def _tf_padding(padding: str) -> str:
    return "SAME" if padding == "same" else "VALID"


def conv2d_filter_grad(x, dy, kernel, strides, padding):
    """dW of a conv (kh, kw, ci, co) as one dilated CONV_2D (or one matmul for 1x1)."""
    kh, kw = kernel
    (oh, ow), pads = _pads(x.shape, kernel, strides, padding)
    if kernel == (1, 1):
        xs = x[:, :(oh - 1) * strides[0] + 1:strides[0], :(ow - 1) * strides[1] + 1:strides[1], :]
        xm = tf.reshape(xs, [-1, x.shape[-1]])
        dym = tf.reshape(dy, [-1, dy.shape[-1]])
        return tf.reshape(tf.matmul(xm, dym, transpose_a=True), [1, 1, x.shape[-1], dy.shape[-1]])
    xp = tf.pad(x, pads) if any(p for pair in pads for p in pair) else x
    xt = tf.transpose(xp, [3, 1, 2, 0])          # (ci, Hp, Wp, N)
    dyt = tf.transpose(dy, [1, 2, 0, 3])         # (Ho, Wo, N, co)
    out = tf.nn.conv2d(xt, dyt, strides=1, padding="VALID", dilations=list(strides))
    return tf.transpose(out[:, :kh, :kw, :], [1, 2, 0, 3])


XNNPACK_MAX_CONCAT = 5  # XNNPACK's CONCATENATION takes 2..5 inputs; more run on a builtin kernel


def _concat(tensors):
    """Concatenate on the last axis in steps of at most XNNPACK_MAX_CONCAT inputs."""
    while len(tensors) > XNNPACK_MAX_CONCAT:
        step = XNNPACK_MAX_CONCAT
        tensors = [_concat(tensors[i:i + step]) for i in range(0, len(tensors), step)]
    return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=-1)


def _sum(tensors):
    """Chained ADDs (XNNPACK runs ADD; ADD_N stays on a builtin kernel)."""
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


# Conv2D lowering: "matmul" (BATCH_MATMULs forward and back, for the XNNPACK delegate:
# `matmul_conv2d`) or "conv" (CONV_2D forward, TRANSPOSE_CONV input gradient, one dilated
# CONV_2D filter gradient). Quiet 2-core machine, ResNet-20 batch 32 train step:
# benchmarks/results/ondevice_train.md.
CONV_IMPLS = ("matmul", "conv")
DEFAULT_CONV_IMPL = "matmul"


def check_conv_impl(impl: str) -> str:
    if impl not in CONV_IMPLS:
        raise TfpruneError(f"conv_impl {impl!r} is not one of {', '.join(CONV_IMPLS)}")
    return impl


def conv2d(x, w, strides=(1, 1), padding="same", impl: str = "conv"):
    """Conv2D (no bias) with a builtin-only backward pass."""
    strides, kernel = tuple(strides), tuple(w.shape[:2])
    if check_conv_impl(impl) == "matmul" and strides[0] == strides[1]:
        return matmul_conv2d(x, w, strides[0], padding)

    @tf.custom_gradient
    def op(x, w):
        y = tf.nn.conv2d(x, w, strides=list(strides), padding=_tf_padding(padding))

        def grad(dy):
            dx = tf.nn.conv2d_transpose(dy, w, tf.shape(x), strides=list(strides),
                                        padding=_tf_padding(padding))
            return dx, conv2d_filter_grad(x, dy, kernel, strides, padding)
        return y, grad
    return op(x, w)


def matmul_conv2d(x, w, stride: int = 1, padding="same"):
    """Conv2D as BATCH_MATMULs, forward and backward: 1x1 convs are one matmul
    (`pointwise_conv2d`), other stride-1 convs `shifted_rows_conv2d`, and a stride-s conv is a
    stride-1 conv over SPACE_TO_DEPTH(x, s) with a kernel of ceil(k / s) taps (the kernel's
    taps regrouped by their offset within an s x s block; a 1x1 conv reads block offset
    (0, 0)). Around the custom-gradient cores only PAD, SLICE, SPACE_TO_DEPTH, RESHAPE and
    TRANSPOSE, whose TF gradients are builtin too (SLICE, PAD, DEPTH_TO_SPACE, ...).

    Why: TFLite's x86 CONV_2D/TRANSPOSE_CONV with a non-constant filter run im2col + an Eigen
    GEMM on one thread whatever num_threads says (the multithreaded conv kernel needs a
    constant filter; float GEMM goes to Eigen, not ruy, on x86), and the XNNPACK delegate
    refuses non-constant conv filters. It takes BATCH_MATMUL with two dynamic operands
    (multithreaded, AVX-512 GEMM kernels). Without XNNPACK, the builtin BATCH_MATMUL is a slow
    reference loop: run it with XNNPACK."""
    kh, kw, c, co = w.shape
    if stride == 1:
        return pointwise_conv2d(x, w) if kh * kw == 1 else shifted_rows_conv2d(x, w, padding)
    n = x.shape[0]
    (oh, ow), pads = _pads(x.shape, (kh, kw), (stride, stride), padding)
    kah, kaw = -(-kh // stride), -(-kw // stride)          # taps per block axis
    rows, cols = stride * (oh + kah - 1), stride * (ow + kaw - 1)   # the pixels the conv reads
    blocks = _blocks(x, stride, rows, cols, pads[1][0], pads[2][0])
    if kh * kw == 1:
        return pointwise_conv2d(tf.slice(blocks, [0, 0, 0, 0], [n, oh, ow, c]), w)
    wb = tf.pad(w, [[0, kah * stride - kh], [0, kaw * stride - kw], [0, 0], [0, 0]])
    wb = tf.transpose(tf.reshape(wb, [kah, stride, kaw, stride, c, co]), [0, 2, 1, 3, 4, 5])
    wb = tf.reshape(wb, [kah, kaw, stride * stride * c, co])
    return matmul_conv2d(blocks, wb, 1, "valid")


def pointwise_conv2d(x, w):
    """1x1 stride-1 conv: y = x @ W per image, dW = sum_n x_n^T dy_n, dx = dy @ W^T."""
    n, h, wd, c = x.shape
    co = w.shape[-1]

    @tf.custom_gradient
    def op(x, w):
        x3, w3 = tf.reshape(x, [n, h * wd, c]), tf.reshape(w, [1, c, co])

        def grad(dy):
            dy3 = tf.reshape(dy, [n, h * wd, co])
            dw = tf.reduce_sum(tf.matmul(x3, dy3, transpose_a=True), axis=0)
            return (tf.reshape(tf.matmul(dy3, w3, transpose_b=True), x.shape),
                    tf.reshape(dw, w.shape))
        return tf.reshape(tf.matmul(x3, w3), [n, h, wd, co]), grad
    return op(x, w)


def shifted_rows_conv2d(x, w, padding="same"):
    """Stride-1 Conv2D as one GEMM per image with little copying. Each padded image is
    flattened to (Hp * Wp, C) rows, so a shift by (i, j) pixels is a shift by i * Wp + j rows
    (outputs are computed for all Wp columns and the kw - 1 wrapped ones dropped). Only the kw
    column shifts are concatenated (R: (N, Hp * Wp, kw * C)); one GEMM takes all kernel rows
    at once, Z = R @ W' (W': (kw * C, kh * Co)), and y = sum_i of Z's i-th Co-block shifted up
    by i * Wp rows. Backward is the same in reverse: dZ stacks dy shifted down, dW' = R^T dZ,
    dR = dZ W'^T, dx = sum_j of dR's j-th C-block shifted back by j rows. Full im2col would
    copy 9x the activations twice (a 3x3 kernel) where this copies ~3x, and the GEMM is kh
    times wider (XNNPACK's 32-wide tiles are half empty for a 16-channel layer)."""
    kh, kw, c, co = w.shape
    n, h, wd, _ = x.shape
    (oh, ow), pads = _pads(x.shape, (kh, kw), (1, 1), padding)
    hp, wp = h + sum(pads[1]), wd + sum(pads[2])
    extra = 1 if kw > 1 else 0          # a zero row: the last column shift runs kw - 1 past
    span, out_rows = hp * wp, oh * wp
    [(pt, _), (pl, _)] = pads[1], pads[2]

    def stack_w(w):                     # (kh, kw, C, Co) -> (1, kw * C, kh * Co)
        return tf.reshape(tf.transpose(w, [1, 2, 0, 3]), [1, kw * c, kh * co])

    @tf.custom_gradient
    def op(x, w):
        flat = tf.reshape(tf.pad(x, [pads[0], [pads[1][0], pads[1][1] + extra], pads[2], [0, 0]]),
                          [n, (hp + extra) * wp, c])
        rows = _concat([flat[:, j:j + span] for j in range(kw)])
        z = tf.matmul(rows, stack_w(w))
        y = _sum([z[:, i * wp:i * wp + out_rows, i * co:(i + 1) * co] for i in range(kh)])
        y = tf.reshape(y, [n, oh, wp, co])[:, :, :ow, :]

        def grad(dy):
            dy = tf.reshape(tf.pad(dy, [[0, 0], [0, 0], [0, wp - ow], [0, 0]]), [n, out_rows, co])
            dz = _concat([_shift_rows(dy, i * wp, (kh - 1 - i) * wp) for i in range(kh)])
            dw = tf.reduce_sum(tf.matmul(rows, dz, transpose_a=True), axis=0)
            dw = tf.transpose(tf.reshape(dw, [kw, c, kh, co]), [2, 0, 1, 3])
            drows = tf.matmul(dz, stack_w(w), transpose_b=True)
            dflat = _sum([_shift_rows(drows[:, :, j * c:(j + 1) * c], j, extra * wp - j)
                          for j in range(kw)])
            dx = tf.reshape(dflat, [n, hp + extra, wp, c])[:, pt:pt + h, pl:pl + wd, :]
            return dx, dw
        return y, grad
    return op(x, w)


def _shift_rows(t, before: int, after: int):
    """(N, R, C) with `before` zero rows prepended and `after` appended. Padded as (N, R * C):
    XNNPACK's PAD copies C floats at a time on the 3-d tensor, and RESHAPE is free."""
    n, r, c = t.shape
    flat = tf.pad(tf.reshape(t, [n, r * c]), [[0, 0], [before * c, after * c]])
    return tf.reshape(flat, [n, r + before + after, c])


def _blocks(x, s: int, rows: int, cols: int, top: int = 0, left: int = 0):
    """SPACE_TO_DEPTH(s) of the rows x cols window of x padded by `top`/`left` zeros (and by
    zeros after, as far as the window needs): pixel (s*a + i, s*b + j) of the window becomes
    channel (i * s + j) * C + c of block (a, b). Pad and SLICE: builtin TF gradients."""
    n, h, w, c = x.shape
    xp = tf.pad(x, [[0, 0], [top, max(rows - h - top, 0)], [left, max(cols - w - left, 0)], [0, 0]])
    return tf.nn.space_to_depth(tf.slice(xp, [0, 0, 0, 0], [n, rows, cols, c]), s)


def strided_taps(xp, kernel, strides, out_hw):
    """[xp[:, i : i + s*(oh-1) + 1 : s, j : ..., :] for each kernel tap (i, j)], row-major.
    A stride > 1 reads the taps as unit-stride slices of SPACE_TO_DEPTH(xp, s) (a strided
    STRIDED_SLICE runs on a builtin reference kernel, not XNNPACK's slice)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, strides, out_hw
    if sh == sw == 1 or sh != sw:
        return [xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
                for i in range(kh) for j in range(kw)]
    s, c = sh, xp.shape[-1]
    blocks = _blocks(xp, s, s * (oh + (kh - 1) // s), s * (ow + (kw - 1) // s))
    return [blocks[:, i // s:i // s + oh, j // s:j // s + ow,
                   ((i % s) * s + j % s) * c:((i % s) * s + j % s + 1) * c]
            for i in range(kh) for j in range(kw)]


def _upsample_zeros(dy, strides):
    """Insert stride-1 zeros between the rows and columns of dy: (N,(Ho-1)*s+1,(Wo-1)*s+1,C)."""
    n, h, w, c = dy.shape
    sh, sw = strides
    if sw > 1:
        dy = tf.pad(tf.reshape(dy, [n * h, w, 1, c]), [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
        dy = tf.reshape(dy, [n, h, w * sw, c])[:, :, :(w - 1) * sw + 1, :]
        w = (w - 1) * sw + 1
    if sh > 1:
        dy = tf.pad(tf.reshape(dy, [n, h, 1, w * c]), [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
        dy = tf.reshape(dy, [n, h * sh, w, c])[:, :(h - 1) * sh + 1, :, :]
    return dy


def depthwise_conv2d(x, w, strides=(1, 1), padding="same"):
    """DepthwiseConv2D (depth multiplier 1, no bias) with a builtin-only backward pass."""
    strides, kernel = tuple(strides), tuple(w.shape[:2])
    if w.shape[3] != 1:
        raise TfpruneError(f"depthwise_conv2d: depth multiplier {w.shape[3]} (kernel {w.shape}); "
                         "only 1 has a builtin gradient (forward.py falls back to Flex)")

    @tf.custom_gradient
    def op(x, w):
        y = tf.nn.depthwise_conv2d(x, w, [1, *strides, 1], padding=_tf_padding(padding))

        def grad(dy):
            (oh, ow), pads = _pads(x.shape, kernel, strides, padding)
            hp, wp = x.shape[1] + sum(pads[1]), x.shape[2] + sum(pads[2])
            kh, kw = kernel
            # dx_pad = full correlation of zero-upsampled dy with the flipped kernel.
            up = _upsample_zeros(dy, strides)
            extra_h, extra_w = hp - ((oh - 1) * strides[0] + kh), wp - ((ow - 1) * strides[1] + kw)
            up = tf.pad(up, [[0, 0], [kh - 1, kh - 1 + extra_h], [kw - 1, kw - 1 + extra_w], [0, 0]])
            dxp = tf.nn.depthwise_conv2d(up, tf.reverse(w, [0, 1]), [1, 1, 1, 1], "VALID")
            dx = dxp[:, pads[1][0]:pads[1][0] + x.shape[1], pads[2][0]:pads[2][0] + x.shape[2], :]
            taps = strided_taps(tf.pad(x, pads), kernel, strides, (oh, ow))
            dw = tf.stack([tf.reduce_sum(tap * dy, axis=[0, 1, 2]) for tap in taps])
            dw = tf.reshape(dw, [kh, kw, x.shape[3], 1])
            return dx, dw
        return y, grad
    return op(x, w)


def bias_add(x, b):
    @tf.custom_gradient
    def op(x, b):
        def grad(dy):
            return dy, tf.reduce_sum(tf.reshape(dy, [-1, dy.shape[-1]]), axis=0)
        return x + b, grad
    return op(x, b)


def dense(x, w):
    """x @ w with matmul gradients (FULLY_CONNECTED / BATCH_MATMUL)."""
    @tf.custom_gradient
    def op(x, w):
        def grad(dy):
            return tf.matmul(dy, w, transpose_b=True), tf.matmul(x, dy, transpose_a=True)
        return tf.matmul(x, w), grad
    return op(x, w)


def relu(x, max_value: float | None = None):
    """ReLU / ReLU6: gradient passes where 0 < x (< max_value), as TF's ReluGrad/Relu6Grad.
    The mask is SIGN of the output (times SIGN(max_value - y)), exactly 0 or 1, multiplied
    in: a builtin SIGN loop and an XNNPACK MUL, twice as fast as the builtin GREATER /
    LOGICAL_AND / SELECT_V2 kernels (measured on a 32x32x32x16 tensor)."""
    @tf.custom_gradient
    def op(x):
        y = tf.nn.relu(x) if max_value is None else tf.minimum(tf.nn.relu(x), max_value)

        def grad(dy):
            keep = tf.sign(y) if max_value is None else tf.sign(y) * tf.sign(max_value - y)
            return dy * keep
        return y, grad
    return op(x)


def max_pool(x, pool, padding="valid"):
    """Non-overlapping max pooling (window == stride); gradient to each window's first max."""
    ph, pw = pool

    @tf.custom_gradient
    def op(x):
        y = tf.nn.max_pool2d(x, [ph, pw], [ph, pw], _tf_padding(padding))

        def grad(dy):
            n, h, w, c = x.shape
            oh, ow = dy.shape[1], dy.shape[2]
            (_, pads) = _pads(x.shape, (ph, pw), (ph, pw), padding)
            xp = tf.pad(x, pads, constant_values=float("-inf")) if padding == "same" else x
            taken = tf.zeros_like(dy, dtype=tf.bool)
            parts = []
            for xs in strided_taps(xp, (ph, pw), (ph, pw), (oh, ow)):
                hit = tf.logical_and(tf.equal(xs, y), tf.logical_not(taken))
                taken = tf.logical_or(taken, hit)
                parts.append(tf.where(hit, dy, tf.zeros_like(dy)))
            if ph == pw:   # window offset (i, j) -> block channel (i * p + j) * C: DEPTH_TO_SPACE
                g = tf.nn.depth_to_space(_concat(parts), ph)
            else:
                g = tf.stack(parts, axis=3)                      # (n, oh, ow, ph*pw, c)
                g = tf.reshape(g, [n, oh, ow, ph, pw, c])
                g = tf.reshape(tf.transpose(g, [0, 1, 3, 2, 4, 5]), [n, oh * ph, ow * pw, c])
            top, left = pads[1][0], pads[2][0]
            g = g[:, top:top + min(h, oh * ph - top), left:left + min(w, ow * pw - left), :]
            return tf.pad(g, [[0, 0], [0, h - g.shape[1]], [0, w - g.shape[2]], [0, 0]])
        return y, grad
    return op(x)


def global_avg_pool(x, keepdims=False):
    @tf.custom_gradient
    def op(x):
        def grad(dy):
            d = tf.reshape(dy, [x.shape[0], 1, 1, x.shape[3]]) / float(x.shape[1] * x.shape[2])
            return tf.broadcast_to(d, x.shape)
        return tf.reduce_mean(x, axis=[1, 2], keepdims=keepdims), grad
    return op(x)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy over the rows whose label is in [0, classes); other labels (e.g. -1
    for the padding rows of a final partial batch) are ignored. Returns (loss, valid rows)."""
    classes = logits.shape[-1]
    onehot = tf.one_hot(labels, classes, dtype=logits.dtype)
    count = tf.reduce_sum(onehot)

    @tf.custom_gradient
    def op(logits):
        logp = tf.nn.log_softmax(logits)
        denom = tf.maximum(count, 1.0)
        loss = -tf.reduce_sum(onehot * logp) / denom

        def grad(dl):
            valid = tf.reduce_sum(onehot, axis=-1, keepdims=True)
            return dl * (tf.exp(logp) * valid - onehot) / denom
        return loss, grad
    return op(logits), count
