"""Check the subsets on the full CIFAR-100 file (not a test: the file is not on a user's machine).

python benchmarks/data_check.py --data=npz:../shared/data/cifar100.npz
Writes benchmarks/results/data_check.json: per preset the train/val/test sizes, against the
expected 400/100/100 images per class, and the train pool's channel mean and std.
"""
import json
import sys
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("data", "npz:../shared/data/cifar100.npz", "The full dataset.")
flags.DEFINE_string("output", str(Path(__file__).parent / "results" / "data_check.json"), "JSON.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np

    from tfprune import data, fileio

    start = time.time()
    source = data.load_source(FLAGS.data)
    result = {"data": FLAGS.data, "presets": {}, "ok": True}
    for name in data.PRESETS:
        splits = data.split(source, name)
        n = len(splits.classes)
        sizes = [len(splits.train), len(splits.val), len(splits.test)]
        expected = [400 * n, 100 * n, 100 * n]
        result["presets"][name] = {"classes": n, "train_val_test": sizes, "expected": expected}
        result["ok"] &= sizes == expected
    pixels = source.train.x.reshape(-1, 3).astype(np.float64) / 255
    result["channel_mean"] = pixels.mean(0).round(4).tolist()
    result["channel_std"] = pixels.std(0).round(4).tolist()
    result["ok"] &= np.allclose(result["channel_mean"], data.MEAN, atol=1e-3) and \
        np.allclose(result["channel_std"], data.STD, atol=1e-3)
    result["seconds"] = round(time.time() - start, 1)
    fileio.atomic_write_text(FLAGS.output, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    app.run(main)
