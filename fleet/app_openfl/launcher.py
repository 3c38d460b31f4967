"""Start OpenFL's own ``fx`` command in a workspace, with the one wait `fleet` changes:
``python -m fleet.app_openfl.launcher --workspace DIR aggregator start`` (any ``fx`` arguments after the folder),
in OpenFL's environment.

OpenFL 1.9's aggregator tells a collaborator that asks for work before the round has any for it to sleep a fixed
10 s (``Aggregator._get_sleep_time``), so every collaborator that finishes a round before the last one waits up to
10 s into the next: rounds of 10-11 s for about 1 s of training. The launcher makes it ``$FLEET_OPENFL_SLEEP``
whole seconds (the wire field is an integer; default 1, OpenFL's 10 at most).

OpenFL admits a collaborator whose certificate chains to the trusted CA and whose common name is in
``plan/cols.yaml``. On an OCM hub that is not enough: the add-on registration signer signs any cluster's request
for any name (`fleet.controller.identity`), so one cluster could present a certificate in another's name. With
``$FLEET_OPENFL_ALLOWED_KEYS`` (a JSON file: collaborator name -> the SHA-256 digests of the OpenSSH public keys
it may present, `fleet.controller.identity.key_digest`), the aggregator also refuses, with UNAUTHENTICATED, a
certificate whose key is not one the hub vouches for; the file is read again at every request, so a renewed
key is let in once it is listed. These are the only changes, made in this process only; the protocol, the TLS
and everything else are OpenFL's. It refuses any OpenFL but the version it was written for;
`tests/fleet/federation/test_openfl_launcher.py` checks both against OpenFL's source.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

OPENFL_VERSION = "1.9"
SLEEP_ENV = "FLEET_OPENFL_SLEEP"
ALLOWED_KEYS_ENV = "FLEET_OPENFL_ALLOWED_KEYS"
WORKSPACE_FOLDERS = ("save", "logs", "local_state")
"""What OpenFL writes into a workspace; made when missing (a pod's workspace starts as an empty volume)."""
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
    allowed = os.environ.get(ALLOWED_KEYS_ENV, "")
    if allowed:
        _require_allowed_keys(Path(allowed))


def key_digest(certificate_pem: bytes) -> str:
    """The SHA-256 of the OpenSSH line of a certificate's public key (as `fleet.controller.identity.key_digest`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return hashlib.sha256(line.strip()).hexdigest()


def allowed_digests(path: Path, name: str) -> set[str]:
    """The key digests ``name`` may present; none when the file is missing or unreadable (refused, not open)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    found = document.get(name, []) if isinstance(document, dict) else []
    return {d for d in found if isinstance(d, str)} if isinstance(found, list) else set()


def _require_allowed_keys(path: Path) -> None:
    import grpc
    from openfl.transport.grpc.aggregator_server import AggregatorGRPCServer

    openfl_check = AggregatorGRPCServer.validate_collaborator

    def validate_collaborator(self: Any, request: Any, context: Any) -> None:
        openfl_check(self, request, context)  # the CA (at the handshake) and the common name, as OpenFL does
        if not (self.use_tls and self.require_client_auth):
            return
        name = request.header.sender
        presented = (context.auth_context().get("x509_pem_cert") or [b""])[0]
        digest = key_digest(presented) if presented else ""
        if digest not in allowed_digests(path, name):
            reason = f"collaborator {name}: its certificate's key {digest or '(none)'} is not one the hub registered"
            logging.getLogger("fleet.openfl").warning("refused %s", reason)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    AggregatorGRPCServer.validate_collaborator = validate_collaborator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.app_openfl.launcher")
    parser.add_argument("--workspace", required=True, help="the OpenFL workspace the fx command runs in")
    parser.add_argument("fx", nargs=argparse.REMAINDER, help="the fx command and its arguments")
    arguments = parser.parse_args(argv)
    patch()
    os.chdir(arguments.workspace)  # fx resolves plan/, cert/, save/ and the workspace code from here
    for folder in WORKSPACE_FOLDERS:
        Path(folder).mkdir(parents=True, exist_ok=True)
    from openfl.interface.cli import entry

    sys.argv = ["fx", *arguments.fx]
    entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
