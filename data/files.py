"""Files a run writes that must never be read half-written: atomic writes and a stage's ``DONE`` marker.

A stage of ``csrl train`` (reward models, SFT, PPO) writes its folder, then its marker last; a folder
without the marker is unfinished and is trained again, never loaded.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> is_done(folder)
False
>>> mark_done(folder, {"wall_s": 1.5}); is_done(folder)
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DONE = "DONE"  # the marker file a finished stage leaves in its folder


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def is_done(folder: str | Path) -> bool:
    """Whether the stage that writes ``folder`` finished (its ``DONE`` marker exists)."""
    return (Path(folder) / DONE).exists()


def mark_done(folder: str | Path, summary: dict | None = None) -> None:
    """Leave the ``DONE`` marker in ``folder``, holding ``summary`` (timings, counts) as JSON."""
    write_text_atomic(Path(folder) / DONE, json.dumps(summary or {}, indent=2, default=float) + "\n")


def update_json(path: str | Path, **parts) -> dict:
    """Add ``parts`` to the JSON object in ``path`` (created if missing), atomically; returns the whole object."""
    path = Path(path)
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record.update(parts)
    write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record
