"""Run a .tflite through LiteRT's GPU accelerator and on the CPU, in this process.

This is the worker of the `android-gpu` gate (`tfprune.litert.validate.gpu`), started as
`python -m tfprune.litert.gpu_run MODEL INPUTS.npz OUTPUTS.npz` in a subprocess: the
accelerator writes its findings (which ops it refuses and why, the Vulkan adapter) to the
native stderr, and a driver fault must not take the caller down. It imports only
ai_edge_litert and numpy (TensorFlow in the same process is not needed and not wanted).

The GPU model is compiled with `HardwareAccelerator.GPU | CPU`, as an app with CPU fallback
would do, so a partly accelerated model still runs; `is_fully_accelerated()` says whether it
was. The CPU reference is the same API with `HardwareAccelerator.CPU`. INPUTS.npz holds one
array per model input, `t<tensor index>`, examples on the first axis; OUTPUTS.npz gets `gpu/NAME`
and `cpu/NAME` per output; a JSON line with the timings goes to stdout.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def _read(buf, size: int, dtype: np.dtype) -> np.ndarray:
    if dtype == np.int64:  # the Python TensorBuffer has no int64: read the bytes as int32 pairs
        return buf.read(2 * size, np.int32).view(np.int64)
    return buf.read(size, dtype)


def _run_all(model, inputs: dict, n: int) -> dict:
    sig = list(model.get_signature_list())[0]
    names = model.get_signature_list()[sig]
    index = {name: d["index"] for name, d in model.get_input_tensor_details(sig).items()}
    from ai_edge_litert.compiled_model import TensorBuffer

    ins, outs = model.create_input_buffers(0), model.create_output_buffers(0)
    sizes = [int(np.prod(b.get_tensor_details()["shape"])) for b in outs]
    dtypes = [np.dtype(b.get_tensor_details()["dtype"]) for b in outs]
    # outputs in host memory: the accelerator's own output buffers of some models (SqueezeNet,
    # AlexNet on lavapipe) fail to lock for reading ("Failed to lock custom tensor buffer")
    outs = [TensorBuffer.create_from_host_memory(np.zeros(size, dtype))
            if dtype != np.int64 else buf for buf, size, dtype in zip(outs, sizes, dtypes)]
    got = {name: [] for name in names["outputs"]}
    for i in range(n):
        for buf, name in zip(ins, names["inputs"]):
            buf.write(np.ascontiguousarray(inputs[f"t{index[name]}"][i]))
        model.run_by_index(0, ins, outs)
        for buf, name, size, dtype in zip(outs, names["outputs"], sizes, dtypes):
            got[name].append(_read(buf, size, dtype))
    return {name: np.stack(v) for name, v in got.items()}


def main(model_path: str, inputs_path: str, outputs_path: str) -> None:
    from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator

    inputs = dict(np.load(inputs_path))
    n = min(len(v) for v in inputs.values())
    start = time.perf_counter()
    gpu = CompiledModel.from_file(model_path, hardware_accel=HardwareAccelerator.GPU
                                  | HardwareAccelerator.CPU)
    compile_s = time.perf_counter() - start
    fully = bool(gpu.is_fully_accelerated())
    print(json.dumps({"compiled": True, "fully_accelerated": fully}), flush=True)
    start = time.perf_counter()
    gpu_out = _run_all(gpu, inputs, n)
    gpu_s = time.perf_counter() - start
    cpu = CompiledModel.from_file(model_path, hardware_accel=HardwareAccelerator.CPU)
    start = time.perf_counter()
    cpu_out = _run_all(cpu, inputs, n)
    cpu_s = time.perf_counter() - start
    arrays = {f"gpu/{k}": v for k, v in gpu_out.items()} | {f"cpu/{k}": v for k, v in cpu_out.items()}
    with open(outputs_path, "wb") as f:
        np.savez(f, **arrays)
    print(json.dumps({"done": True, "fully_accelerated": fully, "examples": n,
                      "compile_s": compile_s, "gpu_run_s": gpu_s, "cpu_run_s": cpu_s}),
          flush=True)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:4])
    except Exception as err:  # the caller reports it as the accelerator's failure
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
        sys.exit(1)
