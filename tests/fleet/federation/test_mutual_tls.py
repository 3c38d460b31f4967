"""Mutual TLS at the SuperLink's port, from outside its process: a real `flower-superlink` started through fleet's
launcher, and clients that are not fleet (Python's ssl, openssl s_client, Flower's own SuperNode).

Each refusal here is one the README states: no client certificate, another CA's, an expired one, a cluster not
placed for this job, a collaborator using more than the Fleet API or another key than its certificate's, a
valid certificate whose key the SuperLink never registered, and anything older than TLS 1.3.

Where a refusal happens: Python's asyncio TLS server (uvicorn's) closes a connection whose handshake fails
without sending the alert, so a TLS 1.3 client (whose handshake ends before the server has checked its
certificate) sees the connection close on its first read. A handshake refusal is told from the launcher's own
(a verified certificate of a name not allowed) by the launcher's log line, which only the latter writes.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.federation.certificates import (
    CertificateAuthority,
    ClusterIdentity,
    collaborator_subject,
    create_cluster_identity,
)
from fleet.federation.flower_launcher import (
    ALLOWED_CLIENTS,
    CLIENT_CA,
    CLIENT_CERT,
    CLIENT_KEY,
    client_ssl_context,
    write_allowed_clients,
)
from fleet.federation.local import RunSettings, plan_run, run_federation
from fleet.federation.processes import free_port
from fleet.hub import OPERATOR_USER, collaborator_user
from fleet.models import Phase
from fleet.repository import load_repository
from tests.fleet.federation.federation_support import (
    TINY_APP,
    Recorder,
    wait_until,
    write_data,
    write_repository,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]

LAUNCHER = [sys.executable, "-m", "fleet.federation.flower_launcher"]


@dataclass(frozen=True)
class SuperLink:
    port: int
    ca: CertificateAuthority
    folder: Path
    operator: tuple[Path, Path]
    placed: ClusterIdentity
    """A cluster placed for the job: in the allow-list."""
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def superlink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    folder = tmp_path_factory.mktemp("mtls")
    ca = CertificateAuthority.create(folder / "ca", "hub CA")
    server = ca.issue_server(folder / "ca")
    operator = ca.issue_operator(folder / "ca")
    placed = create_cluster_identity(folder / "clusters", "alpha", ca)
    allowed = folder / "allowed-clients.json"
    write_allowed_clients(allowed, [OPERATOR_USER], {collaborator_user("alpha"): "alpha"})
    port = free_port()
    log = folder / "superlink.log"
    argv = [*LAUNCHER, "superlink", "--host", "127.0.0.1", "--port", str(port), "--isolation", "process"]
    argv += ["--disable-runtime-dependency-installation", "--enable-supernode-auth"]
    argv += ["--ssl-ca-certfile", str(ca.path), "--ssl-certfile", str(server.certificate)]
    argv += ["--ssl-keyfile", str(server.key)]
    env = {**os.environ, CLIENT_CA: str(ca.path), ALLOWED_CLIENTS: str(allowed), "FLWR_TELEMETRY_ENABLED": "0"}
    env["FLWR_HOME"] = str(folder / "flwr-home")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    link = SuperLink(port, ca, folder, (operator.certificate, operator.key), placed, log)
    try:
        wait_until(lambda: _status(link, "/health", link.operator) == 200, 60, f"the SuperLink ({log})")
        yield link
    finally:
        process.terminate()
        process.wait(timeout=10)


def _context(link: SuperLink, certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
    if certificate is None:
        context = ssl.create_default_context(cafile=str(link.ca.path))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context
    return client_ssl_context(str(link.ca.path), *certificate)


def _status(
    link: SuperLink,
    path: str,
    certificate: tuple[Path, Path] | None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> int | str:
    """The HTTP status of one request, or why no answer came (the TLS error, or "closed")."""
    connection = http.client.HTTPSConnection("127.0.0.1", link.port, context=_context(link, certificate), timeout=10)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
        return connection.getresponse().status
    except ssl.SSLError as error:
        return f"ssl: {error.reason}"
    except (ConnectionError, http.client.RemoteDisconnected, OSError) as error:
        return f"closed: {type(error).__name__}"
    finally:
        connection.close()


def _identity(folder: Path, cluster: str, ca: CertificateAuthority) -> tuple[Path, Path]:
    made = create_cluster_identity(folder, cluster, ca)
    return made.certificate, made.key


def test_the_operator_is_answered(superlink: SuperLink) -> None:
    assert _status(superlink, "/health", superlink.operator) == 200


def _policy_closes(link: SuperLink) -> int:
    return link.log.read_text(errors="replace").count("closed a connection from")


def _refused_by_tls(link: SuperLink, certificate: tuple[Path, Path] | None) -> None:
    """No answer, and not the launcher's doing: the TLS layer refused the handshake."""
    before = _policy_closes(link)
    assert str(_status(link, "/health", certificate)).startswith("closed")
    time.sleep(0.2)
    assert _policy_closes(link) == before


def test_no_client_certificate_is_refused_at_the_handshake(superlink: SuperLink) -> None:
    _refused_by_tls(superlink, None)


def test_openssl_without_a_client_certificate_gets_no_answer(superlink: SuperLink) -> None:
    """The same refusal seen by OpenSSL's own client, with an HTTP request after the handshake."""
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", superlink.address, "-CAfile", str(superlink.ca.path), "-tls1_3"],
        input="GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Verify return code: 0 (ok)" in shown.stdout  # the client trusted the server; the server hung up
    assert "HTTP/1.1" not in shown.stdout


def test_another_cas_certificate_is_refused_at_the_handshake(superlink: SuperLink, tmp_path: Path) -> None:
    foreign = CertificateAuthority.create(tmp_path / "foreign", "not the hub")
    forged = _identity(tmp_path / "forged", "alpha", foreign)  # the placed cluster's very name
    _refused_by_tls(superlink, forged)


def test_an_expired_certificate_is_refused_at_the_handshake(superlink: SuperLink, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    certificate = superlink.ca._sign(
        collaborator_subject("alpha"),
        key.public_key(),
        (),
        server=False,
        client=True,
        validity=datetime.timedelta(days=1),
        not_before=past,
    )
    (tmp_path / "expired.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "expired.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    expired = (tmp_path / "expired.pem", tmp_path / "expired.key")
    _refused_by_tls(superlink, expired)
    # The same key and name, valid now, is answered: what was refused is the expiry.
    valid = superlink.ca._sign(collaborator_subject("alpha"), key.public_key(), (), server=False, client=True)
    (tmp_path / "valid.pem").write_bytes(valid.public_bytes(serialization.Encoding.PEM))
    assert _status(superlink, "/health", (tmp_path / "valid.pem", tmp_path / "expired.key")) == 200


def test_a_cluster_not_placed_for_the_job_is_closed_before_any_request(superlink: SuperLink, tmp_path: Path) -> None:
    other = _identity(tmp_path / "beta", "beta", superlink.ca)  # signed by the hub CA, but not this job's
    before = _policy_closes(superlink)
    assert str(_status(superlink, "/health", other)).startswith("closed")
    wait_until(lambda: _policy_closes(superlink) == before + 1, 5, "the launcher's log line")


def test_a_collaborator_may_use_the_fleet_api_only(superlink: SuperLink) -> None:
    placed = (superlink.placed.certificate, superlink.placed.key)
    assert _status(superlink, "/health", placed) == 200
    # The Control API (start and stop runs, register keys) and the Runtime API are the operator's.
    assert _status(superlink, "/v1/control/ListRuns", placed, method="POST") == 403
    assert _status(superlink, "/v1/runtime/GetRun", placed, method="POST") == 403


def test_a_collaborator_must_sign_with_the_key_its_certificate_certifies(superlink: SuperLink) -> None:
    placed = (superlink.placed.certificate, superlink.placed.key)
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    claimed = other_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"flwr-public-key": base64.b64encode(claimed).decode()}
    assert _status(superlink, "/v1/fleet/ActivateNode", placed, header, method="POST") == 403
    assert _status(superlink, "/v1/fleet/ActivateNode", placed, method="POST") == 403  # no key at all


def test_a_valid_certificate_with_an_unregistered_key_is_not_let_in(superlink: SuperLink) -> None:
    """Flower's SuperNode itself, through the launcher, with the placed cluster's certificate: the TLS handshake
    succeeds, and the SuperLink's own SuperNode authentication refuses the key nobody registered."""
    identity = superlink.placed
    argv = [*LAUNCHER, "supernode", "--superlink", superlink.address, "--port", str(free_port())]
    argv += ["--root-certificates", str(superlink.ca.path), "--auth-supernode-private-key", str(identity.auth_key)]
    argv += ["--max-retries", "0", "--max-wait-time", "5", "--isolation", "process"]
    env = {**os.environ, CLIENT_CERT: str(identity.certificate), CLIENT_KEY: str(identity.key)}
    env["FLWR_HOME"] = str(superlink.folder / "supernode-home")
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert shown.returncode != 0
    assert "Failed to activate SuperNode" in shown.stdout + shown.stderr, shown.stdout + shown.stderr


def test_tls_1_2_is_refused(superlink: SuperLink) -> None:
    context = ssl.create_default_context(cafile=str(superlink.ca.path))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(*map(str, superlink.operator))
    # The handshake itself fails: a TLS 1.2 handshake waits for the server's reply, which never comes.
    with socket.create_connection(("127.0.0.1", superlink.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_the_launcher_refuses_a_superlink_without_its_client_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (CLIENT_CA, ALLOWED_CLIENTS)}
    shown = subprocess.run(
        [*LAUNCHER, "superlink", "--insecure"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert shown.returncode == 2
    assert f"needs {CLIENT_CA} and {ALLOWED_CLIENTS} for mutual TLS" in shown.stderr


def test_the_allow_list_is_reread_when_it_changes(superlink: SuperLink, tmp_path: Path) -> None:
    """The controller rewrites the list as clusters join and leave a job: no restart."""
    gamma = _identity(tmp_path / "gamma", "gamma", superlink.ca)
    assert str(_status(superlink, "/health", gamma)).startswith("closed")
    allowed = superlink.folder / "allowed-clients.json"
    both = {collaborator_user("alpha"): "alpha", collaborator_user("gamma"): "gamma"}
    try:
        time.sleep(0.01)  # a new modification time
        write_allowed_clients(allowed, [OPERATOR_USER], both)
        assert _status(superlink, "/health", gamma) == 200
    finally:
        write_allowed_clients(allowed, [OPERATOR_USER], {collaborator_user("alpha"): "alpha"})
    assert str(_status(superlink, "/health", gamma)).startswith("closed")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)")
def test_a_round_on_the_wire_is_tls_1_3_only(tmp_path: Path) -> None:
    """A loopback capture of a whole local run (tiny app, 1 round): every handshake on the SuperLink's port is
    TLS 1.3, every request of the round is inside TLS, and nothing on that port is plain HTTP."""
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=1)
    write_data(tmp_path / "data", ["alpha", "beta"])
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    capture = tmp_path / "round.pcap"
    tshark = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", "tcp", "-w", str(capture), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: capture.is_file() and capture.stat().st_size > 0, 30, "tshark to start capturing")
        result = run_federation(plan, Recorder(), RunSettings(app=TINY_APP, start_timeout=40))
        time.sleep(1)  # the last packets reach the capture
    finally:
        tshark.terminate()
        tshark.wait(timeout=30)
    assert result.status.phase is Phase.COMPLETED, result.status.message
    log = (result.attempt.logs / "superlink.log").read_text()
    port = int(log.split("Uvicorn running on https://127.0.0.1:")[1].split()[0])

    def field(display_filter: str, name: str) -> list[str]:
        """One field of every packet on the SuperLink's port matching ``display_filter``, decoded as TLS."""
        decode = ["-d", f"tcp.port=={port},tls", "-Y", f"tcp.port == {port} && ({display_filter})"]
        shown = subprocess.run(
            ["tshark", "-r", str(capture), *decode, "-T", "fields", "-e", name],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return [line for line in shown.stdout.splitlines() if line.strip()]

    server_hellos = field("tls.handshake.type == 2", "tls.handshake.extensions.supported_version")
    assert len(server_hellos) >= 4  # the operator, the ServerApp's executor, two SuperNodes
    assert set(server_hellos) == {"0x0304"}, server_hellos
    assert not field("tls.handshake.type == 11", "frame.number")  # TLS 1.3 hides certificates from the wire
    assert field("tls.app_data", "frame.number")  # the round's traffic, encrypted
    assert not field("http", "frame.number")  # no plain HTTP on the SuperLink's port
