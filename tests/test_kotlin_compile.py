"""The Android helper compiles: Debian's kotlinc builds android_export/android/TfpruneModel.kt
against stubs of the Android and LiteRT classes it uses (tests/kotlin_stubs/, written from
their documented signatures; see its README). A compile error, or a call that the real APIs'
signatures do not allow, fails this test and so CI (.ci/run installs the `kotlin` package)."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "android_export" / "android" / "TfpruneModel.kt"
STUBS = ROOT / "tests" / "kotlin_stubs"


def test_tfprune_model_kt_compiles_against_the_api_stubs(tmp_path):
    kotlinc = shutil.which("kotlinc")
    assert kotlinc, "kotlinc not found: apt-get install kotlin (.ci/run installs it)"
    stubs = sorted(str(p) for p in STUBS.rglob("*") if p.suffix in (".kt", ".java"))
    proc = subprocess.run([kotlinc, "-nowarn", str(HELPER), *stubs, "-d", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert proc.returncode == 0 and not errors, "\n".join(errors) or proc.stderr[-3000:]
    assert (tmp_path / "com" / "example" / "tfprune" / "TfpruneModel.class").is_file()
