"""The SuperLink Control API calls `fleet run` makes while it drives a run.

Registering and unregistering SuperNodes, submitting the run (the FAB and the run config), listing nodes and
runs and stopping a run are what ``flwr supernode register``/``unregister``, ``flwr run``, ``flwr supernode ls``,
``flwr ls`` and ``flwr stop`` send, built with the same Flower functions; making them in this process avoids
starting the ``flwr`` CLI (about 1.5 s of imports on 2 cores) every time `fleet run` looks at the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class RunState:
    status: str
    """pending, starting, running or finished."""
    sub_status: str
    """With finished: completed, failed or stopped."""
    details: str


class ControlClient:
    def __init__(
        self, address: str, root_certificates: Path | None, client_certificate: tuple[Path, Path] | None = None
    ) -> None:
        """``client_certificate``: the operator's (certificate, key), which a mutual-TLS SuperLink requires
        (`fleet.federation.flower_launcher`)."""
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr CLI")]
        if root_certificates is not None and client_certificate is not None:
            from fleet.federation.flower_launcher import client_ssl_context

            verify = client_ssl_context(str(root_certificates), *client_certificate)
            self._client: Any = ControlHttpClient(f"https://{address}", interceptors=interceptors, verify=verify)
            return
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=root_certificates is None,
            root_certificates=root_certificates.read_bytes() if root_certificates else None,
            interceptors=interceptors,
        )

    def register_node(self, openssh_public_key: bytes, name: str) -> int:
        """Register a SuperNode's authentication key (what ``flwr supernode register`` sends); its node id."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        key = serialization.load_ssh_public_key(openssh_public_key)
        spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        response = self._client.RegisterNode(RegisterNodeRequest(public_key=spki, name=name))
        node_id: int = response.node_id
        return node_id

    def start_run(self, app: Path, run_config: Mapping[str, bool | int | float | str]) -> int:
        """Build the FAB from ``app`` (a folder with its pyproject.toml) and start a run of it; the run id."""
        import hashlib

        from flwr.cli.build import build_fab_from_disk
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        fab_bytes = build_fab_from_disk(app)
        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        request = StartRunRequest(
            fab=fab_to_proto(fab), override_config=user_config_to_proto(dict(run_config)), federation=""
        )
        response = self._client.StartRun(request)
        if not response.HasField("run_id"):
            raise RuntimeError(f"the SuperLink did not start the run: {response}")
        run_id: int = response.run_id
        return run_id

    def unregister_node(self, node_id: int) -> None:
        """Remove a SuperNode (what ``flwr supernode unregister`` sends): it is unavailable from then on."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def node_ids_by_key(self) -> dict[bytes, tuple[int, str]]:
        """SuperNode public key (PEM SubjectPublicKeyInfo, as registered) -> (node id, status), for every node
        the SuperLink knows, unregistered ones included (their keys cannot be registered again)."""
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._client.ListNodes(ListNodesRequest())
        return {bytes(info.public_key): (info.node_id, info.status) for info in response.nodes_info}

    def node_statuses(self) -> dict[int, str]:
        """node id -> registered, online, offline or unregistered."""
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._client.ListNodes(ListNodesRequest())
        return {info.node_id: info.status for info in response.nodes_info}

    def run_state(self, run_id: int) -> RunState | None:
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        run = response.run_dict.get(run_id)
        if run is None:
            return None
        return RunState(run.status.status, run.status.sub_status, run.status.details)

    def stop_run(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self._client.StopRun(StopRunRequest(run_id=run_id))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
