"""Atomic writes: the new file whole, or the old one untouched and no temporary file left."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from fleet.app.files import write_atomically, write_text_atomically


def test_writes_the_file_readable_by_all_creating_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "status.json"
    write_text_atomically(path, "{}\n")
    assert path.read_bytes() == b"{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def half(file: BinaryIO) -> None:
        file.write(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
