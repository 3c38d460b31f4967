"""Start, watch and stop the processes of a local federation, so that none outlives the run.

Each process starts in its own session (so a Ctrl-C in the terminal reaches only ``fleet run``, which then
stops everything in order) with its output in a log file. Flower starts further processes of its own
(SuperExec, ``flwr-serverapp``, some in new sessions): `ProcessSupervisor.watch` keeps a record of every
descendant seen, and `ProcessSupervisor.stop_all` terminates the process groups and every recorded descendant,
then kills what is left after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15, *, quiet: bool = False) -> str:
        """The last ``lines`` lines of the process's log, without colour codes; ``quiet`` drops INFO lines."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        kept = [_strip_ansi(line).rstrip() for line in text.splitlines()]
        kept = [line for line in kept if line.strip()]
        if quiet:
            kept = [line for line in kept if not line.lstrip().startswith(("INFO", "DEBUG"))]
        return "\n".join(kept[-lines:])

    def error(self) -> str:
        """The first error the process logged, on one line; else the last three lines that are not INFO.

        Flower logs an error as an ``ERROR`` line followed by plain lines up to a blank line. What comes after
        it (a shutdown traceback, uvicorn's INFO lines) is noise that varies from run to run.
        """
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [_strip_ansi(line).rstrip() for line in text.splitlines()]
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ERROR")), None)
        if start is None:
            return " / ".join(self.tail(3, quiet=True).splitlines())
        block: list[str] = []
        for line in lines[start:]:
            if not line.strip() or line.lstrip().startswith(("INFO", "DEBUG", "Traceback")):
                break
            block.append(_ERROR_PREFIX.sub("", line).strip())
        return " / ".join(block)


@dataclass
class ProcessSupervisor:
    log_dir: Path
    env: Mapping[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)
    _descendants: dict[int, float] = field(default_factory=dict)
    """pid -> create time of every process seen under ours (create time guards against pid reuse)."""

    def start(self, name: str, argv: Sequence[str], extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """Start ``argv`` logging to ``<log_dir>/<name>.log``, with the supervisor's environment and ``extra_env``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                _dying_with_this_process(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, **(extra_env or {})},
                start_new_session=True,
            )
        process = ManagedProcess(name, popen, log)
        self.processes.append(process)
        return process

    def exited(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def watch(self) -> None:
        """Record the current descendants of every started process."""
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self._descendants.setdefault(child.pid, child.create_time())

    def pids(self) -> list[int]:
        """Every live process started or recorded, ours first."""
        self.watch()
        return [p.pid for p in self.processes if p.alive()] + [child.pid for child in self._recorded()]

    def stop(self, process: ManagedProcess, grace: float = 3.0) -> None:
        """Stop one process and its group."""
        self._signal_group(process, signal.SIGTERM)
        try:
            process.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal_group(process, signal.SIGKILL)
            process.popen.wait(timeout=grace)

    def stop_all(self, grace: float = 5.0) -> None:
        """Terminate everything started (newest first), then kill what is left after ``grace`` seconds."""
        self.watch()
        recorded = self._recorded()
        for process in reversed(self.processes):
            self._signal_group(process, signal.SIGTERM)
        for child in recorded:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        deadline = time.monotonic() + grace
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        _, remaining = psutil.wait_procs(recorded, timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            self._signal_group(process, signal.SIGKILL)
        leftovers = [*remaining, *self._recorded()]
        for child in leftovers:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(leftovers, timeout=grace)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=grace)

    def _recorded(self) -> list[psutil.Process]:
        live = []
        for pid, created in self._descendants.items():
            with contextlib.suppress(psutil.Error):
                child = psutil.Process(pid)
                if child.create_time() == created:
                    live.append(child)
        return live

    @staticmethod
    def _signal_group(process: ManagedProcess, signum: signal.Signals) -> None:
        # The group id is the leader's pid (start_new_session); it outlives the leader while members remain.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def __enter__(self) -> ProcessSupervisor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop_all()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Exec'd in front of every command on Linux: ask the kernel to send SIGTERM when the parent dies (also by
# SIGKILL, when nothing of ours can clean up), unless the parent died already, then become the command.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _dying_with_this_process(argv: Sequence[str]) -> list[str]:
    """``argv``, started so that it gets SIGTERM when this process dies (Linux). The kernel ties the signal to
    the thread that starts the child, so only a start from the main thread (which lives as long as the
    process) asks for it; elsewhere `ProcessSupervisor.stop_all` alone stops the processes."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


_ERROR_PREFIX = re.compile(r"^\s*ERROR\s*:\s*")


def _strip_ansi(line: str) -> str:
    out, skip = [], False
    for char in line:
        if char == "\x1b":
            skip = True
        elif skip:
            skip = not char.isalpha()
        else:
            out.append(char)
    return "".join(out)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
