"""Write and check an app-ready bundle: the two models, labels, manifest and Android helper.

`write_bundle` refuses a model whose validation failed (unless allowed, then the manifest
says so loudly), builds the bundle in a temp directory beside `output_dir`, checks it with
`check_bundle`, and renames it into place (an old bundle is replaced; an existing directory
that is no bundle, or a bundle holding files its manifest does not list, is refused, so
nothing of the user's is deleted). Everything the manifest says about the models is read
back from the .tflite files with the LiteRT interpreter (`describe`), so `check_bundle` can
recompute it and compare.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
from pathlib import Path

from tfprune import litert
from tfprune.errors import TfpruneError
from tfprune.litert import targets as exports
from tfprune.litert.validate import gate_failed
from tfprune.litert.validate.parity import model_kind

FORMAT = "tfprune.android_bundle/1"
MANIFEST, MODEL, TRAINABLE, TRAINING, LABELS = (
    "manifest.json", "model.tflite", "trainable.tflite", "trainable.json", "labels.txt")
TEMPLATES = Path(__file__).resolve().parent / "android"
ANDROID_FILES = ("TfpruneModel.kt", "build.gradle", "README.md")
INFERENCE_SIGNATURE = "serving_default"
CHECKPOINT = "raw little-endian float32[state_size] of the save signature's `state`, in the " \
             "app's filesDir as <fingerprint>.state (written to a temp file, then renamed)"
# Why labels and normalisation are in manifest.json rather than TFLite metadata: the
# tflite-support metadata writer cannot be imported next to TF 2.21 (see android/README.md).
METADATA = {"tflite_metadata": False, "why": (
    "tflite-support 0.4.4 (the metadata writer) pins protobuf<4 and its generated *_pb2 "
    "modules fail to import with the protobuf TF 2.21 needs (>=6.31.1): 'TypeError: "
    "Descriptors cannot be created directly'; its native module also needs libusb-1.0.so.0. "
    "Labels and normalisation are in labels.txt and this manifest instead.")}


class BundleError(TfpruneError):
    """A bundle that cannot be written or does not check out; the message says what failed."""


def litert_version() -> str:
    return importlib.metadata.version("ai-edge-litert")


def file_entry(path) -> dict:
    data = Path(path).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


def _quant(t: dict, dequantise: bool) -> dict | None:
    if "scale" not in t:
        return None
    formula = ("value = (q - zero_point) * scale" if dequantise else
               "q = clamp(round(x / scale) + zero_point, dtype min, dtype max)")
    return {"scale": t["scale"], "zero_point": t["zero_point"], "formula": formula}


def describe(bundle_dir, version: str | None = None) -> dict:
    """What the manifest says about the models, read from the files in `bundle_dir`;
    `version`: the LiteRT version to record (default: the installed ai-edge-litert)."""
    from tfprune.data import MEAN, STD

    root = Path(bundle_dir)
    models, ops, flex = {}, {}, {}
    for name, role in ((MODEL, "inference"), (TRAINABLE, "training")):
        info = litert.inspect(root / name)
        models[name] = {"role": role, "kind": model_kind(info),
                        "signatures": litert.signature_details(root / name),
                        "ops": info.op_counts(), "flex_ops": info.flex_ops()}
        for op, n in info.op_counts().items():
            ops[op] = ops.get(op, 0) + n
        flex.update(info.flex_ops())
    sig = models[MODEL]["signatures"].get(INFERENCE_SIGNATURE)
    if sig is None or len(sig["inputs"]) != 1 or len(sig["outputs"]) != 1:
        raise BundleError(f"{MODEL} needs one `{INFERENCE_SIGNATURE}` signature with one input "
                          f"and one output; it has {models[MODEL]['signatures']}")
    inp, out = sig["inputs"][0], sig["outputs"][0]
    plain = lambda t: {k: v for k, v in t.items() if k not in ("scale", "zero_point")}
    version = version or litert_version()
    return {
        "input": {"signature": INFERENCE_SIGNATURE, **plain(inp), "layout": "NHWC", "channels": "RGB",
                  "normalisation": {"mean": list(MEAN), "std": list(STD), "formula":
                                    "x[c] = (pixel[c] / 255 - mean[c]) / std[c], pixel in 0..255"},
                  "quantization": _quant(inp, dequantise=False)},
        "output": {**plain(out), "meaning": "logits; index = line of labels.txt (softmax for "
                                     "probabilities)",
                   "quantization": _quant(out, dequantise=True)},
        "models": models,
        "runtime": {"litert": version, "flex_required": bool(flex), "flex_ops": flex,
                    "ops": dict(sorted(ops.items())),
                    "android": {"dependency": f"com.google.ai.edge.litert:litert:{version}",
                                "api": {"training": "org.tensorflow.lite.Interpreter.runSignature"
                                                    " (CPU)",
                                        "inference": "com.google.ai.edge.litert.CompiledModel: "
                                                     "GPU first when validation.files"
                                                     "[model.tflite].gpu.passed, else CPU"},
                                "select_tf_ops": bool(flex)}},
    }


def _validation_entry(report: dict, source: Path) -> dict:
    same = exports.report_entries(report, source)
    if len(same) != 1:
        raise BundleError(f"the validation report has {len(same) or 'no'} entries for {source} "
                          f"(it covers {[f['path'] for f in report.get('files', [])]}); "
                          "validate the file first")
    entry, size = same[0], source.stat().st_size
    if entry.get("size_bytes") != size:
        raise BundleError(f"the validation report's entry {entry['path']} ({entry.get('size_bytes')}"
                          f" bytes) is not the file {source} ({size} bytes)")
    return entry


def _gpu_record(targets: dict) -> dict:
    """Which GPU check the file had: `run` (LiteRT's GPU accelerator ran it; `passed` is what
    the Kotlin helper reads to try the GPU first), `not run` (no Vulkan device where it was
    validated), or `none`; plus the legacy delegate's rules when they were checked."""
    run, legacy = targets.get("android-gpu"), targets.get("android-gpu-legacy")
    record = {"check": "none", "passed": False}
    if run:
        record = {"check": run.get("check", "run"), "passed": bool(run["passed"]),
                  "fully_accelerated": run.get("fully_accelerated"),
                  "fallback_ops": run.get("fallback_ops", []), "adapter": run.get("adapter"),
                  "parity": {k: v for k, v in (run.get("parity") or {}).items()
                             if k in ("top1_agreement", "max_abs_logit_diff")} or None,
                  "summary": run["summary"]}
    if legacy:
        record["legacy_rules"] = {"passed": bool(legacy["passed"]), "summary": legacy["summary"]}
    return record


def validation_summary(report: dict, sources: dict[str, Path], allowed: bool) -> dict:
    """The manifest's validation section for the bundled files {bundle name: source path};
    raises BundleError naming the failed gates unless `allowed`."""
    files, failed = {}, []
    for name, source in sources.items():
        entry = _validation_entry(report, source)
        gates = [{"status": "pass" if g["passed"] else "fail",
                  **{k: g[k] for k in ("gate", "passed", "why", "status") if k in g}}
                 for g in entry["gates"]]
        failed += [f"{name}: {g['gate']}: {g['why']}" for g in gates if gate_failed(g)]
        files[name] = {"validated_as": entry["path"],
                       "passed": not any(gate_failed(g) for g in gates),
                       "targets": sorted(entry.get("targets", {})), "gates": gates,
                       "parity": {k: v for k, v in (entry.get("parity") or {}).items()
                                  if k != "summary"} or None,
                       "gpu": _gpu_record(entry.get("targets", {}))}
    if failed and not allowed:
        raise BundleError("refusing to bundle: validation failed: " + "; ".join(failed)
                          + " (allow_failed_validation bundles it anyway, recorded as failed)")
    not_run = [f"{name}: {g['gate']}: {g['why']}" for name, f in files.items()
               for g in f["gates"] if g.get("status") == "not run"]
    summary = {"passed": not failed, "failed_gates": failed, "not_run": not_run, "files": files,
               "thresholds": report.get("thresholds"), "keras_model": report.get("keras_model"),
               "data": report.get("data")}
    if failed:
        summary.update(allowed_failure=True, warning="THIS BUNDLE FAILED VALIDATION and was "
                       "written only because allow_failed_validation was set")
    return summary


def _is_bundle(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _user_files(out: Path) -> list[str]:
    """Files in the bundle directory `out` that its manifest does not list."""
    listed = set(json.loads((out / MANIFEST).read_text()).get("files", {})) | {MANIFEST}
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and p.relative_to(out).as_posix() not in listed)


def check_target(output_dir, inputs: dict | None = None) -> None:
    """Refuse an `output_dir` that cannot take a bundle, before any work: a file, an existing
    directory that is not a bundle or that holds files its manifest does not list (replacing
    the bundle would delete them), one containing an input file (`inputs`: {flag: path}), or
    one that cannot be written. Nothing of the user's is ever replaced."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise BundleError(f"--output {out} exists and is not a directory")
    for flag, path in (inputs or {}).items():
        if path and os.path.exists(path) and os.path.commonpath(
                [os.path.realpath(path), os.path.realpath(out)]) == os.path.realpath(out):
            raise BundleError(f"--{flag} {path} lies inside --output {out}, which a new bundle "
                              "replaces; move it out or choose another --output")
    if out.exists() and not _is_bundle(out):
        raise BundleError(f"{out} exists and is not a tfprune bundle (no {MANIFEST} of format "
                          f"{FORMAT}); refusing to overwrite it")
    if out.exists():
        extra = _user_files(out)
        if extra:
            raise BundleError(f"bundle {out} holds files its manifest does not list "
                              f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}); "
                              "replacing the bundle would delete them: move them out first")
    here = out.absolute().parent  # the new bundle is built beside `out`, then renamed
    parent = next(p for p in (here, *here.parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BundleError(f"--output {out} cannot be written ({parent} is not writable)")


def _render_android(out: Path, values: dict) -> None:
    out.mkdir()
    for name in ANDROID_FILES:
        text = (TEMPLATES / name).read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", str(value))
        (out / name).write_text(text)


def write_bundle(output_dir, *, model_tflite, trainable_dir, validation, class_names,
                 subset_classes=None, source=None, allow_failed_validation=False) -> dict:
    """Write the bundle into `output_dir` (see the module docstring); returns the manifest."""
    out = Path(output_dir)
    model_tflite, trainable_dir = Path(model_tflite), Path(trainable_dir)
    sources = {MODEL: model_tflite, TRAINABLE: trainable_dir / TRAINABLE}
    for path in (*sources.values(), trainable_dir / TRAINING):
        if not path.is_file():
            raise BundleError(f"{path} does not exist")
    check_target(out)
    summary = validation_summary(validation, sources, allow_failed_validation)
    class_names = [str(c) for c in class_names]
    subset = sorted(int(c) for c in subset_classes) if subset_classes is not None else None
    if subset and not all(0 <= c < len(class_names) for c in subset):
        raise BundleError(f"subset_classes {subset} are not all indices of the "
                          f"{len(class_names)} class names")
    try:
        training = json.loads((trainable_dir / TRAINING).read_text())
    except ValueError as err:
        raise BundleError(f"{trainable_dir / TRAINING} is not valid JSON: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()  # not mkdtemp: its mode 0700 would hide the bundle from other users
    try:
        for name, path in sources.items():
            shutil.copyfile(path, tmp / name)
        shutil.copyfile(trainable_dir / TRAINING, tmp / TRAINING)
        (tmp / LABELS).write_text("\n".join(class_names) + "\n")
        described = describe(tmp)
        classes = described["output"]["shape"][-1]
        if classes != len(class_names) or training.get("num_classes") != len(class_names):
            raise BundleError(f"{len(class_names)} class names, but {MODEL} outputs {classes} "
                              f"and {TRAINABLE} {training.get('num_classes')} classes")
        _render_android(tmp / "android", {"litert_version": described["runtime"]["litert"]})
        manifest = {
            "format": FORMAT,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "labels": {"file": LABELS, "num_classes": len(class_names), "subset_classes": subset,
                       "subset_names": [class_names[c] for c in subset] if subset else None},
            **described,
            "training": {k: training[k] for k in (
                "model", "fingerprint", "batch_size", "input_shape", "num_classes", "trainable",
                "conv_impl",
                "optimizer", "partial_batch", "batchnorm", "stats_layers", "state_size")
                        if k in training}
                        | {"manifest": TRAINING, "checkpoint": CHECKPOINT},
            "metadata": METADATA,
            "validation": summary,
            "files": {p.relative_to(tmp).as_posix(): file_entry(p)
                      for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        check_bundle(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace(new: Path, out: Path) -> None:
    """Rename `new` to `out`; an old bundle at `out` is moved aside first, then removed."""
    if not out.exists():
        os.rename(new, out)
        return
    old = out.with_name(f".{out.name}.old.{os.getpid()}")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old)


def check_bundle(bundle_dir) -> dict:
    """Check a bundle: every listed file present with its sha256 and size, nothing unlisted,
    the manifest's model description equal to what LiteRT reads from the files now, no
    signature whose output names share a tensor, labels matching, validation passed (or its failure allowed and recorded). Returns the manifest;
    raises BundleError naming every problem."""
    root = Path(bundle_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"{root} has no readable {MANIFEST}: {err}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{root / MANIFEST} is not a {FORMAT} manifest")
    problems = []
    listed = manifest.get("files", {})
    for name, entry in listed.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif file_entry(path) != entry:
            problems.append(f"{name} differs from the manifest (sha256/size)")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    problems += [f"{n} is not listed in the manifest" for n in sorted(present - set(listed) - {MANIFEST})]
    if not problems:
        try:
            now = describe(root, manifest.get("runtime", {}).get("litert"))
        except (litert.TFLiteFileError, BundleError) as err:
            problems.append(str(err))
        else:
            problems += [f"manifest {key} differs from what LiteRT reads from the files"
                         for key, value in now.items() if manifest.get(key) != value]
        for name in (MODEL, TRAINABLE):
            aliased = litert.inspect(root / name).aliased_outputs()
            problems += [f"{name} signature {key}: output names share a tensor ("
                         + ", ".join("=".join(g) for g in groups) + "); Android's runSignature "
                         "fills only one name per tensor" for key, groups in aliased.items()]
        labels = (root / LABELS).read_text().splitlines() if (root / LABELS).is_file() else []
        if len(labels) != manifest.get("labels", {}).get("num_classes"):
            problems.append(f"{LABELS} has {len(labels)} lines for "
                            f"{manifest.get('labels', {}).get('num_classes')} classes")
    val = manifest.get("validation", {})
    if not val.get("passed") and not val.get("allowed_failure"):
        problems.append("validation failed: " + "; ".join(val.get("failed_gates", ["unknown"])))
    if problems:
        raise BundleError(f"bundle {root} does not check out: " + "; ".join(problems))
    return manifest
