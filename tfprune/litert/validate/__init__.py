"""The validation gate every converted model passes before it ships.

`validate(paths, targets, ...)` inspects each .tflite (ops, signatures, I/O and quantisation),
runs the chosen target checks (`android-cpu`; `android-gpu`, a real run through LiteRT's GPU
accelerator; `android-gpu-legacy`, the old GpuDelegate's rules; `edgetpu`), parity against the
Keras source on real held-out images, and single-image latency, and returns a report whose
`failed_gates` name every gate that failed and why. Every file also passes `signatures`: no
two output names of a signature may be one tensor (Android's `Interpreter.runSignature` fills
only one of them). A check that could not run here (`android-gpu` without a Vulkan device)
has status "not run": it does not pass, and the report lists it in `not_run`, apart from the
failures. `report.write` renders the report as validation.json and validation.md.
"""
from __future__ import annotations

import os

from tfprune import litert
from tfprune.errors import TfpruneError
from tfprune.litert.validate import android, edgetpu
from tfprune.litert.validate.parity import MAX_ACCURACY_DROP_PP, MIN_AGREEMENT

TARGETS = ("android-cpu", "android-gpu", "android-gpu-legacy", "edgetpu")


def parse_targets(spec: str) -> tuple[str, ...]:
    targets = tuple(t.strip() for t in spec.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise TfpruneError(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    return targets


def _gate(name: str, passed: bool, why: str, status: str | None = None) -> dict:
    return {"gate": name, "passed": bool(passed), "why": why,
            "status": status or ("pass" if passed else "fail")}


def gate_failed(gate: dict) -> bool:
    """A gate that ran and failed (a "not run" gate did not pass, but did not fail either)."""
    return not gate["passed"] and gate.get("status") != "not run"


def aliased_outputs_gate(info) -> dict:
    aliased = info.aliased_outputs()
    return _gate("signatures", not aliased, "every signature output is its own tensor"
                 if not aliased else "output names share a tensor (Android's runSignature "
                 "fills only one name per tensor, the others stay unwritten): " + "; ".join(
                     f"{key}: " + ", ".join("=".join(g) for g in groups)
                     for key, groups in aliased.items()))


def validate_file(path, targets=TARGETS, *, keras_model=None, images=None,
                  min_agreement: float = MIN_AGREEMENT,
                  max_accuracy_drop_pp: float = MAX_ACCURACY_DROP_PP,
                  latency_runs: int = 50, threads=(1, 2), edgetpu_compiler: str | None = None,
                  allow_flex: bool = False, max_latency_ms: float | None = None,
                  gpu_images: int | None = None) -> dict:
    """One file's section of the report; never raises for a bad model file. `gpu_images`:
    real images for the `android-gpu` run (default `gpu.IMAGES`)."""
    from tfprune.litert.validate import gpu, latency, parity

    section: dict = {"path": os.fspath(path), "gates": []}
    gates = section["gates"]
    try:
        info = litert.inspect(path)
    except litert.TFLiteFileError as err:
        gates.append(_gate("load", False, str(err)))
        return section
    section.update(size_bytes=info.size_bytes, kind=parity.model_kind(info),
                   op_counts=info.op_counts(), num_ops=len(info.ops),
                   macs=sum(op.macs for op in info.ops), signatures=info.signatures,
                   inputs=[t.as_dict() for t in info.inputs],
                   outputs=[t.as_dict() for t in info.outputs])
    interp, load_error = None, None
    try:
        interp = litert.load_interpreter(path)
    except litert.TFLiteFileError as err:
        load_error = str(err)
    section["load"] = {"ok": interp is not None, "error": load_error}
    if load_error and not (allow_flex and info.flex_ops()):
        gates.append(_gate("load", False, load_error))
    gates.append(aliased_outputs_gate(info))
    checks = section["targets"] = {}
    if "android-cpu" in targets:
        checks["android-cpu"] = android.check_cpu(info, allow_flex, load_error)
    if "android-gpu" in targets:
        checks["android-gpu"] = (
            gpu.check(path, images, count=gpu_images or gpu.IMAGES) if interp is not None else
            {"target": "android-gpu", "check": "run", "status": "fail", "passed": False,
             "summary": f"cannot run the model here: {load_error}"})
    if "android-gpu-legacy" in targets:
        checks["android-gpu-legacy"] = android.check_gpu_legacy(info)
    if "edgetpu" in targets:
        checks["edgetpu"] = edgetpu.check(info)
        if edgetpu_compiler:
            checks["edgetpu"]["compiler"] = edgetpu.run_compiler(edgetpu_compiler, info.path)
    for name, check in checks.items():
        gates.append(_gate(name, check["passed"], check["summary"], check.get("status")))
    if keras_model is not None and images is not None:
        if interp is None:
            gates.append(_gate("parity", False, f"cannot run the model here: {load_error}"))
        else:
            try:
                p = section["parity"] = parity.parity(path, keras_model, images, min_agreement,
                                                      max_accuracy_drop_pp, interp=interp)
                gates.append(_gate("parity", p["passed"], p["summary"]))
            except ValueError as err:  # e.g. the Keras model is not this model's source
                gates.append(_gate("parity", False, str(err)))
    if latency_runs > 0 and interp is not None:
        lat = section["latency"] = latency.measure(path, threads, latency_runs)
        if max_latency_ms is not None:
            worst = max(v["median_ms"] for v in lat.values())
            gates.append(_gate("latency", worst <= max_latency_ms,
                               f"median {worst:.2f} ms vs limit {max_latency_ms:.2f} ms"))
    return section


def validate(paths, targets=TARGETS, *, keras_source: str | None = None, data: dict | None = None,
             **kwargs) -> dict:
    """The full report over `paths` (see `validate_file` for the keyword arguments).
    `keras_source` and `data` are recorded for the reader (what the parity ran against)."""
    from tfprune.litert.convert import input_normalisation
    from tfprune.litert.validate.parity import MAX_ACCURACY_DROP_PP as drop, MIN_AGREEMENT as agree

    files = [validate_file(p, targets, **kwargs) for p in paths]
    failed = [f"{f['path']}: {g['gate']}: {g['why']}"
              for f in files for g in f["gates"] if gate_failed(g)]
    not_run = [f"{f['path']}: {g['gate']}: {g['why']}"
               for f in files for g in f["gates"] if g.get("status") == "not run"]
    return {"targets": list(targets), "keras_model": keras_source, "data": data,
            "normalisation": input_normalisation(),
            "thresholds": {"min_agreement": kwargs.get("min_agreement", agree),
                           "max_accuracy_drop_pp": kwargs.get("max_accuracy_drop_pp", drop),
                           "max_latency_ms": kwargs.get("max_latency_ms")},
            "files": files, "passed": not failed, "failed_gates": failed, "not_run": not_run}
