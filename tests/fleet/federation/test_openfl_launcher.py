"""fleet.app_openfl.launcher: OpenFL's own fx entry point with one wait changed, and only for OpenFL 1.9.

Run in OpenFL's environment (.venv-openfl), as `fleet run` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fleet.federation import openfl_runtime

OPENFL_PYTHON = openfl_runtime.DEFAULT_OPENFL_VENV / "bin" / "python"
SOURCES = Path(openfl_runtime.__file__).resolve().parents[2]

_PROBE = """
import inspect, json, sys
from fleet.app_openfl import launcher
from openfl.component.aggregator.aggregator import Aggregator
from openfl.transport.grpc.aggregator_server import AggregatorGRPCServer
upstream = inspect.getsource(Aggregator)
server = inspect.getsource(AggregatorGRPCServer)
before = Aggregator._get_sleep_time()
check = AggregatorGRPCServer.validate_collaborator
launcher.patch()
print(json.dumps({"before": before, "after": Aggregator._get_sleep_time(), "source": upstream, "server": server,
                  "keys_checked": AggregatorGRPCServer.validate_collaborator is not check}))
"""


def _python(code: str, env: dict[str, str] | None = None, path: str = str(SOURCES)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPENFL_PYTHON), "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        timeout=180,
        check=False,
    )


def test_the_launcher_changes_the_idle_sleep_and_with_allowed_keys_the_collaborator_check(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text("{}")
    ran = _python(_PROBE, {"FLEET_OPENFL_SLEEP": "2", "FLEET_OPENFL_ALLOWED_KEYS": str(keys)})
    assert ran.returncode == 0, ran.stderr
    probe = json.loads(ran.stdout.splitlines()[-1])
    # What the launcher was written against: a fixed 10 s, asked for on the class (so the patch reaches it), at
    # both places the aggregator answers a collaborator that has no work yet.
    assert probe["before"] == 10
    assert "return 10" in probe["source"]
    assert probe["source"].count("sleep_time = Aggregator._get_sleep_time()") == 2
    assert probe["after"] == 2
    # What the key check was written against: OpenFL 1.9 authenticates by the common name only, in one method each
    # of the aggregator's RPCs calls first; the key check runs after it, on the same request.
    assert probe["keys_checked"]
    assert 'context.auth_context()["x509_common_name"]' in probe["server"]
    assert probe["server"].count("self.validate_collaborator(request, context)") >= 4
    default = json.loads(_python(_PROBE).stdout.splitlines()[-1])
    assert default["after"] == 1  # the wire field is an integer: 1 s is the shortest wait there is
    assert not default["keys_checked"]  # without the variable, OpenFL's check alone (fleet run with tls: false)


def test_the_launcher_refuses_a_bad_sleep_and_any_other_openfl(tmp_path: Path) -> None:
    refused = _python("from fleet.app_openfl import launcher; launcher.patch()", {"FLEET_OPENFL_SLEEP": "0.5"})
    assert refused.returncode != 0
    assert "FLEET_OPENFL_SLEEP: expected whole seconds from 1 to 10, got '0.5'" in refused.stderr
    # Another OpenFL (a stand-in package ahead on the path): refused before anything is changed or started.
    fake = tmp_path / "openfl"
    (fake / "component" / "aggregator").mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "1.10"\n')
    (fake / "component" / "__init__.py").write_text("")
    (fake / "component" / "aggregator" / "__init__.py").write_text("")
    (fake / "component" / "aggregator" / "aggregator.py").write_text("class Aggregator:\n    pass\n")
    other = _python(
        "from fleet.app_openfl import launcher; launcher.main(['--workspace', '.', 'aggregator', 'start'])",
        path=f"{tmp_path}{os.pathsep}{SOURCES}",
    )
    assert other.returncode != 0
    assert "written for OpenFL 1.9, found 1.10" in other.stderr


def test_the_key_digest_is_the_one_the_controller_records(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from fleet.app_openfl.launcher import allowed_digests, key_digest
    from fleet.controller.identity import key_digest as recorded_digest
    from fleet.federation.certificates import CertificateAuthority, create_cluster_identity

    authority = CertificateAuthority.create(tmp_path / "ca", "hub")
    identity = create_cluster_identity(tmp_path / "id", "alpha", authority)
    from cryptography import x509

    public = x509.load_pem_x509_certificate(identity.certificate.read_bytes()).public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert key_digest(identity.certificate.read_bytes()) == recorded_digest(line)
    listed = tmp_path / "keys.json"
    listed.write_text(json.dumps({"alpha": ["a" * 64], "beta": "not a list"}))
    assert allowed_digests(listed, "alpha") == {"a" * 64}
    assert allowed_digests(listed, "beta") == set()  # malformed: nothing admitted
    assert allowed_digests(tmp_path / "missing.json", "alpha") == set()  # unreadable: refused, not open
