"""A job's work folder: one run at a time (an flock another process sees), attempt folders, whole publishing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.federation.workspace import (
    ATTEMPTS,
    KEPT_ATTEMPTS,
    LOCK_FILE,
    AlreadyRunningError,
    exclusive_run,
    lock_holder,
    publish,
)

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fleet.federation.workspace import exclusive_run
    with exclusive_run(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(job_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the job's lock, as a running `fleet run` does."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(job_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_process_holding_the_lock_refuses_the_run_with_its_pid_and_writes_nothing(tmp_path: Path) -> None:
    job_dir = tmp_path / "tiny"
    holder = _holder(job_dir)
    try:
        before = _tree(job_dir), sorted(p.name for p in job_dir.rglob("*"))
        refused = rf"already running on this machine \(pid {holder.pid}, lock"
        with pytest.raises(AlreadyRunningError, match=refused), exclusive_run(job_dir):
            pytest.fail("the run went ahead")
        assert (_tree(job_dir), sorted(p.name for p in job_dir.rglob("*"))) == before
        assert lock_holder(job_dir) == (True, holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_frees_the_lock_and_leaves_its_pid(tmp_path: Path) -> None:
    job_dir = tmp_path / "tiny"
    holder = _holder(job_dir)
    holder.kill()  # SIGKILL: no code of the holder runs, the kernel releases the lock
    holder.wait()
    assert lock_holder(job_dir) == (False, holder.pid)
    with exclusive_run(job_dir) as attempt:
        assert lock_holder(job_dir) == (True, os.getpid())
        assert attempt.path.parent == job_dir / ATTEMPTS and attempt.path.is_dir()
    assert lock_holder(job_dir) == (False, os.getpid())


def test_no_lock_file_means_nothing_runs(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "never-ran") == (False, None)


def test_each_run_gets_a_new_attempt_folder_and_old_ones_are_pruned(tmp_path: Path) -> None:
    job_dir = tmp_path / "tiny"
    seen = []
    for _ in range(KEPT_ATTEMPTS + 3):
        with exclusive_run(job_dir) as attempt:
            (attempt.path / "marker").write_text(attempt.path.name)
            seen.append(attempt.path.name)
    assert len(set(seen)) == len(seen)
    kept = sorted(p.name for p in (job_dir / ATTEMPTS).iterdir())
    assert kept == seen[-KEPT_ATTEMPTS:]
    assert (job_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_publish_replaces_the_storage_whole(tmp_path: Path) -> None:
    job_dir = tmp_path / "tiny"
    storage = job_dir / "storage" / "models" / "tiny"
    storage.mkdir(parents=True)
    for name in ("model.pt", "checkpoints/round-1.pt", "checkpoints/round-5.pt"):
        (storage / name).parent.mkdir(parents=True, exist_ok=True)
        (storage / name).write_text(f"old {name}")
    with exclusive_run(job_dir) as attempt:
        (attempt.storage / "checkpoints").mkdir(parents=True)
        (attempt.storage / "checkpoints" / "round-1.pt").write_text("new round 1")
        (attempt.storage / "model.pt").write_text("new model")
        publish(attempt.storage, storage, attempt)
        assert not attempt.storage.exists()
    # Nothing of the old run is left beside the new one: no round-5 checkpoint from before.
    assert _tree(storage) == {"checkpoints/round-1.pt": b"new round 1", "model.pt": b"new model"}
    assert not any(p.name == "replaced-storage" for p in job_dir.rglob("*"))


def test_publish_into_a_first_storage_path(tmp_path: Path) -> None:
    job_dir = tmp_path / "tiny"
    with exclusive_run(job_dir) as attempt:
        attempt.storage.mkdir()
        (attempt.storage / "model.pt").write_text("model")
        publish(attempt.storage, job_dir / "storage" / "s3" / "bucket" / "prefix", attempt)
    assert (job_dir / "storage" / "s3" / "bucket" / "prefix" / "model.pt").read_text() == "model"
