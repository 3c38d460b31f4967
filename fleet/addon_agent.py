"""The collaborator add-on's agent on each managed cluster: it tells whether the cluster's hub-signed identity is
usable, so that the add-on reports Available exactly when this cluster can be a collaborator.

The add-on exists for its registration: OCM's klusterlet makes a key and a CSR, the hub signs it with the hub CA
(the AddOnTemplate's CustomSigner registration) and the klusterlet keeps the certificate and key in the Secret
`fleet.hub.CLIENT_CERT_SECRET` of the add-on's namespace, renewing them before they expire. The per-job
collaborators (SuperNodes in the controller's ManifestWorks) present that certificate and sign with that key.
OCM's add-on manager reports a template add-on's ManagedClusterAddOn Available when the Deployments of its
template are available (ocm ``pkg/addon/templateagent/template_agent.go``: ``HealthProberTypeWorkloadAvailability``;
addon-framework ``pkg/addonmanager/controllers/agentdeploy/healthcheck_sync.go``), so this agent's Deployment
turns ready only while the Secret holds a certificate and key that belong together, name this cluster's add-on
and are valid now.

    python -m fleet.addon_agent --certificate-dir DIR --cluster NAME [--port 8081]

``/readyz``: 200 while the identity is usable, else 503 with the reason; ``/healthz``: 200 (the process runs).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from fleet.hub import ADDON_NAME

_log = logging.getLogger("fleet.addon-agent")


def identity_problem(directory: Path, cluster: str, now: datetime.datetime | None = None) -> str | None:
    """Why the registration certificate in ``directory`` (tls.crt, tls.key) cannot serve ``cluster``'s
    collaborators; None when it can."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    import fleet.federation.certificates  # noqa: F401  (its filter of cryptography's long-name warning)

    certificate_file, key_file = directory / "tls.crt", directory / "tls.key"
    if not certificate_file.is_file() or not key_file.is_file():
        return f"no registration certificate in {directory} yet (the klusterlet writes it once the hub signs it)"
    try:
        certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        return f"the registration certificate or key in {directory} cannot be read: {error}"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        return "the registration key is not the one the certificate certifies"
    moment = now or datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        return f"the registration certificate is not valid now (valid until {certificate.not_valid_after_utc})"
    group = f"system:open-cluster-management:cluster:{cluster}:addon:{ADDON_NAME}"
    groups = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if group not in groups:
        return f"the registration certificate names {groups}, not this cluster's add-on ({group})"
    return None


def _handler(directory: Path, cluster: str) -> type[BaseHTTPRequestHandler]:
    seen: list[str | None] = ["(not checked yet)"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, "ok")
            elif self.path == "/readyz":
                problem = identity_problem(directory, cluster)
                if problem != seen[0]:
                    seen[0] = problem
                    _log.info("identity %s", "usable" if problem is None else f"not usable: {problem}")
                self._answer(200 if problem is None else 503, problem or "ok")
            else:
                self._answer(404, "not found")

        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # a probe every few seconds: only the state changes are logged

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.addon_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--certificate-dir", type=Path, required=True, help="the registration Secret, mounted")
    parser.add_argument("--cluster", required=True, help="this managed cluster's name")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    server = ThreadingHTTPServer((args.host, args.port), _handler(args.certificate_dir, args.cluster))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _log.info("serving /readyz and /healthz on %s:%d for cluster %s", args.host, args.port, args.cluster)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
