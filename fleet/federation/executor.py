"""A warm executor for the ServerApp and ClientApp tasks of SuperLink and SuperNodes run with ``--isolation process``.

Flower 1.41 runs every ClientApp message, and every run's ServerApp, in a fresh process (``flwr-clientapp``,
``flwr-serverapp``): about 2 s to import Flower and 3.5 s to import torch, on every round, for every
collaborator. With ``--isolation process`` the SuperLink and the SuperNodes leave launching those processes to
an outside executor (Flower's own is ``flower-superexec``, which starts a new process per task). This one imports
Flower, torch and the app's modules once, polls the Runtime API of each component for tasks, and per task forks a
child that runs Flower's own ``flwr-clientapp`` or ``flwr-serverapp`` entry point with the very arguments
``flower-superexec`` would give it. The child starts with everything imported; pages are shared copy-on-write,
so memory grows little per collaborator.

Run as ``python -m fleet.federation.executor``; `fleet.federation.local` starts it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

_POLL_FIRST = 0.02
"""Seconds before asking a Runtime API for a task again once its last task ended: a collaborator's next message
(the next round's, or its evaluation) comes as soon as the ServerApp has the replies it waits for."""
_POLL_GROWTH = 1.5
_POLL_LAST = 0.25
"""The longest wait between asks, also while the component's task runs: a task that comes meanwhile starts at
most this late. Each ask is an HTTPS request its SuperNode must serve on the cores the training uses: a fixed
0.1 s poll made 10 a second per collaborator, 160 with 16."""
_TICK = 0.01
"""Between looks at the schedule and at ended children (no request leaves the process)."""
_RETRY_SECONDS = 0.5
_ENTRY_POINTS = {
    "flwr-clientapp": ("flwr.supernode.cli.flwr_clientapp", "flwr_clientapp"),
    "flwr-serverapp": ("flwr.superlink.cli.flwr_serverapp", "flwr_serverapp"),
}


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from fleet.federation.flower_launcher import (
        check_flower_version,
        present_client_certificate_from_environment,
        shorten_object_pulls,
    )

    # The ServerApp's and this executor's connections to the SuperLink present the operator's certificate, and
    # their object pulls retry after 0.05 s; forked children inherit both.
    check_flower_version()
    present_client_certificate_from_environment()
    shorten_object_pulls()
    if args.app_dir:
        # Import the app from the same sources the FAB was built from.
        sys.path.insert(0, str(Path(args.app_dir).resolve()))
    for module in args.preload:
        importlib.import_module(module)
    if "torch" in sys.modules:
        # torch's optimizers import torch._dynamo (and sympy) on their first step: 2-8 s that every forked
        # child would pay again. Importing is safe before fork; running torch code (thread pools) is not.
        importlib.import_module("torch._dynamo")
    entry_points = {task: getattr(importlib.import_module(m), f) for task, (m, f) in _ENTRY_POINTS.items()}

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    served = [(task, address) for task, _, address in (item.partition("=") for item in args.serve)]
    certificates = Path(args.root_certificates).read_bytes() if args.root_certificates else None
    # No retry invoker: an unreachable component (not started yet, or gone) must not hold up the others.
    clients = {
        (task, address): RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=certificates is None,
            root_certificates=certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        )
        for task, address in served
    }
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[int, tuple[str, float, tuple[str, str]]] = {}
    polls = _Polls(list(clients))
    failing: set[tuple[str, str]] = set()
    done: set[tuple[str, str]] = set()
    pending: list[tuple[float, tuple[str, str], list[str]]] = []
    """Tasks to fork: (when, (task type, Runtime API address), command line)."""
    _say(f"ready, serving {', '.join(f'{task} of {address}' for task, address in clients)}")
    while not stopping:
        if args.parent_pid and not _alive(args.parent_pid):
            break
        for key, client in clients.items():
            task, address = key
            if key in done or not polls.due(key, time.monotonic()):
                continue
            try:
                response = client.AcquireTask(AcquireTaskRequest(supported_task_types=[task]))
            except Exception as error:
                polls.failed(key, time.monotonic())
                if key not in failing:
                    failing.add(key)
                    _say(f"{address} unreachable ({type(error).__name__})")
                continue
            if key in failing:
                failing.discard(key)
                _say(f"{address} reachable")
            found = response.HasField("task") and bool(response.token)
            polls.asked(key, time.monotonic(), found)
            if found:
                command = [task, "--runtime-api-address", address, "--token", response.token]
                command += ["--root-certificates", args.root_certificates] if certificates else ["--insecure"]
                command += ["--parent-pid", str(os.getpid())]
                # Forked at once: a ClientApp that asks its SuperNode for the message's objects before they are in
                # retries after 0.05 s (`flower_launcher.shorten_object_pulls`), not after Flower's 1 s.
                pending.append((time.monotonic(), key, command))
                if task == "flwr-serverapp":
                    # One run at a time: no asking the SuperLink while its ServerApp runs; once it ended, a
                    # resumed run's ServerApp may come (`fleet.app.resume`).
                    done.add(key)
        for item in [p for p in pending if p[0] <= time.monotonic()]:
            pending.remove(item)
            _, key, command = item
            task, address = key
            pid = _fork(entry_points[task], command)
            children[pid] = (f"{task} of {address}", time.monotonic(), key)
            _say(f"started {task} of {address} (pid {pid})")
        for key in _reap(children):
            polls.task_ended(key, time.monotonic())
            done.discard(key)
        time.sleep(_TICK)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for client in clients.values():
        client.close()


def _fork(entry_point: Callable[[], None], command: list[str]) -> int:
    """Run ``entry_point`` as if started with ``command``, in a forked child; the child's pid."""
    executor = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with(executor)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.argv = command
        entry_point()
        code = 0
    except SystemExit as exit_:  # Flower ends task processes with flwr_exit -> sys.exit
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as error:
        _say(f"{command[0]} task failed: {error!r}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with(executor: int) -> None:
    """SIGTERM this forked task when the executor dies, even by SIGKILL (Linux; elsewhere the executor's own
    SIGTERM handler stops its tasks)."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != executor:  # the executor died before the request took effect
        os._exit(1)


class _Polls:
    """When to ask each Runtime API for a task next: soon after its last task ended, less often the longer it
    has had none (`_POLL_GROWTH`, up to `_POLL_LAST`), and every `_POLL_LAST` while its task runs."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._due = dict.fromkeys(keys, 0.0)
        self._wait = dict.fromkeys(keys, _POLL_FIRST)

    def due(self, key: tuple[str, str], now: float) -> bool:
        return now >= self._due[key]

    def asked(self, key: tuple[str, str], now: float, found: bool) -> None:
        """``key`` was asked at ``now``; ``found``: it gave a task, which now runs."""
        self._wait[key] = _POLL_LAST if found else min(self._wait[key] * _POLL_GROWTH, _POLL_LAST)
        self._due[key] = now + self._wait[key]

    def task_ended(self, key: tuple[str, str], now: float) -> None:
        self._wait[key] = _POLL_FIRST
        self._due[key] = now + _POLL_FIRST

    def failed(self, key: tuple[str, str], now: float) -> None:
        self._due[key] = now + _RETRY_SECONDS


def _reap(children: dict[int, tuple[str, float, tuple[str, str]]]) -> list[tuple[str, str]]:
    """Collect the children that ended; the Runtime APIs whose tasks they ran."""
    ended = []
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            what, started, key = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            _say(f"{what} (pid {pid}) ended with code {code} after {time.monotonic() - started:.2f} s")
            ended.append(key)
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} executor: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--serve",
        action="append",
        required=True,
        metavar="TASK=ADDRESS",
        help=f"a task type ({', '.join(_ENTRY_POINTS)}) and the Runtime API address to take it from",
    )
    parser.add_argument("--root-certificates", help="the CA certificate (PEM); without it, plain HTTP")
    parser.add_argument("--app-dir", help="the directory the FAB was built from, put first on sys.path")
    parser.add_argument("--preload", action="append", default=[], help="a module to import before forking")
    parser.add_argument("--parent-pid", type=int, help="exit when this process ends")
    return parser


if __name__ == "__main__":
    main()
