"""Flower as a fleet runtime: a SuperLink on the hub (with fleet's warm executor running the ServerApp), one SuperNode
per collaborator, the run submitted and followed through Flower's Control API.

Locally the run is `fleet.federation.flower_runtime.FlowerRun`; on the hub the objects are
`fleet.controller.objects.flower_aggregator_objects` and `fleet.controller.objects.flower_collaborator_manifests`,
the run `fleet.controller.runs.FlowerRunBackend`. Each collaborator's key is registered with the SuperLink
(SuperNode authentication).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.models import FederatedLearningSpec, Framework, Job

if TYPE_CHECKING:
    from fleet.controller.objects import JobRef, TlsMaterial
    from fleet.controller.runs import RunBackend
    from fleet.federation.local import LocalRun


@dataclass(frozen=True)
class FlowerRuntime:
    framework: Framework = Framework.FLOWER
    aggregator: str = "superlink"
    registers_keys: bool = True

    def local_run(self) -> type[LocalRun]:
        from fleet.federation.flower_runtime import FlowerRun

        return FlowerRun

    def aggregator_objects(
        self,
        spec: FederatedLearningSpec,
        job: JobRef,
        tls: TlsMaterial | None,
        *,
        replicas: int,
        collaborators: Mapping[str, str],
        client_keys: Mapping[str, str],
        address: str,
    ) -> list[dict[str, Any]]:
        from fleet.controller.objects import flower_aggregator_objects

        return flower_aggregator_objects(spec, job, tls, replicas=replicas, collaborators=collaborators)

    def collaborator_manifests(
        self,
        spec: FederatedLearningSpec,
        job: JobRef,
        cluster: str,
        *,
        data_path: str,
        address: str,
        ca_pem: str,
        client_key: str | None,
        user: str,
        collaborators: tuple[str, ...],
    ) -> list[dict[str, Any]]:
        from fleet.controller.objects import flower_collaborator_manifests

        return flower_collaborator_manifests(spec, job, cluster, data_path, address, ca_pem, client_key)

    def plan_notes(self, job: Job) -> tuple[str, ...]:
        return ()  # the plan's own lines say it all: a SuperLink, one SuperNode per selected cluster

    def run_backend(self) -> RunBackend:
        from fleet.controller.runs import FlowerRunBackend

        return FlowerRunBackend()


FLOWER = FlowerRuntime()
