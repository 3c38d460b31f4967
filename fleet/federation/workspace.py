"""A job's folder under `fleet run`'s work dir: one run of the job at a time, each run in a folder of its own,
and the model storage replaced whole, only by a run that completed.

    <work-dir>/<job>/
      run.lock               held by the `fleet run` running the job (an flock); it holds that run's pid
      status.json            the status of the job's latest run
      attempts/<id>/         one run: certs/, logs/, flwr-home/, app/ and storage/ (what its ServerApp writes)
      storage/<path>         the job's model storage: the files of the last run that completed, whole

Why a kernel lock: it is released when its process ends however it ends, SIGKILL included, so a crashed run
never blocks the next one, and a reader can tell a run that is going from one that died (`lock_holder`).
Why attempt folders: a second run, a crash or a failure never mixes its certificates, logs, checkpoints or
model with another run's; `publish` then moves a completed run's storage into place with two renames on one
file system, so the storage path never holds half of one run and half of another.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "run.lock"
ATTEMPTS = "attempts"
KEPT_ATTEMPTS = 5
"""Finished attempts kept for their logs; older ones are removed when a run starts."""
_ACQUIRE_PATIENCE = 1.0
"""Seconds a starting run retries the lock: a reader (`lock_holder`) holds it for an instant."""


class AlreadyRunningError(Exception):
    """Another `fleet run` of the same job holds its lock."""

    def __init__(self, job_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"job {job_dir.name!r} is already running on this machine ({who}, lock {job_dir / LOCK_FILE}); "
            "wait for it to end or stop it, then run again"
        )
        self.pid = pid


@dataclass(frozen=True)
class Attempt:
    """One run's folder: everything the run writes before it completes."""

    path: Path

    @property
    def storage(self) -> Path:
        """Where the run's ServerApp writes checkpoints, metrics and the model."""
        return self.path / "storage"

    @property
    def logs(self) -> Path:
        return self.path / "logs"


@contextlib.contextmanager
def exclusive_run(job_dir: Path) -> Iterator[Attempt]:
    """Hold ``job_dir``'s run lock for the block and give the run a new attempt folder.

    Raises `AlreadyRunningError` (having written nothing) when another process holds the lock.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(descriptor, job_dir)
        pid = os.getpid()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{pid}\n".encode(), 0)
        _prune_attempts(job_dir / ATTEMPTS)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        attempt = Attempt(job_dir / ATTEMPTS / f"{stamp}-{pid}")
        attempt.path.mkdir(parents=True)
        yield attempt
    finally:
        # Closing the descriptor releases the lock; the pid stays in the file for `lock_holder`'s messages.
        os.close(descriptor)


def lock_holder(job_dir: Path) -> tuple[bool, int | None]:
    """Whether a `fleet run` of the job holds its lock now, and the pid of the last run that took it."""
    try:
        descriptor = os.open(job_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        pid = _pid(descriptor)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, pid
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False, pid
    finally:
        os.close(descriptor)


def publish(staged: Path, storage: Path, attempt: Attempt) -> None:
    """Make ``staged`` (a completed run's storage) the job's ``storage``, replacing what was there whole."""
    storage.parent.mkdir(parents=True, exist_ok=True)
    replaced = attempt.path / "replaced-storage"
    if storage.exists():
        storage.rename(replaced)
    staged.rename(storage)
    shutil.rmtree(replaced, ignore_errors=True)


def _acquire(descriptor: int, job_dir: Path) -> None:
    deadline = time.monotonic() + _ACQUIRE_PATIENCE
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
        if time.monotonic() > deadline:
            raise AlreadyRunningError(job_dir, _pid(descriptor))
        time.sleep(0.05)


def _pid(descriptor: int) -> int | None:
    text = os.pread(descriptor, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


def _prune_attempts(folder: Path) -> None:
    if not folder.is_dir():
        return
    # Attempt names start with their UTC time, so name order is age order.
    finished = sorted(p for p in folder.iterdir() if p.is_dir())
    for old in finished[: max(0, len(finished) - (KEPT_ATTEMPTS - 1))]:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["AlreadyRunningError", "Attempt", "exclusive_run", "lock_holder", "publish"]
