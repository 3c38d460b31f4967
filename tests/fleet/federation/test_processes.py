"""The process supervisor stops everything it started, and what those started, also in other sessions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fleet.federation.processes import ProcessSupervisor, free_port

# A parent that ignores SIGTERM and starts a grandchild in a new session (as Flower's SuperExec is started).
_TREE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_stop_all_kills_the_tree_including_other_sessions(tmp_path: Path) -> None:
    supervisor = ProcessSupervisor(tmp_path, {"PATH": ""})
    process = supervisor.start("tree", [sys.executable, "-c", _TREE])
    _wait_for(lambda: process.log.read_text().strip())
    grandchild = int(process.log.read_text().split()[0])
    supervisor.watch()
    assert grandchild in supervisor.pids()
    supervisor.stop_all(grace=0.5)
    assert not process.alive()
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


# A parent that starts a long child through the supervisor, then waits to be killed.
_PARENT = """
import sys, time
from pathlib import Path
from fleet.federation.processes import ProcessSupervisor
supervisor = ProcessSupervisor(Path(sys.argv[1]), {})
child = supervisor.start("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux only")
def test_children_die_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        _wait_for(lambda: "time.sleep(120)" in " ".join(child.cmdline()))  # exec'd into the command
        parent.kill()  # nothing of ours runs: only the kernel can stop the child now
        parent.wait(timeout=10)
        _wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    finally:
        parent.kill()


def test_tail_strips_colour_codes(tmp_path: Path) -> None:
    with ProcessSupervisor(tmp_path, {}) as supervisor:
        process = supervisor.start("echo", [sys.executable, "-c", "print('\\x1b[92mINFO\\x1b[0m: one'); print('two')"])
        process.popen.wait(timeout=10)
        assert process.tail(2) == "INFO: one\ntwo"
        assert supervisor.exited() == [process]


# A SuperNode that failed to activate, then printed a shutdown traceback (seen in CI, order varies by run).
_FAILED_SUPERNODE = """\
\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode
\x1b[91mERROR \x1b[0m:     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[code: 2004] Failed to activate SuperNode.

For more information, visit: <https://flower.ai/docs/framework/1.41/en/ref-exit-codes/305.html>
INFO:     Shutting down
Traceback (most recent call last):
  File "/usr/lib/python3.11/asyncio/queues.py", line 158, in get
    await getter
asyncio.exceptions.CancelledError
"""


def test_error_is_the_logged_error_block_not_the_noise_after_it(tmp_path: Path) -> None:
    with ProcessSupervisor(tmp_path, {}) as supervisor:
        script = f"import sys; sys.stdout.write({_FAILED_SUPERNODE!r}); sys.exit(1)"
        process = supervisor.start("supernode-x", [sys.executable, "-c", script])
        process.popen.wait(timeout=10)
    assert process.error() == (
        "Exit Code: 305 / Failed to initialize the connection to the SuperLink. / "
        "[code: 2004] Failed to activate SuperNode."
    )


def test_error_without_an_error_line_is_the_last_lines_that_are_not_info(tmp_path: Path) -> None:
    with ProcessSupervisor(tmp_path, {}) as supervisor:
        script = "print('INFO: up'); print('one'); print('two'); print('three'); print('INFO: down')"
        process = supervisor.start("x", [sys.executable, "-c", script])
        process.popen.wait(timeout=10)
    assert process.error() == "one / two / three"


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
