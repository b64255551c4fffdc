"""The model zoo: every network builds, runs, has its known size, and learns."""
import numpy as np
import pytest

from tfprune import data
from tfprune.training import fit as train
from tfprune.models import zoo

# Total parameters (incl. BatchNorm moving statistics) with a 100-way head.
PARAMS = {"resnet20": 279_892, "resnet56": 865_876, "mobilenetv2": 2_386_084,
          "squeezenet": 782_628, "alexnet": 7_798_692}


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_builds_and_runs(name, sample_splits):
    model = zoo.build(name)
    assert model.count_params() == PARAMS[name]
    x = data.normalize_np(sample_splits.test.x[:2])
    logits = model(x, training=False).numpy()
    assert logits.shape == (2, 100) and np.isfinite(logits).all()
    assert model.layers[-1].name == "logits" and model.input_shape == (None, 32, 32, 3)


def test_resnet20_is_he_et_al():
    """Trainable weights by hand: 3x3 convs (16/32/64 wide, 3 blocks a stage), two 1x1
    projections, BatchNorm gamma/beta on 784 channels, 64x100 head."""
    convs = 3 * 9 * 16 + 6 * 9 * 16 * 16 + (9 * 16 * 32 + 5 * 9 * 32 * 32) \
        + (9 * 32 * 64 + 5 * 9 * 64 * 64) + 16 * 32 + 32 * 64
    bn = 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64)
    model = zoo.build("resnet20")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == convs + bn + 64 * 100 + 100 == 278_324


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown zoo model 'resnet18'.*resnet20"):
        zoo.build("resnet18")


def test_short_fit_lowers_loss(sample_splits):
    import keras

    keras.utils.set_random_seed(0)
    model = train.compile_sgd(zoo.build("resnet20"), 0.05, 5e-4)
    ds = data.as_dataset(sample_splits.train, 50, training=True)
    history = model.fit(ds, epochs=4, verbose=0, shuffle=False).history["loss"]
    assert history[-1] < history[0] - 0.3, history


def test_pretrained_resnet20_beats_chance_by_far(sample_splits):
    from tfprune.models import cards as card
    from tfprune.models import loader as modelio

    model = modelio.load_model("pretrained:resnet20")
    info = card.read_card(modelio.pretrained_path("resnet20"))
    assert info["test_accuracy"] > 0.55 and info["test_images"] == 10_000
    train.compile_sgd(model, 0.0, 0.0)
    accuracy = model.evaluate(data.as_dataset(sample_splits.test, 300), verbose=0)[1]
    assert accuracy > 0.3  # 300 real aquatic test images; chance over 100 classes is 0.01
