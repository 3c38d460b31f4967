"""Atomic file writes: a reader (``fleet status``, an editor, a concurrent run) sees the old file or the new one,
never half of one. Part of the app bundle, so it imports only the standard library."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place (mode 0644, as a plain
    write would leave it under the usual umask). Creates the parent folder; on any error ``path`` is untouched
    and the temporary file is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        Path(temporary).chmod(0o644)  # mkstemp creates 0600
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """`write_atomically` for UTF-8 text, written with ``\\n`` line ends on every platform."""
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


# A run's record, the same for every runtime's aggregator: `fleet run`, `fleet status` and the controller read it.
PROGRESS_FILE = "progress.jsonl"
"""One JSON event per line, appended: started, round, completed or failed."""
METRICS_FILE = "metrics.json"
"""The run's metrics, rewritten whole after each change."""


def now() -> str:
    """UTC, to the millisecond, as the events carry it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def append_event(model_dir: Path, event: dict[str, Any], time_: str | None = None) -> None:
    """Stamp ``event`` and append it to the run's `PROGRESS_FILE`, flushed, so a follower sees it at once."""
    event["time"] = time_ or now()
    model_dir.mkdir(parents=True, exist_ok=True)
    with (model_dir / PROGRESS_FILE).open("a", encoding="utf-8") as file:
        file.write(json.dumps(event) + "\n")
        file.flush()


def write_metrics(model_dir: Path, metrics: Mapping[str, Any]) -> None:
    write_text_atomically(model_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
