"""Distillation: the loss against a NumPy reference on one real batch, mixed views, and a
short fit that moves the student towards the teacher."""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import data
from tfprune.core import head
from tfprune.models import loader
from tfprune.training import distill, fit, taps


@pytest.fixture(scope="module")
def teacher_student(sample_splits):
    model = loader.load_model("pretrained:resnet20")
    teacher = head.slice_head(model, sample_splits.classes)
    student = head.slice_head(loader.load_model("resnet20"), sample_splits.classes)
    return teacher, student


@pytest.mark.parametrize("alpha,temperature", [(0.9, 4.0), (0.0, 1.0), (1.0, 2.5), (0.5, 1.0)])
def test_loss_matches_numpy_on_one_batch(teacher_student, sample_splits, alpha, temperature):
    teacher, student = teacher_student
    splits = data.relabel(sample_splits)
    x, y = next(iter(data.as_dataset(splits.train, 32, training=True)))
    y = y.numpy().copy()
    y[::5] = -1  # unlabelled rows count in the KL term only
    s, t = np.asarray(student(x, training=False)), np.asarray(teacher(x, training=False))
    got = float(distill.distill_loss(tf.constant(y), tf.constant(s), tf.constant(t), alpha,
                                     temperature))
    want = distill.distill_loss_np(y, s, t, alpha, temperature)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_mixed_views_append_unlabelled_rows(sample_splits):
    splits = data.relabel(sample_splits)
    base = data.as_dataset(splits.train, 16, training=True, seed=3)
    for mix in ("mixup", "cutmix"):
        x, y = next(iter(distill.with_mixed_views(base, mix, 3)))
        assert x.shape[0] == 32 and (y.numpy()[16:] == -1).all() and (y.numpy()[:16] >= 0).all()
        assert not np.allclose(x.numpy()[16:], x.numpy()[:16])
    with pytest.raises(ValueError, match="unknown mix"):
        distill.with_mixed_views(base, "bogus")


def test_distilled_finetune_moves_student_towards_teacher(teacher_student, sample_splits):
    teacher, _ = teacher_student
    student = head.slice_head(loader.load_model("pretrained:resnet20"), sample_splits.classes)
    logits = student.get_layer("logits")
    logits.set_weights([np.random.default_rng(0).normal(0, 0.1, w.shape).astype(w.dtype)
                        for w in logits.get_weights()])  # features kept, classifier lost
    splits = data.relabel(sample_splits)
    few = data.Images(splits.train.x[:128], splits.train.y[:128])
    x = data.normalize_np(splits.val.x[:64])

    def gap():
        return distill.distill_loss_np(np.full(64, -1), np.asarray(student(x)),
                                       np.asarray(teacher(x)), 1.0, 4.0)
    before = gap()
    momentum = [l.momentum for l in student.layers if hasattr(l, "momentum")]
    transfer = data.Images(splits.val.x[64:96], splits.val.y[64:96])  # labels ignored
    history = fit.finetune(student, few, 2, 0.02, batch_size=32, teacher=teacher, mix="mixup",
                           transfer_images=transfer, verbose=0)
    assert gap() < before and len(history["loss"]) == 2
    assert [l.momentum for l in student.layers if hasattr(l, "momentum")] == momentum


def test_mixed_views_without_teacher_refused(sample_splits):
    student = head.slice_head(loader.load_model("resnet20"), sample_splits.classes)
    with pytest.raises(ValueError, match="need a teacher"):
        fit.finetune(student, data.relabel(sample_splits).train, 1, 0.01, mix="mixup")


def test_compiled_distiller_checkpoint_resumes(teacher_student, sample_splits, tmp_path):
    """compile_distill's model saves with its optimizer, loads back the same (student and
    teacher), trains on, and ships as an uncompiled copy (what a resumable run needs)."""
    import keras

    from tfprune.core import surgery
    teacher, _ = teacher_student
    student = surgery.slice_head(loader.load_model("pretrained:resnet20"), sample_splits.classes)
    splits = data.relabel(sample_splits)
    ds = data.as_dataset(data.Images(splits.train.x[:32], splits.train.y[:32]), 32, training=True)
    model = distill.compile_distill(student, teacher, 0.01, 5e-4, 0.9, 0.9, 4.0)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    fit.atomic_save(model, tmp_path / "ck.keras")
    again = keras.models.load_model(tmp_path / "ck.keras")
    x = data.normalize_np(splits.test.x[:8])
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    assert int(again.optimizer.iterations) == 1
    again.fit(ds, epochs=1, verbose=0, shuffle=False)
    fit.atomic_save(again, tmp_path / "final.keras", optimizer=False)
    assert keras.models.load_model(tmp_path / "final.keras")(x).shape == (8, 10)


# --- feature maps ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pruned_student(sample_splits):
    from tfprune import pruner
    teacher = head.slice_head(loader.load_model("pretrained:resnet20"), sample_splits.classes)
    return teacher, pruner.prune_model(teacher, "l1", 0.5, "params")


def test_feature_taps_are_the_residual_streams_at_the_kept_channels(pruned_student):
    _, res = pruned_student
    found = dict(taps.feature_taps(res.pruned, res.plan))
    assert list(found) == [f"s{s}b{b}_out" for s in (1, 2, 3) for b in (0, 1, 2)]
    for name, kept in found.items():
        assert kept == res.plan["layers"][name]["out"]
        assert res.pruned.get_layer(name).output.shape[-1] == len(kept)
    import keras
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, name="c1"),
                              keras.layers.ReLU(name="r1"), keras.layers.Conv2D(5, 3, name="c2"),
                              keras.layers.ReLU(name="r2"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3)])
    assert taps.feature_taps(plain, {"layers": {}}) == [("r2", [0, 1, 2, 3, 4])]
    assert taps.feature_taps(plain, {"layers": {"r2": {"out": [1, 3]}}}) == [("r2", [1, 3])]


def test_taps_of_a_student_pruned_twice_name_the_teachers_channels(pruned_student):
    from tfprune import pruner
    teacher, res = pruned_student
    again = pruner.prune_model(res.pruned, "l1", 0.3, "params")
    first = taps.feature_taps(res.pruned, res.plan)
    both = taps.compose(first, taps.feature_taps(again.pruned, again.plan))
    assert taps.compose(None, first) == first
    assert [n for n, _ in both] == [n for n, _ in first]
    assert any(len(k) < len(f) for (_, k), (_, f) in zip(both, first))  # cut again
    for name, kept in both:  # the stream's BatchNorm scales are the teacher's at those channels
        gamma = name.replace("_out", "_b_bn")
        np.testing.assert_array_equal(again.pruned.get_layer(gamma).gamma.numpy(),
                                      teacher.get_layer(gamma).gamma.numpy()[kept])


def test_feature_loss_matches_numpy_and_vanishes_on_the_kept_maps(pruned_student, sample_splits):
    import keras
    teacher, res = pruned_student
    tapped = taps.feature_taps(res.pruned, res.plan)
    names = [n for n, _ in tapped]
    x = data.normalize_np(sample_splits.test.x[:16])
    s = keras.Model(res.pruned.inputs, [res.pruned.get_layer(n).output for n in names])(x)
    t = keras.Model(teacher.inputs, [teacher.get_layer(n).output for n in names])(x)
    cut = [np.asarray(m)[..., kept] for m, (_, kept) in zip(t, tapped)]
    got = float(taps.feature_loss([tf.constant(np.asarray(m)) for m in s],
                                  [tf.constant(c) for c in cut]))
    assert got == pytest.approx(taps.feature_loss_np(s, cut), rel=1e-5) and got > 0
    assert taps.feature_loss_np(cut, cut) == 0.0


def test_feature_distillation_brings_the_maps_closer_and_resumes(pruned_student, sample_splits,
                                                                  tmp_path):
    import keras
    teacher, res = pruned_student
    student = keras.models.clone_model(res.pruned)
    student.set_weights(res.pruned.get_weights())
    tapped = taps.feature_taps(student, res.plan)
    names = [n for n, _ in tapped]
    x = data.normalize_np(sample_splits.test.x[:64])
    t_maps = keras.Model(teacher.inputs, [teacher.get_layer(n).output for n in names])(x)
    cut = [np.asarray(m)[..., kept] for m, (_, kept) in zip(t_maps, tapped)]

    def gap():
        maps = keras.Model(student.inputs, [student.get_layer(n).output for n in names])(x)
        return taps.feature_loss_np(maps, cut)
    before = gap()
    splits = data.relabel(sample_splits)
    history = fit.finetune(student, data.Images(splits.train.x[:128], splits.train.y[:128]), 2,
                           0.02, batch_size=32, teacher=teacher, taps=tapped,
                           feature_weight=5.0, verbose=0)
    assert gap() < before and np.isfinite(history["loss"]).all()
    ds = data.as_dataset(data.Images(splits.train.x[:32], splits.train.y[:32]), 32, training=True)
    model = distill.compile_distill(student, teacher, 0.01, 5e-4, 0.9, 0.9, 4.0, tapped, 5.0)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    fit.atomic_save(model, tmp_path / "ck.keras")
    again = keras.models.load_model(tmp_path / "ck.keras")
    assert again.taps == model.taps and again.feature_weight == 5.0
    assert int(again.optimizer.iterations) == 1
    np.testing.assert_array_equal(np.asarray(again(x[:8])), np.asarray(model(x[:8])))
    with pytest.raises(ValueError, match="needs one"):
        fit.finetune(student, splits.train, 1, 0.01, taps=tapped, feature_weight=1.0)


@pytest.mark.parametrize("with_teacher", [True, False])
def test_weight_average_is_the_moving_average_of_the_steps(teacher_student, sample_splits,
                                                           with_teacher):
    """Two one-batch epochs with ema=m end at m * (weights after step 1) + (1 - m) * (weights
    after step 2), the steps being those of the run without the average (Keras starts the
    average at the first step's weights)."""
    import keras

    teacher, student = teacher_student
    splits = data.relabel(sample_splits)
    one = data.Images(splits.train.x[:16], splits.train.y[:16])  # one batch of 16

    def run(ema, epochs):
        model = keras.models.clone_model(student)
        model.set_weights(student.get_weights())
        fit.finetune(model, one, epochs, 0.05, batch_size=16, teacher=teacher if with_teacher
                     else None, verbose=0, ema=ema)
        return [v.numpy() for v in model.trainable_variables]
    first, second, averaged = run(0.0, 1), run(0.0, 2), run(0.9, 2)
    moved = 0
    for w1, w2, avg in zip(first, second, averaged):
        np.testing.assert_allclose(avg, 0.9 * w1 + 0.1 * w2, rtol=1e-4, atol=1e-5)
        moved += not np.allclose(w1, w2)
    assert moved > 10
