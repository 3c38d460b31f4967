"""A warm ClientApp executor for SuperNodes started with ``--isolation process``.

Flower 1.41 runs every message in a fresh ``flwr-clientapp`` process: about 2 s to import Flower and 3.5 s to
import torch, on every round, for every collaborator. With ``--isolation process`` a SuperNode leaves
launching ClientApps to an outside executor (Flower's own is ``flower-superexec``). This one imports Flower,
torch and the ClientApp module once, polls the Runtime API of each SuperNode for ClientApp tasks, and forks a
child per task that runs Flower's own ``run_clientapp`` with the task's token. The child starts with
everything imported, and the parent's pages are shared copy-on-write, so memory grows little per collaborator.

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
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

_POLL_SECONDS = 0.05
_RETRY_SECONDS = 0.5
_CLIENTAPP_TASK = "flwr-clientapp"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.app_dir:
        # Import the app from the same sources the FAB was built from.
        sys.path.insert(0, str(Path(args.app_dir).resolve()))
    for module in args.preload:
        importlib.import_module(module)

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp  # noqa: F401  (imported before forking)

    certificates = Path(args.root_certificates).read_bytes() if args.root_certificates else None
    # No retry invoker: an unreachable SuperNode (not started yet, or gone) must not hold up the others.
    clients = {
        address: RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=certificates is None,
            root_certificates=certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        )
        for address in args.runtime_api_address
    }
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[int, str] = {}
    retry_at = dict.fromkeys(clients, 0.0)
    failing: set[str] = set()
    request = AcquireTaskRequest(supported_task_types=[_CLIENTAPP_TASK])
    print(f"executor: ready, serving {', '.join(clients)}", file=sys.stderr, flush=True)
    while not stopping:
        if args.parent_pid and not _alive(args.parent_pid):
            break
        for address, client in clients.items():
            if time.monotonic() < retry_at[address]:
                continue
            try:
                response = client.AcquireTask(request)
            except Exception as error:
                retry_at[address] = time.monotonic() + _RETRY_SECONDS
                if address not in failing:
                    failing.add(address)
                    print(
                        f"executor: {address} unreachable ({type(error).__name__})",
                        file=sys.stderr,
                        flush=True,
                    )
                continue
            if address in failing:
                failing.discard(address)
                print(f"executor: {address} reachable", file=sys.stderr, flush=True)
            if response.HasField("task") and response.token:
                pid = _fork_clientapp(address, response.token, certificates)
                children[pid] = address
        _reap(children)
        time.sleep(_POLL_SECONDS)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for client in clients.values():
        client.close()


def _fork_clientapp(address: str, token: str, certificates: bytes | None) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(
            runtime_api_address=address,
            token=token,
            insecure=certificates is None,
            certificates=certificates,
            parent_pid=parent,
            runtime_dependency_install=False,
        )
        code = 0
    except SystemExit as exit_:  # Flower ends the task process with flwr_exit -> sys.exit
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as error:
        print(f"executor: ClientApp task on {address} failed: {error!r}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(children: dict[int, Any]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        del children[pid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runtime-api-address", action="append", required=True, help="a SuperNode's Runtime API"
    )
    parser.add_argument("--root-certificates", help="the CA certificate (PEM); without it, plain HTTP")
    parser.add_argument("--app-dir", help="the directory the FAB was built from, put first on sys.path")
    parser.add_argument("--preload", action="append", default=[], help="a module to import before forking")
    parser.add_argument("--parent-pid", type=int, help="exit when this process ends")
    return parser


if __name__ == "__main__":
    main()
