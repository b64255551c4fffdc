"""Measured latency tables as one JSON file, keyed by sha256 of (what was timed, runtime,
LiteRT version, CPU): a changed layer or runtime is a new key, never a stale hit.

Default file: $TFPRUNE_LATENCY_CACHE, else ~/.cache/tfprune/latency.json. Written
temp-then-rename after every block, so an interrupted build keeps what it measured.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tfprune import fileio
from tfprune.latency.runtimes import LatencyError, environment

FORMAT = "tfprune.latency.cache/1"


def default_path() -> Path:
    env = os.environ.get("TFPRUNE_LATENCY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tfprune" / "latency.json"


def cache_key(signature, runtime: str, env: dict | None = None) -> str:
    env = environment() if env is None else env
    blob = json.dumps({"signature": signature, "runtime": runtime, "litert": env["litert"],
                       "cpu": env["cpu"]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class LatencyCache:
    """{key: entry} in a JSON file; `entry` is whatever the latency model stores (JSON data)."""

    def __init__(self, path=None):
        self.path = Path(path) if path else default_path()
        self.entries = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise LatencyError(f"cannot read latency cache {self.path}: {err}") from None
            if data.get("format") != FORMAT:
                raise LatencyError(f"{self.path} is not a tfprune latency cache "
                                   f"(format {data.get('format')!r})")
            self.entries = data["entries"]

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, entry) -> None:
        self.entries[key] = entry
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_text(self.path, json.dumps(
            {"format": FORMAT, "entries": self.entries}, indent=0, sort_keys=True))
