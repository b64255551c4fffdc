"""A run directory's identity: the settings it was made with (`run_config.json`), checked
before any work, so that resuming never mixes settings and a rerun with other settings is
refused with one line, never relabelled.

`prepare(output, config, defaults=..., restart=...)` accepts an empty or missing directory, or
one whose recorded settings equal `config` (the run resumes), or one that holds only a
recorded config (a run refused before any work); anything else is refused (a
non-empty directory that is no run directory, a run made with other settings). With
`restart=True` a non-empty directory is moved aside to `OUTPUT.old-N` untouched and the run
starts afresh, so nothing of the user's is ever lost. It also refuses an input
file inside the directory and an output that cannot be written, and then records `config`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tfprune.errors import TfpruneError
from tfprune.fileio import atomic_write_text

CONFIG = "run_config.json"
FORMAT = "tfprune.run_config/1"


class RunDirError(TfpruneError):
    """An output directory a run cannot use as asked; the message says why and what to do."""


def recorded_config(run_dir) -> dict | None:
    """The settings a run directory was made with, or None for a directory that is no run's
    (a run from before run_config.json existed is read from its summary.json)."""
    run_dir = Path(run_dir)
    for name, key in ((CONFIG, "config"), ("summary.json", "config")):
        try:
            record = json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get(key), dict):
            return record[key]
    return None


def differences(recorded: dict, config: dict, defaults: dict, ignore=()) -> list[str]:
    """`key: old -> new` for every setting that differs (a key the record lacks counts as
    its default: it was added to the config after the run)."""
    return [f"{k}: {recorded.get(k, defaults.get(k))!r} -> {v!r}" for k, v in config.items()
            if k not in ignore and recorded.get(k, defaults.get(k)) != v]


def _aside(out: Path) -> Path:
    n = 1
    while out.with_name(f"{out.name}.old-{n}").exists():
        n += 1
    old = out.with_name(f"{out.name}.old-{n}")
    os.rename(out, old)
    return old


def inside(path, directory) -> bool:
    """Whether the file `path` lies in `directory` (after resolving links)."""
    real, root = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, root]) == root


def prepare(output, config: dict, *, defaults: dict | None = None, restart: bool = False,
            inputs: dict | None = None, ignore=(), log=print) -> Path:
    """Check `output` for a run with `config` (see the module docstring) and record it.
    `inputs`: {flag: path} of files the run reads (refused inside `output`); `ignore`: keys
    that may change between runs (recorded anew). Returns the directory."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--output {out} exists and is not a directory")
    for flag, path in (inputs or {}).items():
        if path and os.path.exists(path) and inside(path, out):
            raise RunDirError(f"--{flag} {path} lies inside --output {out}, where the run writes "
                              "its files; move it out or choose another --output")
    if out.is_dir() and any(p.name != CONFIG for p in out.iterdir()):  # a run that did work
        recorded = recorded_config(out)
        if recorded is None:
            problem = f"--output {out} is not empty and holds no run ({CONFIG})"
        else:
            changed = differences(recorded, config, defaults or {}, ignore)
            problem = changed and (f"--output {out} holds a run made with other settings ("
                                   + "; ".join(changed) + ")")
        if problem and not restart:
            raise RunDirError(f"{problem}; choose another --output, or pass --restart to move "
                              f"it aside to {out.name}.old-N and start afresh")
        if restart:
            log(f"--restart: moved {out} aside to {_aside(out)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, json.dumps(
            {"format": FORMAT, "config": config}, indent=1, sort_keys=True))
    except OSError as err:
        raise RunDirError(f"--output {out} cannot be written: {err.strerror or err}") from None
    return out
