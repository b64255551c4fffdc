"""The model writer rebuilds a Keras 3 model as a tf_keras (Keras 2) model, and the core reads
and prunes tf_keras models. Runs in a subprocess (tests/tf_keras_rebuild_check.py): tf_keras
must not share this process."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def test_keras3_resnet20_rebuilt_as_tf_keras_and_pruned():
    proc = subprocess.run([sys.executable, str(ROOT / "tf_keras_rebuild_check.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")
