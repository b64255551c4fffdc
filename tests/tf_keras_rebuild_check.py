"""Run by tests/test_tf_keras_rebuild.py in a child process (importing tf_keras must not touch
the test process): rebuild a Keras 3 ResNet-20 as tf_keras, check its outputs, prune it."""
import numpy as np
import tf_keras
from pruning_utils import check_equivalent, randomize

from tfprune.core import modelspec
from tfprune.models import zoo

model = randomize(zoo.build("resnet20"), seed=2)
k2 = modelspec.write_model(modelspec.read_model(model), tf_keras)
assert type(k2).__module__.startswith("tf_keras"), type(k2)
assert [l.name for l in k2.layers] == [l.name for l in model.layers]
x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
ref, out = np.asarray(model(x)), k2(x).numpy()
err = np.abs(ref - out).max() / np.abs(ref).max()
assert err < 1e-4, err
assert k2.count_params() == model.count_params()
plan, pruned = check_equivalent(k2, (32, 32, 3), 0.5, "params", "global", 8)
assert type(pruned).__module__.startswith("tf_keras") and pruned.count_params() < k2.count_params()
print("OK", err)
