"""The collaborator add-on's agent, from outside its process: ready exactly while the registration Secret holds a
usable certificate for this cluster (what makes the ManagedClusterAddOn Available)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.federation.certificates import CertificateAuthority, collaborator_subject, create_cluster_identity
from fleet.federation.processes import free_port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    secret = tmp_path / "secret"
    secret.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "fleet.addon_agent", f"--certificate-dir={secret}", "--cluster=eu-west-a"]
    process = subprocess.Popen([*argv, "--host=127.0.0.1", f"--port={port}"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(port, "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the agent did not start"
                time.sleep(0.1)
        yield port, secret
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM: a clean stop


def _install(secret: Path, certificate: Path, key: Path) -> None:
    """As the kubelet projects the klusterlet's Secret: tls.crt and tls.key."""
    shutil.copy(certificate, secret / "tls.crt")
    shutil.copy(key, secret / "tls.key")


def test_ready_only_with_a_usable_registration_of_this_cluster(agent: tuple[int, Path], tmp_path: Path) -> None:
    port, secret = agent
    assert _get(port, "/healthz")[0] == 200
    status, text = _get(port, "/readyz")
    assert status == 503 and "no registration certificate" in text
    ca = CertificateAuthority.create(tmp_path / "ca")
    mine = create_cluster_identity(tmp_path / "mine", "eu-west-a", ca)
    _install(secret, mine.certificate, mine.key)
    assert _get(port, "/readyz") == (200, "ok\n")
    # Another cluster's registration, a key that is not the certificate's, an expired certificate: not ready.
    theirs = create_cluster_identity(tmp_path / "theirs", "eu-west-b", ca)
    _install(secret, theirs.certificate, theirs.key)
    status, text = _get(port, "/readyz")
    assert status == 503 and "not this cluster's add-on" in text
    _install(secret, mine.certificate, theirs.key)
    status, text = _get(port, "/readyz")
    assert status == 503 and "not the one the certificate certifies" in text
    key = ec.generate_private_key(ec.SECP256R1())
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    expired = ca._sign(
        collaborator_subject("eu-west-a"),
        key.public_key(),
        (),
        server=False,
        client=True,
        validity=datetime.timedelta(days=1),
        not_before=past,
    )
    (secret / "tls.crt").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    (secret / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    status, text = _get(port, "/readyz")
    assert status == 503 and "not valid now" in text
    # The klusterlet renews it: ready again, no restart.
    _install(secret, mine.certificate, mine.key)
    assert _get(port, "/readyz")[0] == 200
