"""The few SuperLink Control API calls `fleet run` makes while it drives a run.

Registering SuperNodes, listing nodes and runs and stopping a run are what ``flwr supernode register``, ``flwr
supernode ls``, ``flwr ls`` and ``flwr stop`` send; making them in this process avoids starting the ``flwr``
CLI (about 1.5 s of imports each) every time `fleet run` looks at the run. The run itself is submitted with
``flwr run``, which builds the FAB.
"""

from __future__ import annotations

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
    def __init__(self, address: str, root_certificates: Path | None) -> None:
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        self._client: Any = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=root_certificates is None,
            root_certificates=root_certificates.read_bytes() if root_certificates else None,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def register_node(self, openssh_public_key: bytes, name: str) -> int:
        """Register a SuperNode's authentication key (what ``flwr supernode register`` sends); its node id."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        key = serialization.load_ssh_public_key(openssh_public_key)
        spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        response = self._client.RegisterNode(RegisterNodeRequest(public_key=spki, name=name))
        node_id: int = response.node_id
        return node_id

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
