"""Run by tests/test_ondevice_pipeline.py in a fresh process: one device training step from
fixture images, then print which TensorFlow/Keras modules got loaded (expected: none)."""
import sys
from pathlib import Path

from tfprune import data
from tfprune.ondevice import finetune, runtime

FIXTURE = Path(__file__).with_name("fixtures") / "cifar100_mini.npz"

splits = data.load_subset(f"npz:{FIXTURE}", "aquatic")
rt = runtime.TrainableRuntime(sys.argv[1])
x, y = next(finetune.training_batches(splits.train, rt.batch_size, 0, 0, True))
rt.train_batch(x, y)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
