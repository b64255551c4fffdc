"""Coral Edge TPU: a static checker of Coral's published model requirements.

From coral.ai/docs/edgetpu/models-intro ("Model requirements", "Supported operations"):
  * every tensor quantised to 8 bits (int8/uint8), the model's input and output included;
    int32 is allowed for quantised biases and for constant shape/axis parameters;
  * tensor sizes constant at compile time (no dynamic shapes); model parameters constant;
  * tensors of 1-3 dimensions, or more only if at most the 3 innermost have size > 1
    (batch 1 for image models);
  * only the supported operations, each with its known limitations (`OP_RULES` below).
The compiler cuts the graph once: the first op that cannot map, and every op after it in
execution order, runs on the CPU. We report that op and the share of ops and MACs mapped.
An `edgetpu_compiler` binary, when given, is run too and its log included (it cannot be
installed on this machine, so CI runs the static checker alone).
"""
from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfprune.litert.model_file import ModelInfo, OpInfo, TensorInfo

NO_ACTIVATION = schema.ActivationFunctionType.NONE
EIGHT_BIT = ("int8", "uint8")
NO_LIMITS = ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "LOGISTIC",
               "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "L2_NORMALIZATION", "RSQRT", "QUANTIZE",
               "RESHAPE", "EXPAND_DIMS", "SLICE", "SPACE_TO_DEPTH", "TRANSPOSE_CONV")


def _no_fused_activation(op):
    act = op.option("fusedActivationFunction", NO_ACTIVATION)
    return [] if act == NO_ACTIVATION else ["fused activation function (not supported)"]


def _same_dilation(op):
    h, w = op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)
    return [] if h == w else [f"dilation {h}x{w} differs between y and x"]


def _concat(op):
    p = _no_fused_activation(op)
    for t in (t for t in op.inputs if t.is_constant):
        zero = t.zero_point[0] if t.zero_point else 0
        if len(op.inputs) != 2 or t.value is None or any(v != zero for v in t.value):
            p.append(f"constant input {t.name!r} is not a 2-input all-zero padding")
    return p


def _fully_connected(op):
    p = [] if op.option("weightsFormat", 0) == 0 else ["non-default weights format"]
    out = op.outputs[0].shape
    if sum(d > 1 for d in out) > 1:
        p.append(f"output {list(out)} is not one-dimensional")
    return p


def _axes(op):
    t = op.inputs[1] if len(op.inputs) > 1 else None
    return None if t is None or t.value is None else [a % len(op.inputs[0].shape) for a in t.value]


def _mean(op):
    axes, rank = _axes(op), len(op.inputs[0].shape)
    if axes is None:
        return ["reduction axes are not a constant"]
    spatial = {rank - 3, rank - 2} if rank >= 3 else set()
    return [] if set(axes) <= spatial else [f"reduces axes {axes}; only y and/or x are supported"]


def _pad(op):
    pads, rank = op.inputs[1].value if len(op.inputs) > 1 else None, len(op.inputs[0].shape)
    if pads is None:
        return ["paddings are not a constant"]
    pads = np.asarray(pads).reshape(rank, 2)
    allowed = {rank - 3, rank - 2} if rank >= 3 else set()
    bad = [d for d in range(rank) if d not in allowed and pads[d].any()]
    return [f"pads dimension(s) {bad}; only y and/or x are supported"] if bad else []


def _resize(op):
    shapes = [op.inputs[0].shape, op.outputs[0].shape]
    return [] if all(_non_unit(s) <= 3 and (len(s) < 4 or s[0] == 1) for s in shapes) else \
        ["input/output must be 3-dimensional"]


def _softmax(op):
    shape = op.inputs[0].shape
    p = [] if _non_unit(shape) <= 1 else [f"input {list(shape)} is not 1-D"]
    return p + ([f"{int(np.prod(shape))} elements > 16000"] if np.prod(shape) > 16000 else [])


def _squeeze(op):
    shape = op.inputs[0].shape
    first = next((i for i, d in enumerate(shape) if d > 1), len(shape))
    given = op.option("squeezeDims")
    dims = [int(d) % len(shape) for d in (given if given is not None else [])] or \
        [i for i, d in enumerate(shape) if d == 1]
    return [] if all(i < first for i in dims) else \
        [f"squeezing {list(shape)} at {dims} needs a relayout (only leading 1s)"]


def _strided_slice(op):
    p = [f"{m} is set" for m in ("ellipsisMask", "newAxisMask") if op.option(m, 0)]
    strides = op.inputs[3].value if len(op.inputs) > 3 else None
    if strides is None or any(s != 1 for s in strides):
        p.append(f"strides {strides} (only all-1 strides are supported)")
    return p


def _no_batch_axis(op):
    axes = _axes(op)
    return [] if axes is not None and 0 not in axes else ["operates on the batch dimension"]


OP_RULES = {
    **{name: None for name in NO_LIMITS},
    "AVERAGE_POOL_2D": _no_fused_activation, "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concat, "CONV_2D": _same_dilation, "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected, "MEAN": _mean, "PAD": _pad,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize, "SOFTMAX": _softmax,
    "SQUEEZE": _squeeze, "STRIDED_SLICE": _strided_slice,
    "REDUCE_MAX": _no_batch_axis, "REDUCE_MIN": _no_batch_axis, "SUM": _no_batch_axis,
    "SPLIT": lambda op: [] if (op.inputs[0].value or [1])[0] != 0 else ["splits the batch"],
    "TRANSPOSE": lambda op: [] if (op.inputs[1].value or [1])[0] == 0 else ["moves the batch"],
}


def _non_unit(shape) -> int:
    return sum(1 for d in shape if d != 1)


def tensor_problems(t: TensorInfo, role: str) -> list[str]:
    """Coral's tensor requirements for one tensor (`role` names it in messages)."""
    p = []
    if t.is_dynamic:
        p.append(f"{role} {t.name!r} has a dynamic shape {list(t.shape_signature)}")
    if _non_unit(t.shape) > 3 and not t.is_constant:  # weights are 4-D in every Coral model
        p.append(f"{role} {t.name!r} {list(t.shape)} has more than 3 non-unit dimensions")
    int32_ok = t.is_constant and (t.is_quantized or role == "parameter")
    if t.dtype not in EIGHT_BIT and not (t.dtype == "int32" and int32_ok):
        p.append(f"{role} {t.name!r} is {t.dtype}, not int8/uint8")
    elif t.dtype in EIGHT_BIT and not t.is_quantized and not t.is_constant:
        p.append(f"{role} {t.name!r} is {t.dtype} without quantisation parameters")
    return p


def op_problems(op: OpInfo) -> list[str]:
    if op.name not in OP_RULES:
        return [("Flex op" if op.is_flex else "custom op" if op.is_custom else "operation")
                + f" {op.name} is not supported by the Edge TPU"]
    rule = OP_RULES[op.name]
    problems = list(rule(op)) if rule else []
    for t in op.inputs:  # shape / axis / padding operands are parameters, not data
        param = t.is_constant and t.dtype == "int32" and not t.is_quantized
        problems += tensor_problems(t, "parameter" if param else "input")
    for t in op.outputs:
        problems += tensor_problems(t, "output")
    return problems


def check(info: ModelInfo) -> dict:
    """Model-level requirements, per-op mapping, the first CPU fallback, mapped shares."""
    model_problems = []
    for role, tensors in (("model input", info.inputs), ("model output", info.outputs)):
        for t in tensors:
            model_problems += tensor_problems(t, role)
            if t.shape and t.shape[0] != 1:
                model_problems.append(f"{role} {t.name!r} batch is {t.shape[0]}, not 1")
    if info.num_subgraphs > 1:
        model_problems.append(f"{info.num_subgraphs} subgraphs (the compiler maps one)")
    ops, first = [], None
    for op in info.ops:
        problems = op_problems(op)
        if problems and first is None:
            first = op
        ops.append({"op": op.index, "name": op.name, "macs": op.macs,
                    "maps": first is None, "problems": problems})
    total_macs = sum(o["macs"] for o in ops) or 1
    mapped = [o for o in ops if o["maps"]]
    result = {
        "target": "edgetpu", "passed": not model_problems and first is None and bool(ops),
        "model_problems": model_problems,
        "ops_mapped": len(mapped), "ops_total": len(ops),
        "ops_mapped_share": len(mapped) / max(len(ops), 1),
        "macs_mapped_share": sum(o["macs"] for o in mapped) / total_macs,
        "macs_total": sum(o["macs"] for o in ops),
        "first_cpu_op": None if first is None else {
            "op": first.index, "name": first.name, "problems": ops[first.index]["problems"]},
        "ops": ops}
    if model_problems:
        result["summary"] = "model requirements not met: " + "; ".join(model_problems[:3])
    elif first is not None:
        result["summary"] = (f"op {first.index} {first.name} and the {len(ops) - first.index - 1} "
                             f"ops after it fall back to the CPU: {'; '.join(ops[first.index]['problems'][:2])}")
    else:
        result["summary"] = f"all {len(ops)} ops map to the Edge TPU"
    return result


def run_compiler(binary: str, tflite_path: str, timeout: int = 300) -> dict:
    """Run `edgetpu_compiler -s` on the model and return its log and exit code (None when it
    did not finish within `timeout` seconds: reported, not raised, like every other finding)."""
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise FileNotFoundError(f"--edgetpu_compiler {binary} is not an executable file")
    with tempfile.TemporaryDirectory(prefix="edgetpu_") as out:
        try:
            proc = subprocess.run([binary, "-s", "-o", out, tflite_path], capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"returncode": None, "compiled": False,
                    "log": f"{binary} did not finish within {timeout} s"}
        compiled = [f for f in os.listdir(out) if f.endswith("_edgetpu.tflite")]
    return {"returncode": proc.returncode, "compiled": bool(compiled),
            "log": (proc.stdout + proc.stderr).strip()}
