"""Start OpenFL's own ``fx`` command in a workspace, with the one wait `fleet` changes:
``python -m fleet.app_openfl.launcher --workspace DIR aggregator start`` (any ``fx`` arguments after the folder),
in OpenFL's environment.

OpenFL 1.9's aggregator tells a collaborator that asks for work before the round has any for it to sleep a fixed
10 s (``Aggregator._get_sleep_time``), so every collaborator that finishes a round before the last one waits up to
10 s into the next: rounds of 10-11 s for about 1 s of training. The launcher makes it ``$FLEET_OPENFL_SLEEP``
whole seconds (the wire field is an integer; default 1, OpenFL's 10 at most). That is the only change, made in
this process only; the protocol, the TLS and everything else are OpenFL's. It refuses any OpenFL but the version
it was written for; `tests/fleet/federation/test_openfl_launcher.py` checks that wait in OpenFL's source.
"""

from __future__ import annotations

import argparse
import os
import sys

OPENFL_VERSION = "1.9"
SLEEP_ENV = "FLEET_OPENFL_SLEEP"
DEFAULT_SLEEP = 1
UPSTREAM_SLEEP = 10
"""What OpenFL 1.9's ``Aggregator._get_sleep_time`` returns."""


def sleep_seconds() -> int:
    text = os.environ.get(SLEEP_ENV, "")
    if not text:
        return DEFAULT_SLEEP
    if not text.isdigit() or not 1 <= int(text) <= UPSTREAM_SLEEP:
        raise SystemExit(f"${SLEEP_ENV}: expected whole seconds from 1 to {UPSTREAM_SLEEP}, got {text!r}")
    return int(text)


def patch() -> None:
    """Refuse another OpenFL; then make the aggregator's idle answer `sleep_seconds`."""
    import openfl
    from openfl.component.aggregator.aggregator import Aggregator

    if openfl.__version__ != OPENFL_VERSION:
        raise SystemExit(
            f"fleet's OpenFL launcher was written for OpenFL {OPENFL_VERSION}, found {openfl.__version__} "
            f"({openfl.__file__}): install requirements/openfl.txt (`make openfl-env`)"
        )
    seconds = sleep_seconds()
    Aggregator._get_sleep_time = staticmethod(lambda: seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.app_openfl.launcher")
    parser.add_argument("--workspace", required=True, help="the OpenFL workspace the fx command runs in")
    parser.add_argument("fx", nargs=argparse.REMAINDER, help="the fx command and its arguments")
    arguments = parser.parse_args(argv)
    patch()
    os.chdir(arguments.workspace)  # fx resolves plan/, cert/, save/ and the workspace code from here
    from openfl.interface.cli import entry

    sys.argv = ["fx", *arguments.fx]
    entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
