"""Write the user's files whole or not at all: each writer writes a temp file beside the
target and renames it over the target, so a crash never leaves a half-written file, a reader
never sees one, and a failed write leaves the old file as it was. `atomic_write` takes any
writer (Keras models: `tfprune.training.fit.atomic_save`; device checkpoints)."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path, write, suffix: str = "") -> Path:
    """`write(tmp)` to a temp path beside `path` (ending in `suffix`, for writers that read the
    format from the name), then rename it over `path`; on any failure the temp file goes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_savefig(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG (the temp name keeps the .png suffix matplotlib reads
    the format from), then close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi), ".png")
    finally:
        plt.close(fig)
