"""Problems found in a repository, each naming the file, the line, the field and what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EXIT_INVALID = 2
"""Exit code for bad input: the repository (or a manifest) does not load or does not validate."""


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    """Path relative to the repository root, with forward slashes."""
    line: int | None
    field: str
    """Dotted field path in the document (``training.learningRate``, ``listeners[0].port``), or ``""``."""
    message: str
    """What was expected, and what was found."""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class InvalidRepository(Exception):
    """Raised with every problem found at once; nothing is written when this is raised."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.field, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def field_path(loc: Iterable[str | int]) -> str:
    """``("listeners", 0, "port")`` -> ``listeners[0].port``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
