"""Read a .tflite file: its ops, tensors, signatures and quantisation, and open it in LiteRT.

The flatbuffer is parsed with the schema module shipped in the ai_edge_litert wheel (no
TensorFlow import), so listing the ops of a model works even where the model cannot run
(e.g. Flex ops, which neither TF 2.21's interpreter nor ai_edge_litert 2.3.0 can execute).
A missing, corrupt or non-TFLite file raises `TFLiteFileError` naming the file and the cause.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Union

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfprune.errors import TfpruneError

Source = Union[str, os.PathLike, bytes, bytearray]
FILE_IDENTIFIER = b"TFL3"
OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
FLEX_PREFIX = "Flex"
# Constant tensors whose values are read (axes, paddings, strides): up to 64 elements.
SMALL_CONSTANT_TYPES = {"int32": np.int32, "int64": np.int64, "float32": np.float32,
                        "int8": np.int8, "uint8": np.uint8}


class TFLiteFileError(TfpruneError):
    """A file that is not a readable TFLite model; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor: shape (static, as stored), shape_signature (-1 = dynamic), dtype, quant."""

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    is_constant: bool = False
    value: tuple | None = dataclasses.field(default=None, compare=False)  # small constants only

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("value")
        for k in ("scale", "zero_point"):  # a per-channel table is noise in a report
            if len(out[k]) > 4:
                out[k] = f"per-channel ({len(out[k])} values)"
        return out


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator in execution order: its name (builtin or custom code), tensors, options."""

    index: int
    subgraph: int
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    options: object = None  # the schema's *OptionsT object, or None
    version: int = 1

    @property
    def is_flex(self) -> bool:
        return self.name.startswith(FLEX_PREFIX)

    @property
    def is_custom(self) -> bool:
        return self.name not in OP_NAMES.values()

    def option(self, name: str, default=None):
        return getattr(self.options, name, default) if self.options is not None else default

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a conv / depthwise / fully-connected / transpose-conv /
        batch-matmul op from its tensor shapes; 0 for every other op."""
        out = self.outputs[0].shape if self.outputs else ()
        if not out or any(d < 0 for d in out):
            return 0
        n_out = int(np.prod(out))
        w = self.inputs[1].shape if len(self.inputs) > 1 else ()
        if self.name == "CONV_2D" and len(w) == 4:  # filter (O, KH, KW, I)
            return n_out * w[1] * w[2] * w[3]
        if self.name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # filter (1, KH, KW, O)
            return n_out * w[1] * w[2]
        if self.name in ("FULLY_CONNECTED", "BATCH_MATMUL") and len(w) >= 2:
            return n_out * (w[-1] if self.name == "FULLY_CONNECTED" else w[-2])
        if self.name == "TRANSPOSE_CONV" and len(w) == 4 and len(self.inputs) > 2:
            x = self.inputs[2].shape  # inputs: output_shape, filter (O, KH, KW, I), input
            return int(np.prod(x)) * w[0] * w[1] * w[2]
        return 0


@dataclasses.dataclass
class ModelInfo:
    """Everything the validators read from a parsed .tflite file."""

    path: str
    size_bytes: int
    ops: list[OpInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    signatures: dict[str, dict[str, list[str]]]
    num_subgraphs: int

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(collections.Counter(op.name for op in self.ops).items()))

    def flex_ops(self) -> dict[str, int]:
        return {k: v for k, v in self.op_counts().items() if k.startswith(FLEX_PREFIX)}

    def aliased_outputs(self) -> dict[str, list[list[str]]]:
        """{signature: groups of output names that are one tensor}: an Android
        `Interpreter.runSignature` fills only the first name of each group."""
        found = {}
        for key, sig in self.signatures.items():
            by_tensor = collections.defaultdict(list)
            for name, tensor in zip(sig["outputs"], sig.get("output_tensors", ())):
                by_tensor[tensor].append(name)
            groups = [names for names in by_tensor.values() if len(names) > 1]
            if groups:
                found[key] = groups
        return found

    def custom_ops(self) -> dict[str, int]:
        return {k: v for k, v in self.op_counts().items()
                if k not in OP_NAMES.values() and not k.startswith(FLEX_PREFIX)}


def read_bytes(source: Source) -> tuple[bytes, str]:
    """The file's bytes and a name for messages; raises TFLiteFileError if it is no TFLite."""
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "<bytes>"
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise TFLiteFileError(f"TFLite file {name} does not exist")
        with open(name, "rb") as f:
            data = f.read()
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise TFLiteFileError(
            f"{name} is not a TFLite model (no {FILE_IDENTIFIER.decode()} flatbuffer identifier; "
            f"{len(data)} bytes)")
    return data, name


def _tensor(subgraph, index: int, buffers) -> TensorInfo:
    t = subgraph.tensors[index]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
    q = t.quantization
    scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
    zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    constant = buf is not None and ((buf.data is not None and len(buf.data) > 0) or buf.size > 0)
    dtype = TYPE_NAMES.get(t.type, str(t.type))
    value = None
    if constant and buf.data is not None and dtype in SMALL_CONSTANT_TYPES:
        raw = np.asarray(buf.data, np.uint8).tobytes()
        if len(raw) <= 64 * np.dtype(SMALL_CONSTANT_TYPES[dtype]).itemsize:
            value = tuple(np.frombuffer(raw, SMALL_CONSTANT_TYPES[dtype]).tolist())
    return TensorInfo(index, _decode(t.name), shape, sig, dtype, scale, zp,
                      int(q.quantizedDimension) if q is not None else 0, constant, value)


def _op_name(opcode) -> str:
    code = max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))
    if code == schema.BuiltinOperator.CUSTOM:
        custom = opcode.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return OP_NAMES.get(code, f"UNKNOWN_{code}")


def inspect(source: Source) -> ModelInfo:
    """Parse a .tflite (path or bytes) into a `ModelInfo`."""
    data, name = read_bytes(source)
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as err:  # a truncated or garbled flatbuffer fails anywhere inside
        raise TFLiteFileError(f"{name} is a corrupt TFLite flatbuffer: {err!r}") from err
    if not model.subgraphs:
        raise TFLiteFileError(f"{name} holds no subgraph")
    buffers = model.buffers or []
    codes = [_op_name(c) for c in (model.operatorCodes or [])]
    versions = [int(c.version) for c in (model.operatorCodes or [])]
    ops: list[OpInfo] = []
    for s, sg in enumerate(model.subgraphs):
        for op in sg.operators or []:
            ins = tuple(_tensor(sg, int(i), buffers) for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
            outs = tuple(_tensor(sg, int(i), buffers) for i in (op.outputs if op.outputs is not None else ()))
            ops.append(OpInfo(len(ops), s, codes[op.opcodeIndex], ins, outs, op.builtinOptions,
                              versions[op.opcodeIndex]))
    main = model.subgraphs[0]
    signatures = {}
    for sd in model.signatureDefs or []:
        signatures[_decode(sd.signatureKey)] = {
            "inputs": [_decode(t.name) for t in sd.inputs or []],
            "outputs": [_decode(t.name) for t in sd.outputs or []],
            "output_tensors": [int(t.tensorIndex) for t in sd.outputs or []],
            "subgraph": int(sd.subgraphIndex)}
    return ModelInfo(
        path=name, size_bytes=len(data), ops=ops,
        inputs=[_tensor(main, int(i), buffers) for i in main.inputs],
        outputs=[_tensor(main, int(i), buffers) for i in main.outputs],
        signatures=signatures, num_subgraphs=len(model.subgraphs))


def _decode(s) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def op_counts(source: Source) -> dict[str, int]:
    """{op name: count} over all subgraphs; Flex ops appear as e.g. `FlexConv2DBackpropFilter`."""
    return inspect(source).op_counts()


def flex_ops(source: Source) -> dict[str, int]:
    """The select-TF (Flex) ops and their counts; empty when the model is builtin-only."""
    return inspect(source).flex_ops()


def load_interpreter(source: Source, num_threads: int | None = None):
    """An allocated `ai_edge_litert` Interpreter; a model LiteRT cannot run is a TFLiteFileError
    naming the reason (Flex ops in particular)."""
    from ai_edge_litert.interpreter import Interpreter

    from tfprune.console import native_stderr_hidden

    data, name = read_bytes(source)
    try:
        with native_stderr_hidden():  # LiteRT's "INFO: Created ... XNNPACK delegate" line
            interp = Interpreter(model_content=data, num_threads=num_threads)
            interp.allocate_tensors()
    except Exception as err:
        flex = inspect(data).flex_ops()
        why = (f"it needs the select-TF-ops (Flex) runtime for {', '.join(flex)}, which "
               f"ai_edge_litert does not include" if flex else str(err).strip().splitlines()[-1])
        raise TFLiteFileError(f"{name} cannot be loaded in LiteRT: {why}") from err
    return interp


def io_details(interp) -> dict[str, list[dict]]:
    """Input/output specs from a loaded interpreter: name, shape, signature, dtype, quant."""
    def spec(d):
        q = d.get("quantization_parameters", {})
        scales, zps = q.get("scales", np.zeros(0)), q.get("zero_points", np.zeros(0))
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]],
                "shape_signature": [int(v) for v in d.get("shape_signature", d["shape"])],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": [float(s) for s in scales[:4]], "zero_point": [int(z) for z in zps[:4]],
                "per_channel": bool(len(scales) > 1)}
    return {"inputs": [spec(d) for d in interp.get_input_details()],
            "outputs": [spec(d) for d in interp.get_output_details()]}


def run(interp, x: np.ndarray) -> np.ndarray:
    """Feed one float batch (quantised on the way in when the input is int8/uint8) and return
    the first output as float (dequantised when the output is quantised)."""
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if np.dtype(inp["dtype"]) in (np.int8, np.uint8):
        scale, zp = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if np.dtype(out["dtype"]) in (np.int8, np.uint8):
        scale, zp = out["quantization"]
        y = (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32, copy=False)


def signature_details(source: Source) -> dict[str, dict[str, list[dict]]]:
    """{signature: {"inputs"/"outputs": [{name, tensor, shape, dtype[, scale, zero_point]}]}}
    as the LiteRT interpreter reports them (`name` is the signature's key, `tensor` the
    tensor's own name); scale / zero_point only for quantised tensors."""
    from ai_edge_litert.interpreter import Interpreter

    data, _ = read_bytes(source)
    interp = Interpreter(model_content=data)

    def spec(details):
        out = []
        for key, d in sorted(details.items()):
            entry = {"name": key, "tensor": d["name"], "shape": [int(s) for s in d["shape"]],
                     "dtype": np.dtype(d["dtype"]).name}
            scale, zero_point = d.get("quantization", (0.0, 0))
            if scale:
                entry.update(scale=float(scale), zero_point=int(zero_point))
            out.append(entry)
        return out

    return {key: {"inputs": spec(runner.get_input_details()),
                  "outputs": spec(runner.get_output_details())}
            for key in interp.get_signature_list()
            for runner in (interp.get_signature_runner(key),)}
