"""Android targets: the CPU runtime (builtin ops, or Flex and its runtime) and the legacy GPU
delegate's rules (`android-gpu-legacy`).

The real GPU check (`android-gpu`) runs the model through LiteRT's GPU accelerator
(`tfprune.litert.validate.gpu`). This module's legacy check is for Interpreter-API apps with
the old GpuDelegate (OpenCL/OpenGL ES): rules, not a run. It is a rule table, not `tf.lite.experimental.Analyzer(gpu_compatibility=True)`:
that analyzer calls models with CUMSUM, TOPK_V2 and even Flex ops "compatible" (recorded
here as `analyzer_verdict` for comparison). The table holds
  * the ops the LiteRT GPU delegate documents as supported (ai.google.dev/edge/litert/
    performance/gpu, "GPU ML operations support"), and
  * a few more that CNN exports need (MEAN, QUANTIZE, DEQUANTIZE, ...), which the delegate's
    own compatibility rules (tensorflow/lite/tools/versioning/gpu_compatibility.cc) accept;
  with the per-op constraints those rules state. Any other op - including ones newer delegate
  sources accept but the documentation does not list, such as CUMSUM - is taken to fall back
  to the CPU. Conservative by design: a model that passes runs fully on the GPU.
"""
from __future__ import annotations

import contextlib
import io
import os

from ai_edge_litert import schema_py_generated as schema

from tfprune.litert.model_file import ModelInfo, OpInfo

GPU_DOCUMENTED = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXP",
    "FULLY_CONNECTED", "LOGICAL_AND", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MINIMUM",
    "MUL", "PAD", "PRELU", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "SOFTMAX",
    "STRIDED_SLICE", "SUB", "TRANSPOSE_CONV"})
GPU_DELEGATE_EXTRA = frozenset({
    "MEAN", "QUANTIZE", "DEQUANTIZE", "HARD_SWISH", "TANH", "LEAKY_RELU", "RELU_N1_TO_1",
    "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "SLICE", "TRANSPOSE", "DIV", "SQRT", "RSQRT", "ABS",
    "SQUARED_DIFFERENCE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SUM", "REDUCE_MAX"})
GPU_TENSOR_TYPES = ("float32", "float16", "int8", "uint8")  # int8/uint8 only when quantised
SIGN_BIT = schema.ActivationFunctionType.SIGN_BIT


def check_cpu(info: ModelInfo, allow_flex: bool = False, load_error: str | None = None) -> dict:
    """Android CPU: builtin ops only pass; Flex ops pass only with `allow_flex`, and then the
    select-tf-ops runtime (org.tensorflow:tensorflow-lite-select-tf-ops) must ship with the
    app; other custom ops need their own registration and fail."""
    flex, custom = info.flex_ops(), info.custom_ops()
    findings = []
    if flex:
        findings.append(f"Flex (select TF) ops {flex}: the app needs the select-tf-ops runtime")
    if custom:
        findings.append(f"custom ops {custom}: the app must register their kernels")
    if load_error and not flex:
        findings.append(f"LiteRT could not load the model: {load_error}")
    passed = not custom and (allow_flex or not flex) and not (load_error and not flex)
    return {"target": "android-cpu", "passed": passed,
            "builtin_only": not flex and not custom,
            "requires_select_tf_ops": bool(flex), "flex_ops": flex, "custom_ops": custom,
            "findings": findings,
            "summary": ("builtin ops only" if not flex and not custom
                        else "; ".join(findings))}


def _tensor_problems(op: OpInfo) -> list[str]:
    problems = []
    for t in (*op.inputs, *op.outputs):
        if t.is_dynamic:
            problems.append(f"tensor {t.name!r} has a dynamic shape {list(t.shape_signature)}")
        if len(t.shape) > 4:
            problems.append(f"tensor {t.name!r} has rank {len(t.shape)} > 4")
        if t.is_constant:
            continue
        if t.dtype not in GPU_TENSOR_TYPES or (t.dtype in ("int8", "uint8") and not t.is_quantized):
            problems.append(f"runtime tensor {t.name!r} is {t.dtype}")
    return problems


def _op_problems(op: OpInfo, folded: set) -> list[str]:
    """The delegate's per-op constraints (gpu_compatibility.cc) for the ops in the table;
    `folded`: tensors the delegate treats as constants (DEQUANTIZE of a constant)."""
    p = []
    if op.option("fusedActivationFunction") == SIGN_BIT:
        p.append("fused SIGN_BIT activation")
    runtime_inputs = [t for t in op.inputs if not t.is_constant and t.index not in folded]
    if any(t.is_constant and t.dtype in ("int8", "uint8") for t in op.inputs) and \
            any(t.dtype in ("float32", "float16") for t in runtime_inputs):
        # post-training quantisation guide: dynamic-range models target the CPU only
        p.append("hybrid (dynamic-range) op: int8 weights with float activations")
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(runtime_inputs) > 2:
        p.append(f"{len(runtime_inputs)} runtime inputs (at most 2)")
    if op.name == "DEPTHWISE_CONV_2D":
        mult = op.option("depthMultiplier", 1)
        cin = op.inputs[0].shape[-1] if op.inputs[0].shape else 0
        if mult != 1 and cin != 1:
            p.append(f"depth_multiplier {mult} with {cin} input channels (needs 1 of either)")
    if op.name == "FULLY_CONNECTED":
        if op.option("weightsFormat", 0) != 0:
            p.append("non-default weights format")
        if op.inputs[0].is_constant:
            p.append("constant input")
    if op.name in ("MEAN", "SUM", "REDUCE_MAX"):
        axes = op.inputs[1] if len(op.inputs) > 1 else None
        if axes is None or not axes.is_constant or axes.dtype != "int32":
            p.append("axes must be a constant int32 tensor")
    if op.name == "PAD" and len(op.inputs) > 1 and op.inputs[1].shape not in ((4, 2), (3, 2)):
        p.append(f"paddings shape {op.inputs[1].shape} (needs 4x2 or 3x2)")
    if op.name == "STRIDED_SLICE":
        for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
            if op.option(mask, 0):
                p.append(f"{mask} is set")
        if len(op.inputs[0].shape) not in (3, 4):
            p.append(f"input rank {len(op.inputs[0].shape)} (needs 3 or 4)")
    if op.name == "SOFTMAX" and op.option("beta", 1.0) != 1.0:
        p.append(f"beta {op.option('beta')} != 1")
    if op.name == "RESIZE_BILINEAR" and op.option("alignCorners") and op.option("halfPixelCenters"):
        p.append("align_corners together with half_pixel_centers")
    if op.name == "MUL" and len(op.inputs) == 2 and len(op.inputs[0].shape) == len(op.inputs[1].shape):
        a, b = op.inputs[0].shape, op.inputs[1].shape
        if any(x < y for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
            p.append(f"neither input covers the other ({list(a)} x {list(b)})")
    return p


def check_gpu_legacy(info: ModelInfo, with_analyzer: bool = True) -> dict:
    """Per-op findings of the legacy GpuDelegate's rules; passes when every op would run on
    the GPU. A rule table, not a run (`check: "rules"`)."""
    findings = []
    # float16 models keep weights as fp16 constants behind DEQUANTIZE; the delegate reads
    # those as constant weights (fp16 is its native precision)
    folded = {op.outputs[0].index for op in info.ops
              if op.name == "DEQUANTIZE" and op.inputs and op.inputs[0].is_constant}
    for op in info.ops:
        if op.name in GPU_DOCUMENTED:
            basis = "documented"
        elif op.name in GPU_DELEGATE_EXTRA:
            basis = "delegate rules (not in the documented list)"
        else:
            why = ("Flex op: never delegated" if op.is_flex else
                   "custom op" if op.is_custom else "not in the GPU delegate's supported ops")
            findings.append({"op": op.index, "name": op.name, "gpu": False, "why": why})
            continue
        problems = _op_problems(op, folded) + _tensor_problems(op)
        findings.append({"op": op.index, "name": op.name, "gpu": not problems,
                         "why": "; ".join(problems) if problems else basis})
    cpu = [f for f in findings if not f["gpu"]]
    segments = sum(1 for i, f in enumerate(findings)
                   if f["gpu"] and (i == 0 or not findings[i - 1]["gpu"]))
    result = {"target": "android-gpu-legacy", "check": "rules", "passed": not cpu and bool(findings),
              "ops_on_gpu": len(findings) - len(cpu), "ops_total": len(findings),
              "gpu_partitions": segments, "fallback_ops": cpu, "findings": findings,
              "summary": (f"rules: all {len(findings)} ops on the legacy GPU delegate" if not cpu
                          else f"rules: {len(cpu)} of {len(findings)} ops fall back to the CPU, first: "
                          f"op {cpu[0]['op']} {cpu[0]['name']} ({cpu[0]['why']})")}
    if with_analyzer:
        result["analyzer_verdict"] = analyzer_verdict(info.path)
    return result


def analyzer_verdict(path: str) -> str:
    """The one-line GPU verdict of `tf.lite.experimental.Analyzer`, for comparison only."""
    if not os.path.isfile(path):
        return "analyzer not run (model given as bytes)"
    printed = io.StringIO()  # the public Analyzer prints its report
    try:
        import tensorflow as tf
        with contextlib.redirect_stdout(printed):
            tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=True)
    except Exception as err:  # informational: never fail the check because of it
        return f"analyzer failed: {err}"
    lines = [ln.strip() for ln in printed.getvalue().splitlines() if "GPU" in ln]
    return lines[0] if lines else "no GPU verdict in analyzer output"
