"""Atomic file writes: a reader (``fleet status``, an editor, a concurrent run) sees the old file or the new one,
never half of one. Part of the app bundle, so it imports only the standard library."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
