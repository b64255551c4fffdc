"""tfprune.fileio: a target is replaced whole (no temp file left), or not touched at all."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tfprune import fileio# noqa: E402


def test_text_and_bytes_replace_the_target_and_leave_no_temp(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old, longer than the new text")
    fileio.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert fileio.atomic_write_bytes(tmp_path / "m.tflite", b"\x00TFL3") == tmp_path / "m.tflite"
    assert (tmp_path / "m.tflite").read_bytes() == b"\x00TFL3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "result.json"]


def test_figure_is_a_png_and_a_failed_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "plot.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fileio.atomic_savefig(fig, target, dpi=20)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed
    target.write_bytes(b"the user's plot")
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        fileio.atomic_savefig(fig, target, dpi=-1)
    assert target.read_bytes() == b"the user's plot"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temp file left
