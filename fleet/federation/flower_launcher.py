"""Flower's own entry points, started with the one thing Flower 1.41 cannot be configured to do: mutual TLS.

Flower 1.41 serves its Fleet, Control and Runtime APIs on one HTTPS port (uvicorn, given a server certificate
and key only), and its clients (SuperNode, ServerApp, ClientApp, the ``flwr`` CLI) present no certificate:
identity rests on the SuperNode's signing key alone. This module is the only place where fleet changes how
Flower behaves. It never edits Flower; it starts Flower's own entry points after changing, in that process:

- **SuperLink** (``superlink``): its TLS server requires a client certificate chaining to ``$FLEET_TLS_CLIENT_CA``
  and speaks TLS 1.3 only; a connection whose certificate's common name is not in ``$FLEET_TLS_CLIENTS`` (a JSON
  allow-list, re-read when it changes) is closed before any request is read; a collaborator's connection may
  use the Fleet API only (``/v1/fleet/``, ``/health``), and only with the SuperNode key its certificate
  certifies (Flower's ``flwr-public-key`` header must be the certificate's key); the operator's may use all.
- **Clients** (``supernode``, and `present_client_certificate` in any process running Flower clients): every
  HTTPS connection of Flower's protobuf client presents ``$FLEET_TLS_CLIENT_CERT``/``$FLEET_TLS_CLIENT_KEY``,
  TLS 1.3 only.

- **Waits on a round's critical path** (`follow_events`): the SuperNode's fixed 3 s sleep when it pulled
  nothing becomes adaptive (0.05 s right after activity, 1.5 times longer after each empty pull, back to
  Flower's 3 s when idle, so an idle SuperNode asks the SuperLink no more often than before); its 0.5 s polls
  of its own local state (a reply ready, an object stored) become 0.02 s; the object pull back-off starts at
  0.05 s instead of 1 s and doubles up to 0.2 s instead of 10 s (SuperNode, ClientApp, ServerApp), with 50 times
  Flower's tries per object, so a pull is as patient as Flower's (its tries are counted, not its time).
- **The SuperNode's heartbeats outlive an error** (`keep_heartbeats_alive`): Flower's heartbeat thread retries a
  heartbeat that fails with a transport error or a 502-504, but any other answer (a 500 from a busy SuperLink, a
  SuperLink that does not know the node) raises out of the thread, which ends silently while the SuperNode goes on
  pulling: the SuperLink marks the node offline for good. Such a heartbeat is retried with Flower's own back-off
  instead, logged; a 401 still stops the SuperNode, as Flower does.

Nothing else changes: Flower's protocol, wire format and SuperNode authentication stay as they are (the key
registration is a second factor beside the certificate). Refuses any Flower but the version it was written
for (`FLOWER_VERSION`); Flower 1.42 keeps the same single-port uvicorn server and the same ``ProtobufClient``
(checked against its wheel), so it would need this module's hooks re-checked, not rewritten.

    python -m fleet.federation.flower_launcher superlink [flower-superlink arguments]
    python -m fleet.federation.flower_launcher supernode [flower-supernode arguments]
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

FLOWER_VERSION = "1.41.0"
CLIENT_CA = "FLEET_TLS_CLIENT_CA"
"""SuperLink: the CA bundle (PEM) a client certificate must chain to."""
ALLOWED_CLIENTS = "FLEET_TLS_CLIENTS"
"""SuperLink: the allow-list, JSON ``{"operators": [common name, ...], "collaborators": {common name: cluster}}``."""
CLIENT_CERT = "FLEET_TLS_CLIENT_CERT"
CLIENT_KEY = "FLEET_TLS_CLIENT_KEY"
"""Clients: the certificate (PEM) and key every HTTPS connection presents."""
FLEET_API = "/v1/fleet/"
_PUBLIC_KEY_HEADER = b"flwr-public-key"  # flwr.supercore.constant.FLEET_HTTP_PUBLIC_KEY_HEADER in 1.41
_log = logging.getLogger("fleet.mtls")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class LauncherError(Exception):
    """The launcher cannot start Flower as asked: the message says why."""


def check_flower_version() -> None:
    found = version("flwr")
    if found != FLOWER_VERSION:
        raise LauncherError(
            f"fleet's Flower launcher was written for flwr {FLOWER_VERSION}, found {found}: its hooks into "
            "the SuperLink's TLS server and Flower's HTTP client must be re-checked before use"
        )


# --- who may connect ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """The identity of one TLS connection: its certificate's common name and what that name may do."""

    common_name: str
    cluster: str | None
    """The collaborator's cluster; None for the operator."""
    public_key: bytes
    """The certificate's public key, PEM SubjectPublicKeyInfo (the form of Flower's ``flwr-public-key``)."""

    def refusal(self, scope: Scope) -> str | None:
        """Why this peer may not make the request in ``scope``; None when it may."""
        if self.cluster is None:
            return None
        path: str = scope.get("path", "")
        if path == "/health":
            return None
        if not path.startswith(FLEET_API):
            return f"collaborator {self.cluster} may use the Fleet API only, not {path}"
        claimed = dict(scope.get("headers") or []).get(_PUBLIC_KEY_HEADER)
        try:
            key = base64.b64decode(claimed or b"", validate=True)
        except ValueError:
            key = b""
        if key != self.public_key:
            return f"collaborator {self.cluster} must sign with the key its certificate certifies"
        return None


@dataclass
class ClientPolicy:
    """The allow-list, re-read whenever its file changes (the controller rewrites it as clusters come and go)."""

    path: Path
    _seen: tuple[float, int] | None = None
    _operators: frozenset[str] = frozenset()
    _collaborators: dict[str, str] = field(default_factory=dict)

    def peer(self, ssl_object: ssl.SSLObject) -> Peer | None:
        """The allowed peer of a connection whose client certificate the TLS layer verified, or None."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self._reload()
        # ssl's own parse: a tuple of relative distinguished names, each a tuple of (attribute, value) pairs.
        subject: tuple[tuple[tuple[str, str], ...], ...] = (ssl_object.getpeercert() or {}).get("subject", ())  # type: ignore[assignment]
        names = [value for attribute in subject for key, value in attribute if key == "commonName"]
        der = ssl_object.getpeercert(binary_form=True)
        if len(names) != 1 or not der:
            return None
        name = names[0]
        public_key = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        if name in self._operators:
            return Peer(name, None, public_key)
        if name in self._collaborators:
            return Peer(name, self._collaborators[name], public_key)
        return None

    def _reload(self) -> None:
        try:
            status = self.path.stat()
        except OSError:
            self._operators, self._collaborators = frozenset(), {}  # no list: nobody is allowed
            return
        seen = (status.st_mtime, status.st_size)
        if seen == self._seen:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            operators = frozenset(str(name) for name in data.get("operators", []))
            collaborators = {str(name): str(cluster) for name, cluster in dict(data.get("collaborators", {})).items()}
        except (OSError, ValueError, TypeError, AttributeError) as error:
            _log.error(
                "%s: expected the JSON allow-list of client certificates, keeping the last one: %s", self.path, error
            )
            return
        self._operators, self._collaborators, self._seen = operators, collaborators, seen


def write_allowed_clients(path: Path, operators: list[str], collaborators: dict[str, str]) -> None:
    """Write the SuperLink's allow-list atomically (a reader never sees half of it)."""
    from fleet.app.files import write_text_atomically

    text = json.dumps({"operators": sorted(operators), "collaborators": dict(sorted(collaborators.items()))})
    write_text_atomically(path, text + "\n")


# --- the SuperLink's server ---------------------------------------------------------------------------------


def _guarded(app: App, peer: Peer) -> App:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        refusal = peer.refusal(scope) if scope.get("type") == "http" else None
        if refusal is None:
            await app(scope, receive, send)
            return
        _log.warning("refused %s: %s", peer.common_name, refusal)
        body = refusal.encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return guarded


def _protocol_class(policy: ClientPolicy) -> type:
    """uvicorn's HTTP protocol, identifying the peer of each connection once its TLS handshake is done."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class MutualTlsProtocol(HttpToolsProtocol):
        refused = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            peer = policy.peer(ssl_object) if ssl_object is not None else None
            if peer is None:
                # Verified by the CA, but not a client of this SuperLink (another job's cluster, a retired key).
                _log.warning("closed a connection from %s: its certificate is not allowed here", self.client)
                self.refused = True
                transport.close()
                return
            self.app = _guarded(self.app, peer)

        def data_received(self, data: bytes) -> None:
            if not self.refused:
                super().data_received(data)

    return MutualTlsProtocol


def serve_with_client_certificates(client_ca: Path, allowed: Path) -> None:
    """Make the SuperLink's uvicorn server require client certificates of ``client_ca``, allowed in ``allowed``."""
    import importlib
    import types

    import uvicorn
    import uvicorn.config

    # The module, not the package attribute of the same name (the entry point function).
    flower_superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")

    real_context = uvicorn.config.create_ssl_context

    def tls13_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = real_context(*args, **kwargs)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context

    def run(app: Any, **options: Any) -> None:
        if not options.get("ssl_certfile"):
            raise LauncherError("the SuperLink was started without TLS (--insecure): mutual TLS needs its certificate")
        options.update(ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs=str(client_ca), http=_protocol_class(policy))
        uvicorn.run(app, **options)

    policy = ClientPolicy(allowed)
    uvicorn.config.create_ssl_context = tls13_context
    # Only the SuperLink module's own reference to uvicorn: `flower_superlink` calls `uvicorn.run` once.
    flower_superlink.uvicorn = types.SimpleNamespace(run=run)  # type: ignore[attr-defined]


# --- Flower's clients ---------------------------------------------------------------------------------------


def client_ssl_context(verify: ssl.SSLContext | str | bool, certificate: Path, key: Path) -> ssl.SSLContext:
    """The context of an HTTPS connection that checks the server as ``verify`` says (a context, a CA file, or
    the system's CAs) and presents ``certificate``; TLS 1.3 only."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(certificate), str(key))
    return context


def present_client_certificate(certificate: Path, key: Path) -> None:
    """Make every HTTPS connection of Flower's protobuf clients in this process present ``certificate``."""
    from flwr.supercore.protobuf.client import ProtobufClient

    real_init = ProtobufClient.__init__

    def init(self: Any, base_url: str, **options: Any) -> None:
        if base_url.startswith("https://"):
            options["verify"] = client_ssl_context(options.get("verify", True), certificate, key)
        real_init(self, base_url, **options)

    ProtobufClient.__init__ = init  # type: ignore[method-assign]


def present_client_certificate_from_environment() -> None:
    """`present_client_certificate` with ``$FLEET_TLS_CLIENT_CERT`` and ``$FLEET_TLS_CLIENT_KEY``, when set."""
    certificate, key = os.environ.get(CLIENT_CERT), os.environ.get(CLIENT_KEY)
    if bool(certificate) != bool(key):
        raise LauncherError(f"expected both {CLIENT_CERT} and {CLIENT_KEY}, or neither")
    if certificate and key:
        present_client_certificate(Path(certificate), Path(key))


# --- waits -------------------------------------------------------------------------------------------------

IDLE_POLL_FIRST = 0.05
"""Seconds the SuperNode waits after its first empty pull following activity; then `IDLE_POLL_GROWTH` times
longer after each empty pull: the next round's message usually comes within a second of a reply."""
IDLE_POLL_GROWTH = 1.5
IDLE_POLL_LAST = 3.0
"""Flower 1.41's fixed wait (``start_client_internal.py``): where an idle SuperNode ends up."""
LOCAL_POLL = 0.02
"""For Flower's 0.5 s polls of the SuperNode's own in-process state: no request leaves the process."""
PULL_FIRST_BACKOFF = 0.05
"""For Flower's 1 s first back-off when an object is not in the store yet (PULL_INITIAL_BACKOFF)."""
PULL_BACKOFF_LIMIT = 0.2
"""For Flower's 10 s cap of that back-off, which doubles per try (PULL_BACKOFF_CAP): a ClientApp asks its
SuperNode for the objects of a message the SuperNode is still pulling from the SuperLink, and from 0.05 s
doubling, its sixth try would come 1.55 s after the first and 0.8 s after the fifth."""
_FLOWER_IDLE_WAIT = 3
_FLOWER_LOCAL_WAIT = 0.5


class AdaptiveWaits:
    """Stands in for the ``time`` module of Flower's SuperNode loop (``start_client_internal``), where the only
    waits are ``time.sleep(3)`` after an empty pull and ``time.sleep(0.5)`` between looks at local state."""

    def __init__(self, sleep: Callable[[float], None] | None = None) -> None:
        import time

        self._time = time
        self._sleep = sleep or time.sleep
        self._idle = IDLE_POLL_FIRST

    def sleep(self, seconds: float) -> None:
        if seconds == _FLOWER_IDLE_WAIT:
            wait, self._idle = self._idle, min(self._idle * IDLE_POLL_GROWTH, IDLE_POLL_LAST)
        elif seconds == _FLOWER_LOCAL_WAIT:
            wait = LOCAL_POLL
        else:
            wait = seconds
        self._sleep(wait)

    def activity(self) -> None:
        """A message came: the next empty pull waits briefly again (the next round is near)."""
        self._idle = IDLE_POLL_FIRST

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)


def _with_short_pull_backoff(pull_objects: Callable[..., Any]) -> Callable[..., Any]:
    from flwr.supercore.constant import PULL_BACKOFF_CAP, PULL_INITIAL_BACKOFF, PULL_MAX_TRIES_PER_OBJECT

    def pull(*args: Any, **options: Any) -> Any:
        if options.get("initial_backoff", PULL_INITIAL_BACKOFF) == PULL_INITIAL_BACKOFF:
            options["initial_backoff"] = PULL_FIRST_BACKOFF
        if options.get("backoff_cap", PULL_BACKOFF_CAP) == PULL_BACKOFF_CAP:
            options["backoff_cap"] = PULL_BACKOFF_LIMIT
            # As patient as Flower: its tries are counted, so a shorter wait between them needs more of them, or
            # an object still being uploaded (32 collaborators' replies at once) is given up on after ~100 s.
            if options.get("max_tries_per_object", PULL_MAX_TRIES_PER_OBJECT) == PULL_MAX_TRIES_PER_OBJECT:
                options["max_tries_per_object"] = pull_tries(PULL_MAX_TRIES_PER_OBJECT, PULL_BACKOFF_CAP)
        return pull_objects(*args, **options)

    return pull


def pull_tries(flower_tries: int, flower_cap: float) -> int:
    """The tries per object that wait, at `PULL_BACKOFF_LIMIT` between them, as long as Flower's at its cap."""
    return math.ceil(flower_tries * flower_cap / PULL_BACKOFF_LIMIT)


def shorten_object_pulls() -> None:
    """Flower's object pulls (every module calling ``pull_objects``) retry a missing object after 0.05 s, not
    1 s, and then at least every 0.2 s, not every 10 s."""
    import importlib

    for name in (
        "flwr.supercore.inflatable.inflatable_utils",
        "flwr.supernode.start_client_internal",
        "flwr.superlink.grid.http_grid",
    ):
        module = importlib.import_module(name)
        module.pull_objects = _with_short_pull_backoff(module.pull_objects)  # type: ignore[attr-defined]


def keep_heartbeats_alive() -> None:
    """Flower's SuperNode heartbeat sender, with each failed heartbeat retried whatever it raised."""
    import importlib

    connection = importlib.import_module("flwr.supernode.fleet_http_connection")
    sender = connection.HeartbeatSender

    class Sender(sender):  # type: ignore[misc, valid-type]
        def __init__(self, heartbeat_fn: Callable[[], bool]) -> None:
            def heartbeat() -> bool:
                try:
                    return heartbeat_fn()
                except Exception as error:  # Flower's thread would end on it, silently, the node left offline
                    logging.getLogger("fleet.flower").warning("heartbeat failed, retrying: %s", error)
                    return False

            super().__init__(heartbeat)

    connection.HeartbeatSender = Sender  # type: ignore[attr-defined]


def follow_events() -> AdaptiveWaits:
    """The SuperNode's waits follow what happens (see the module docstring); the stand-in for its ``time``."""
    import importlib

    loop = importlib.import_module("flwr.supernode.start_client_internal")
    waits = AdaptiveWaits()
    real_push = loop._push_messages

    def push_messages(*args: Any, **options: Any) -> None:
        waits.activity()  # a message was pulled: the loop is about to push its reply
        real_push(*args, **options)
        waits.activity()

    loop.time = waits  # type: ignore[attr-defined]
    loop._push_messages = push_messages  # type: ignore[attr-defined]
    shorten_object_pulls()
    return waits


# --- entry point --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in ("superlink", "supernode"):
        print(
            "usage: python -m fleet.federation.flower_launcher {superlink,supernode} [Flower's arguments]",
            file=sys.stderr,
        )
        return 2
    component, flower_arguments = arguments[0], arguments[1:]
    try:
        check_flower_version()
        if component == "superlink":
            client_ca, allowed = os.environ.get(CLIENT_CA), os.environ.get(ALLOWED_CLIENTS)
            if not client_ca or not allowed:
                raise LauncherError(f"the SuperLink needs {CLIENT_CA} and {ALLOWED_CLIENTS} for mutual TLS")
            serve_with_client_certificates(Path(client_ca), Path(allowed))
            from flwr.superlink.cli import flower_superlink as entry
        else:
            present_client_certificate_from_environment()
            follow_events()
            keep_heartbeats_alive()
            from flwr.supernode.cli import flower_supernode as entry
    except LauncherError as error:
        print(f"fleet flower launcher: {error}", file=sys.stderr)
        return 2
    sys.argv = [f"flower-{component}", *flower_arguments]
    entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
