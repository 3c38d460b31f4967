"""Helpers of ``test_bad_inputs``: a snapshot of every entry under a folder (to prove nothing was written), a guard
that fails a command the moment it would start a process, a deadline (a command that hangs fails instead), and
the context a bad-input case builds its files and command line in."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result

Entry = tuple[object, ...]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` (itself included), never following a link or opening anything but a regular
    file: folders with their modification time (an entry made and removed again changes it), files with their
    modification time and SHA-256, links with their target, anything else (a FIFO) with its type."""
    found: dict[str, Entry] = {".": ("folder", root.lstat().st_mtime_ns)}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in sorted([*folders, *files]):
            path = Path(folder, name)
            info = path.lstat()
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", str(path.readlink()))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("folder", info.st_mtime_ns)
            elif stat.S_ISREG(info.st_mode):
                found[relative] = ("file", info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[relative] = ("special", stat.S_IFMT(info.st_mode))
    return found


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs between two snapshots, one line per entry: ``created``, ``removed`` or ``changed``."""
    lines: list[str] = []
    made_folder = ""
    for path in sorted(after.keys() - before.keys()):
        if made_folder and path.startswith(made_folder + "/"):
            continue  # what a new folder holds is new too: the folder alone says so
        inside = sum(other.startswith(path + "/") for other in after) if after[path][0] == "folder" else 0
        lines.append(f"created {path}" + (f"/ (and {inside} entries in it)" if inside else ""))
        made_folder = path if inside else ""
    lines += [f"removed {path}" for path in sorted(before.keys() - after.keys())]
    lines += [
        f"changed {path} ({before[path][0]})"
        for path in sorted(before.keys() & after.keys())
        if before[path] != after[path]
    ]
    return lines


class ProcessStartedError(AssertionError):
    """Raised instead of starting a process: a refused command must refuse before any process starts."""


@contextmanager
def no_process_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block, starting a process (``subprocess.Popen``, ``os.fork``, ``os.posix_spawn``) raises
    `ProcessStartedError` instead."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        shown = " ".join(map(str, args[0])) if args and isinstance(args[0], list | tuple) else repr(args[:1])
        raise ProcessStartedError(f"a process was started: {shown[:300]}")

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", refuse)
        patch.setattr(os, "fork", refuse)
        patch.setattr(os, "posix_spawn", refuse)
        patch.setattr(os, "posix_spawnp", refuse)
        yield


def describe(result: Result) -> str:
    """The outcome of an invocation, for an assertion's message."""
    text = f"exit code {result.exit_code}\n--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit) and result.exc_info:
        text += "--- exception:\n" + "".join(traceback.format_exception(*result.exc_info))[-3000:]
    return text


def assert_no_traceback(result: Result) -> None:
    """The command ended by exiting, not by an exception escaping it, and printed no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), describe(result)
    assert "Traceback (most recent call last)" not in result.output, describe(result)


Phrase = str | re.Pattern[str]


def contains(text: str, phrase: Phrase) -> bool:
    return phrase.search(text) is not None if isinstance(phrase, re.Pattern) else phrase in text


@dataclass(frozen=True)
class Call:
    """A command line (after ``fleet``) and what its output must say."""

    argv: Sequence[str]
    err: Sequence[Phrase] = ()
    """Each must appear on stderr."""
    out: Sequence[Phrase] = ()
    """Each must appear on stdout; when empty, stdout must be empty."""
    absent: Sequence[str] = ()
    """None may appear in the output."""
    cwd: Path | None = None
    """Where to run it (default: the repository)."""


@dataclass
class Context:
    """One case's folder: ``tmp`` holds the example repository ``repo`` (with its committed manifests, the prepared
    data in ``.fleet/data`` and a completed earlier run in ``.fleet/runs``) and whatever else the case writes."""

    tmp: Path
    repo: Path
    assets: Path
    """Model files and data made once for the module; `asset` copies them into ``tmp``."""
    locks: list[int] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.repo / ".fleet" / "data"

    @property
    def runs(self) -> Path:
        return self.repo / ".fleet" / "runs"

    @property
    def test_split(self) -> str:
        return str(self.data / "test" / "digits.npz")

    def path(self, relative: str) -> str:
        return str(self.tmp / relative)

    def file(self, relative: str, content: str | bytes) -> str:
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def folder(self, relative: str) -> str:
        path = self.tmp / relative
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def link(self, relative: str, target: Path) -> str:
        path = self.tmp / relative
        path.symlink_to(target, target_is_directory=target.is_dir())
        return str(path)

    def asset(self, name: str, relative: str | None = None) -> str:
        target = self.tmp / (relative or f"given/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.assets / name, target)
        return str(target)

    def npz(self, relative: str, **arrays: Any) -> str:
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:
            np.savez(file, **arrays)
        return str(path)

    def truncated(self, source: Path, relative: str) -> str:
        data = source.read_bytes()
        return self.file(relative, data[: len(data) // 2])

    def edit_repo(self, relative: str, old: str, new: str) -> None:
        path = self.repo / relative
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} must occur once in {relative}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def git(self, *args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false", *args],
            cwd=self.repo,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def commit(self) -> None:
        """Make the repository a git repository with its current files as one commit on main."""
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", "base")

    def hold_run_lock(self, job: str) -> None:
        """Hold ``<runs>/<job>/run.lock`` as a running `fleet run` does (an flock, with its pid inside) until the
        case ends."""
        folder = self.runs / job
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(descriptor, b"4242\n", 0)
        self.locks.append(descriptor)

    def release(self) -> None:
        for descriptor in self.locks:
            os.close(descriptor)
        self.locks.clear()


Build = Callable[[Context], Call]


@dataclass(frozen=True)
class Bad:
    """A bad input that is not an edit of the repository's files: the command it misuses, how to build it, and
    the exit code it must give."""

    command: str
    build: Build
    code: int = 2
    prepare: Callable[[Context], object] | None = None
    """Run before `build`: what the case needs besides files (a git commit, a held lock)."""


def violations(code: int, call: Call, result: Result, written: list[str]) -> list[str]:
    """Everything a refusal got wrong, one line each (empty: exit ``code``, the phrases said, no traceback, and
    nothing ``written``)."""
    wrong = []
    if isinstance(result.exception, ProcessStartedError):
        wrong.append(f"started a process before refusing: {str(result.exception).splitlines()[0]}")
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        wrong.append(f"an exception escaped (a traceback): {type(result.exception).__name__}: {result.exception}")
    if "Traceback (most recent call last)" in result.output:
        wrong.append("printed a traceback")
    if result.exit_code != code:
        wrong.append(f"exit code {result.exit_code}, expected {code}")
    wrong += [f"stderr does not say {phrase!r}" for phrase in call.err if not contains(result.stderr, phrase)]
    wrong += [f"stdout does not say {phrase!r}" for phrase in call.out if not contains(result.stdout, phrase)]
    if not call.out and result.stdout:
        wrong.append("printed on stdout")
    wrong += [f"the output says {text!r}" for text in call.absent if text in result.output]
    wrong += [f"wrote: {line}" for line in written]
    return wrong
