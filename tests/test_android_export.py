"""android_export: the bundle against its manifest, refusal of a failed model, overwrite and
tamper checks, the CLI, and the Python mirror of every interpreter call TfpruneModel.kt makes.

One module fixture runs the CLI once: the pretrained ResNet-20 as full int8 (the Kotlin
helper's quantised path) on the committed CIFAR-100 cut-out's aquatic classes.
"""
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import android_export
from tests.conftest import MINI_NPZ

DATA = f"npz:{MINI_NPZ}"
APP = [sys.executable, "-m", "android_export"]
BATCH = 8  # trainable batch size of the fixture bundle
REAL = 5  # real rows in the partial batches below (the rest is padding)


def _run(*args):
    return subprocess.run(APP + list(args), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "int8"
    proc = _run("--model=pretrained:resnet20", f"--output={out}", "--kind=int8", f"--data={DATA}",
                "--subset=aquatic", f"--batch_size={BATCH}", "--calibration_samples=40",
                "--latency_runs=2", "--head=full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation passed" in proc.stdout
    return out


def test_subset_head_bundle_has_k_classes_and_trains_in_litert(tmp_path, splits, keras_model):
    """--head=subset (the default): the pretrained model's classifier cut to the 10 aquatic
    classes; labels.txt, the manifest and trainable.tflite's train / infer / filter_stats
    all work on 10 classes, labels 0..9 in subset order; a model with another number of
    outputs is refused."""
    from tfprune import data
    from tfprune.ondevice.runtime import TrainableRuntime

    out = tmp_path / "subset"
    android_export.export_bundle("pretrained:resnet20", out, data=DATA, subset="aquatic",
                                 batch_size=BATCH, latency_runs=2, log=lambda *a: None)
    manifest = android_export.check_bundle(out)
    names = [splits.class_names[c] for c in splits.classes]
    assert (out / "labels.txt").read_text().splitlines() == names
    assert manifest["labels"]["num_classes"] == 10 and manifest["output"]["shape"] == [1, 10]
    assert manifest["training"]["num_classes"] == 10
    assert manifest["source"]["head"] == "subset"
    assert manifest["source"]["source_classes"] == list(splits.classes)
    k = data.relabel(splits)
    x = data.normalize_np(k.test.x)
    runner = Interpreter(model_path=str(out / "model.tflite")).get_signature_runner()
    logits = np.concatenate([next(iter(runner(**{manifest["input"]["name"]: x[i:i + 1]})
                                       .values())) for i in range(len(x))])
    restricted = np.asarray(keras_model(x))[:, list(splits.classes)]
    np.testing.assert_allclose(logits, restricted, rtol=1e-3, atol=1e-3)
    rt = TrainableRuntime(out / "trainable.tflite")
    assert rt.logits(x[:BATCH]).shape == (BATCH, 10)
    rt.set_learning_rate(0.01)
    xb, yb = x[:BATCH], k.test.y[:BATCH].astype(np.int32)
    losses = [rt.train_batch(xb, yb)[0] for _ in range(4)]
    assert losses[-1] < losses[0]
    assert rt.evaluate(x, k.test.y) > 0.3
    stats = rt.filter_stats(xb)
    assert stats and all(v["sum_sq"].ndim == 1 for v in stats.values())
    from android_export.export import subset_model
    from tfprune.core import head
    with pytest.raises(android_export.BundleError, match="7 outputs: neither the data's 100"):
        subset_model(head.slice_head(keras_model, range(7)), splits)


@pytest.fixture(scope="module")
def manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def splits():
    from tfprune import data
    return data.load_subset(DATA, "aquatic")


@pytest.fixture(scope="module")
def keras_model():
    from tfprune.models import loader as modelio
    return modelio.load_model("pretrained:resnet20")


def _training_interpreter(bundle):
    # As TfpruneModel.kt: Interpreter.Options().setNumThreads(n) (the XNNPACK delegate on).
    return Interpreter(model_path=str(bundle / "trainable.tflite"), num_threads=2)


def _android_run_signature(bundle, key, inputs, output_names):
    """Android's Interpreter.runSignature for a signature of subgraph 0 (LiteRT's
    NativeInterpreterWrapper.runSignature): inputs go in by their position among subgraph 0's
    inputs, and each output name becomes the position of its tensor among subgraph 0's
    outputs, in a map from position to buffer; after one invoke each position's tensor is
    copied into its buffer. Two names of one tensor share a position, so only one of their
    buffers is written; the others keep their zeros."""
    from tfprune import litert

    sig = litert.inspect(bundle / "trainable.tflite").signatures[key]
    assert sig["subgraph"] == 0, "only subgraph-0 signatures take this path"
    runner = Interpreter(model_path=str(bundle / "trainable.tflite")).get_signature_runner(key)
    interp = Interpreter(model_path=str(bundle / "trainable.tflite"))  # as Java: no runner
    interp.allocate_tensors()
    tensor_of = {name: d["index"] for name, d in runner.get_input_details().items()}
    tensor_of |= {name: d["index"] for name, d in runner.get_output_details().items()}
    in_pos = [d["index"] for d in interp.get_input_details()]
    out_pos = [d["index"] for d in interp.get_output_details()]
    by_position = {}
    for name in output_names:  # TreeMap.put: a later name of the same position replaces
        by_position[out_pos.index(tensor_of[name])] = name
    for name, value in inputs.items():
        interp.set_tensor(in_pos[in_pos.index(tensor_of[name])], value)
    interp.invoke()
    details = interp.get_output_details()
    buffers = {name: None for name in output_names}
    for position, name in by_position.items():
        buffers[name] = interp.get_tensor(details[position]["index"]).copy()
    return buffers


def _normalise(manifest, images_uint8):
    """TfpruneModel.normalise on already-scaled bitmaps: ARGB ints unpacked as Kotlin does."""
    rgb = images_uint8.astype(np.int64)
    argb = (0xFF << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    channels = np.stack([(argb >> 16) & 0xFF, (argb >> 8) & 0xFF, argb & 0xFF], -1)
    norm = manifest["input"]["normalisation"]
    mean, std = np.float32(norm["mean"]), np.float32(norm["std"])
    return ((channels.astype(np.float32) / np.float32(255) - mean) / std).astype(np.float32)


def _padded(manifest, images, labels):
    """trainStep's buffers: images then zero rows, labels then -1."""
    b = manifest["training"]["batch_size"]
    x = np.zeros((b, *images.shape[1:]), np.float32)
    x[:len(images)] = images
    y = np.full(b, -1, np.int32)
    y[:len(labels)] = labels
    return x, y


# ------------------------------------------------------------------ bundle and manifest
def test_bundle_files_signatures_and_labels_match_the_manifest(bundle, manifest, splits):
    from tfprune import data

    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert files == {"manifest.json", "model.tflite", "trainable.tflite", "trainable.json",
                     "labels.txt", "android/TfpruneModel.kt", "android/build.gradle",
                     "android/README.md"}
    for name, entry in manifest["files"].items():
        blob = (bundle / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob)}
    assert set(manifest["files"]) == files - {"manifest.json"}
    # Signatures as a freshly loaded interpreter reports them.
    for name in ("model.tflite", "trainable.tflite"):
        interp = Interpreter(model_path=str(bundle / name))
        listed = manifest["models"][name]["signatures"]
        assert set(listed) == set(interp.get_signature_list())
        for key, sig in listed.items():
            runner = interp.get_signature_runner(key)
            for side, details in (("inputs", runner.get_input_details()),
                                  ("outputs", runner.get_output_details())):
                assert {t["name"]: (t["tensor"], t["shape"], t["dtype"]) for t in sig[side]} == {
                    k: (d["name"], d["shape"].tolist(), np.dtype(d["dtype"]).name)
                    for k, d in details.items()}
    assert set(manifest["models"]["trainable.tflite"]["signatures"]) == {
        "train", "infer", "filter_stats", "save", "restore", "set_learning_rate"}
    inp = Interpreter(model_path=str(bundle / "model.tflite")).get_input_details()[0]
    assert manifest["input"]["dtype"] == "int8" and manifest["input"]["shape"] == [1, 32, 32, 3]
    assert (manifest["input"]["quantization"]["scale"],
            manifest["input"]["quantization"]["zero_point"]) == pytest.approx(inp["quantization"])
    assert manifest["input"]["normalisation"]["mean"] == list(data.MEAN)
    assert not manifest["runtime"]["flex_required"] and manifest["runtime"]["litert"] == "2.3.0"
    source = data.load_source(DATA)
    assert (bundle / "labels.txt").read_text().splitlines() == list(source.class_names)
    assert manifest["labels"]["subset_classes"] == list(splits.classes)
    assert manifest["training"]["batch_size"] == BATCH
    assert json.loads((bundle / "trainable.json").read_text())["fingerprint"] == \
        manifest["training"]["fingerprint"]
    val = manifest["validation"]
    assert val["passed"] and set(val["files"]) == {"model.tflite", "trainable.tflite"}
    assert {g["gate"] for g in val["files"]["model.tflite"]["gates"]} == {
        "signatures", "android-cpu", "edgetpu", "parity"}
    assert "com.google.ai.edge.litert:litert:2.3.0" in (bundle / "android/build.gradle").read_text()
    assert android_export.check_bundle(bundle) == manifest
    # trainable.json sits beside trainable.tflite, so tfprune's Python runtime opens the bundle.
    from tfprune.ondevice.runtime import TrainableRuntime
    assert TrainableRuntime(bundle / "trainable.tflite").state().shape == (
        manifest["training"]["state_size"],)


def test_cli_bad_flag_model_or_output_exits_non_zero(tmp_path):
    proc = _run("--model=pretrained:resnet20", f"--output={tmp_path / 'b'}", "--kind=int4")
    assert proc.returncode != 0 and "int4" in proc.stderr
    proc = _run(f"--model={tmp_path / 'missing.keras'}", f"--output={tmp_path / 'b'}")
    assert proc.returncode != 0 and "missing.keras does not exist" in proc.stderr
    proc = _run("--model=resnet20", f"--output={tmp_path / 'b'}", f"--data={DATA}",
                "--subset=no_such_class")
    assert proc.returncode != 0 and "no_such_class" in proc.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = _run("--model=pretrained:resnet20", f"--output={mine}")
    assert proc.returncode != 0 and "not a tfprune bundle" in proc.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ refusal, overwrite, tamper
@pytest.fixture(scope="module")
def float_model(tmp_path_factory, keras_model):
    from tfprune.litert import targets as exports
    return exports.export_inference(keras_model, "float32",
                                    tmp_path_factory.mktemp("float") / "model_float32.tflite")


def test_failed_validation_is_refused_unless_allowed(bundle, float_model, splits, keras_model,
                                                     tmp_path):
    from tfprune import data
    from tfprune.litert import validate

    # A float model on the Edge TPU gate fails for real (float ops do not map).
    report = validate.validate([float_model, bundle / "trainable.tflite"],
                               ("android-cpu", "edgetpu"), latency_runs=0)
    assert not report["passed"]
    kwargs = dict(model_tflite=float_model, trainable_dir=bundle, validation=report,
                  class_names=data.load_source(DATA).class_names, subset_classes=splits.classes,
                  source={"test": "failed"})
    with pytest.raises(android_export.BundleError, match=r"model\.tflite: edgetpu") as err:
        android_export.write_bundle(tmp_path / "refused", **kwargs)
    assert "trainable.tflite: edgetpu" in str(err.value)
    assert not (tmp_path / "refused").exists() and list(tmp_path.iterdir()) == []
    manifest = android_export.write_bundle(tmp_path / "allowed", allow_failed_validation=True,
                                           **kwargs)
    val = manifest["validation"]
    assert not val["passed"] and val["allowed_failure"] and "FAILED" in val["warning"]
    assert any(g.startswith("model.tflite: edgetpu") for g in val["failed_gates"])
    assert manifest["input"]["dtype"] == "float32" and manifest["input"]["quantization"] is None
    assert android_export.check_bundle(tmp_path / "allowed")["source"] == {"test": "failed"}
    # The gate is the validation of the bundled files: a report without them is refused.
    other = validate.validate([float_model], ("android-cpu",), latency_runs=0)
    with pytest.raises(android_export.BundleError, match="no entries for .*trainable.tflite"):
        android_export.write_bundle(tmp_path / "x", **{**kwargs, "validation": other})
    broken = tmp_path / "broken"  # a trainable.json that is not JSON is named, not a traceback
    broken.mkdir()
    (broken / "trainable.tflite").write_bytes((bundle / "trainable.tflite").read_bytes())
    (broken / "trainable.json").write_text("{not json")
    with pytest.raises(android_export.BundleError, match="broken/trainable.json is not valid JSON"):
        android_export.write_bundle(tmp_path / "y", allow_failed_validation=True,
                                    **{**kwargs, "trainable_dir": broken})


def test_overwrite_rules_and_tampered_bundle(bundle, manifest, splits, keras_model, tmp_path):
    from tfprune import data
    from tfprune.litert import targets as exports

    report = exports.validate_exports(
        [(bundle / "model.tflite", "int8"), (bundle / "trainable.tflite", "trainable")],
        keras_model=keras_model, images=splits.test, latency_runs=0)
    kwargs = dict(model_tflite=bundle / "model.tflite", trainable_dir=bundle, validation=report,
                  class_names=data.load_source(DATA).class_names)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(android_export.BundleError, match="not a tfprune bundle"):
        android_export.write_bundle(mine, **kwargs)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    new = android_export.write_bundle(copy, source={"replaced": True}, **kwargs)  # old bundle
    assert android_export.check_bundle(copy)["source"] == {"replaced": True} == new["source"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "mine"]  # no temp left over
    assert new["files"]["model.tflite"] == manifest["files"]["model.tflite"]

    blob = bytearray((copy / "model.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(blob))
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(android_export.BundleError) as err:
        android_export.check_bundle(copy)
    assert "model.tflite differs" in str(err.value) and "extra.bin is not listed" in str(err.value)
    # A manifest that misdescribes a model, its hashes made consistent again, is caught too.
    shutil.copyfile(bundle / "model.tflite", copy / "model.tflite")
    (copy / "extra.bin").unlink()
    edited = json.loads((copy / "manifest.json").read_text())
    edited["models"]["trainable.tflite"]["signatures"]["train"]["inputs"][0]["shape"] = [1, 1]
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(android_export.BundleError, match="manifest models differs"):
        android_export.check_bundle(copy)


# ------------------------------------------------------------------ the Kotlin calls, mirrored
def test_kotlin_classify(bundle, manifest, splits, keras_model):
    """TfpruneModel.classify: normalise, quantise (floor(x / s + 0.5) + zp), CompiledModel on
    the CPU (an int8 bundle has no GPU check, so the helper does not try the GPU):
    createInputBuffers, writeInt8, run, readInt8, dequantise. Its int8 outputs equal the
    LiteRT interpreter's on the same quantised inputs, and its top class agrees with the Keras
    model's on at least 90% of the images (int8 rounding may flip a near tie)."""
    from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator

    from tfprune import data, litert

    inp, out = manifest["input"], manifest["output"]
    assert manifest["validation"]["files"]["model.tflite"]["gpu"]["check"] == "none"
    x = _normalise(manifest, splits.test.x)
    np.testing.assert_allclose(x, data.normalize_np(splits.test.x), atol=1e-6)
    qin, qout = inp["quantization"], out["quantization"]
    q = np.clip(np.floor(x / np.float32(qin["scale"]) + np.float32(0.5)) + qin["zero_point"],
                -128, 127).astype(np.int8)
    model = CompiledModel.from_file(str(bundle / "model.tflite"),
                                    hardware_accel=HardwareAccelerator.CPU)
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    n = out["shape"][1]
    reference = litert.load_interpreter(bundle / "model.tflite")
    ref_in = reference.get_input_details()[0]["index"]
    ref_out = reference.get_output_details()[0]["index"]
    logits = []
    for i in range(len(q)):
        inputs[0].write(q[i:i + 1])
        model.run_by_index(0, inputs, outputs)
        raw = outputs[0].read(n, np.int8)
        reference.set_tensor(ref_in, q[i:i + 1])  # the helper's rounding, not litert.run's
        reference.invoke()
        np.testing.assert_array_equal(raw, reference.get_tensor(ref_out)[0])
        logits.append((raw.astype(np.float32) - qout["zero_point"]) * np.float32(qout["scale"]))
    logits = np.stack(logits)
    assert logits.shape == (len(x), manifest["labels"]["num_classes"])
    agree = (logits.argmax(1) == np.asarray(keras_model(x)).argmax(1)).mean()
    assert agree >= 0.9, f"top-1 agrees with Keras on {agree:.0%} of the images"


def test_kotlin_train_steps(bundle, manifest, splits):
    """TfpruneModel.setLearningRate + trainStep on a partial batch: padding rows (zero image,
    label -1) carry no loss, and repeated steps lower the loss."""
    interp = _training_interpreter(bundle)
    run = interp.get_signature_runner
    x, y = _padded(manifest, _normalise(manifest, splits.train.x[:REAL]), splits.train.y[:REAL])
    assert run("set_learning_rate")(learning_rate=np.float32(0.01))["learning_rate"] == \
        pytest.approx(0.01)
    logits = run("infer")(x=x)["logits"][:REAL].astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = -log_p[np.arange(REAL), y[:REAL]].mean()
    losses = [float(run("train")(x=x, y=y)["loss"]) for _ in range(4)]
    assert losses[0] == pytest.approx(expected, rel=1e-4)  # mean over the 5 real rows only
    assert losses[-1] < losses[0]


def test_kotlin_save_restore(bundle, manifest, splits, tmp_path):
    """saveState (save(unused) -> raw float32 file, temp + rename), a new interpreter,
    restoreState (restore(state) -> iterations), classifyTrained (infer row 0): the restored
    model answers exactly as the trained one."""
    size = manifest["training"]["state_size"]
    x, y = _padded(manifest, _normalise(manifest, splits.train.x[:REAL]), splits.train.y[:REAL])
    a = _training_interpreter(bundle).get_signature_runner
    a("set_learning_rate")(learning_rate=np.float32(0.01))
    for _ in range(2):
        a("train")(x=x, y=y)
    state = a("save")(unused=np.float32(0))["state"]
    assert state.shape == (size,) and state.dtype == np.float32
    path = tmp_path / f"{manifest['training']['fingerprint']}.state"
    state.astype("<f4").tofile(f"{path}.new")  # AtomicFile: write, fsync, rename
    (tmp_path / f"{path.name}.new").rename(path)
    assert path.stat().st_size == size * 4
    # restoreState's rule: a file of any other size (a write cut short) is no saved state
    truncated = tmp_path / "truncated.state"
    truncated.write_bytes(path.read_bytes()[:size * 2])
    assert truncated.stat().st_size != size * 4

    b = _training_interpreter(bundle).get_signature_runner
    fresh = b("infer")(x=x)["logits"][0].copy()
    restored = np.fromfile(path, "<f4")
    assert int(b("restore")(state=restored)["iterations"]) == 2
    trained = a("infer")(x=x)["logits"][0]
    np.testing.assert_array_equal(b("infer")(x=x)["logits"][0], trained)
    assert np.abs(fresh - trained).max() > 1e-4  # restore changed the weights


def test_kotlin_filter_stats(bundle, manifest, splits):
    """TfpruneModel.filterStats: output buffers sized from the manifest's shapes; rows with
    valid = 0 do not count, whatever images they hold."""
    spec = {o["name"]: o["shape"] for o in
            manifest["models"]["trainable.tflite"]["signatures"]["filter_stats"]["outputs"]}
    run = _training_interpreter(bundle).get_signature_runner("filter_stats")
    images = _normalise(manifest, splits.train.x[:BATCH])
    valid = np.array([1.0] * REAL + [0.0] * (BATCH - REAL), np.float32)
    padded = run(x=_padded(manifest, images[:REAL], [])[0], valid=valid)
    assert {k: list(v.shape) for k, v in padded.items()} == spec
    assert float(padded["samples"]) == REAL
    layer = manifest["training"]["stats_layers"][-1]
    assert spec[f"{layer}__sum_sq"] == [64]  # ResNet-20's last stage
    other = run(x=images, valid=valid)  # other images in the padding rows
    for key, value in padded.items():
        np.testing.assert_allclose(other[key], value, rtol=1e-5, atol=1e-6)


def test_android_subgraph0_output_mapping(bundle, manifest, splits):
    """filterStats as Android runs it (`_android_run_signature`): every buffer is written and
    equals Python's signature runner, because the export gives each output name its own
    tensor (on the old export ResNet-20 had 77 outputs on 61 tensors, and 16 `__count`
    buffers stayed zero)."""
    spec = manifest["models"]["trainable.tflite"]["signatures"]["filter_stats"]["outputs"]
    names = [o["name"] for o in spec]
    images = _normalise(manifest, splits.train.x[:BATCH])
    valid = np.array([1.0] * REAL + [0.0] * (BATCH - REAL), np.float32)
    android = _android_run_signature(bundle, "filter_stats", {"x": images, "valid": valid}, names)
    python = _training_interpreter(bundle).get_signature_runner("filter_stats")(x=images,
                                                                              valid=valid)
    assert [n for n, v in android.items() if v is None] == []
    for name in names:
        np.testing.assert_allclose(android[name], python[name], rtol=1e-5, atol=1e-5)
    layer = manifest["training"]["stats_layers"][0]
    assert float(android[f"{layer}__count"]) > 0 and float(android["samples"]) == REAL


def test_check_bundle_refuses_aliased_signature_outputs(bundle, tmp_path):
    """A bundle whose trainable.tflite has two output names on one tensor (what Android
    cannot fill) fails check_bundle, even with a manifest that matches the files."""
    import tensorflow as tf

    from android_export import bundle as bundle_mod

    class Twice(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def stats(self, x):
            total = tf.reduce_sum(x) * 2.0
            return {"a__count": total, "b__count": total, "c__sum": x + 1.0}

    module = Twice()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.stats.get_concrete_function()], module)
    copy = tmp_path / "aliased"
    shutil.copytree(bundle, copy)
    (copy / "trainable.tflite").write_bytes(converter.convert())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(bundle_mod.describe(copy, manifest["runtime"]["litert"]))
    manifest["files"]["trainable.tflite"] = bundle_mod.file_entry(copy / "trainable.tflite")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(android_export.BundleError, match="a__count=b__count"):
        android_export.check_bundle(copy)
    # what an app would get: Android fills one of the two buffers, the other stays unwritten
    (key,) = manifest["models"]["trainable.tflite"]["signatures"]
    got = _android_run_signature(copy, key, {"x": np.ones((1, 4), np.float32)},
                                 ["a__count", "b__count", "c__sum"])
    assert sorted(n for n, v in got.items() if v is None) in (["a__count"], ["b__count"])
