"""FederatedLearning (federation-ai.open-cluster-management.io): the job for the upstream OCM controller."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from fleet.hub import JOB_LABEL
from fleet.models import Job, ListenerType
from render.constructs.base import HubObject

UPSTREAM_LISTENER_TYPES = (ListenerType.NODE_PORT, ListenerType.LOAD_BALANCER, ListenerType.ROUTE)
UNSUPPORTED_ANNOTATION = "fleet.dev/unsupported-listeners"
DROPPED_ANNOTATION = "fleet.dev/dropped-placement-fields"
"""Placement fields the upstream CRD cannot carry: its embedded Placement schema predates ``celSelector``, so
the capacity filter is left out there (the label, claim and prioritizer rules stay)."""


def upstream_placement(placement: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The placement spec without what the upstream CRD rejects, and the JSON paths of what was dropped."""
    dropped: list[str] = []
    predicates = []
    for index, predicate in enumerate(placement.get("predicates", [])):
        selector = dict(predicate.get("requiredClusterSelector", {}))
        if selector.pop("celSelector", None) is not None:
            dropped.append(f"predicates[{index}].requiredClusterSelector.celSelector")
        predicates.append({**predicate, "requiredClusterSelector": selector})
    return {**placement, "predicates": predicates}, dropped


class UpstreamFederatedLearning(HubObject):
    def __init__(self, scope: Construct, *, job: Job, placement: dict[str, Any], source: str) -> None:
        placement, dropped_fields = upstream_placement(placement)
        annotations = {DROPPED_ANNOTATION: ",".join(dropped_fields)} if dropped_fields else {}
        listeners = [listener for listener in job.listeners if listener.type in UPSTREAM_LISTENER_TYPES]
        # The upstream controller knows no Ingress listener: leave it out, visibly, rather than fail the job.
        dropped = [listener.name for listener in job.listeners if listener.type not in UPSTREAM_LISTENER_TYPES]
        if job.storage.pvc is not None:
            pvc = job.storage.pvc
            storage: dict[str, Any] = {
                "type": "PersistentVolumeClaim",
                "name": pvc.name,
                "size": str(pvc.size),
                "path": pvc.path,
            }
        else:
            assert job.storage.s3 is not None
            s3 = job.storage.s3
            storage = {
                "type": "S3Bucket",
                "s3": {"bucketName": s3.bucket, "prefix": s3.prefix, "region": s3.region},
            }
        super().__init__(
            scope,
            api_version="federation-ai.open-cluster-management.io/v1alpha1",
            kind="FederatedLearning",
            name=job.name,
            namespace=job.namespace,
            component="job",
            instance=job.name,
            source=source,
            labels={JOB_LABEL: job.name},
            annotations={**annotations, **({UNSUPPORTED_ANNOTATION: ",".join(dropped)} if dropped else {})},
            body={
                "spec": {
                    "framework": job.framework.value,
                    "server": {
                        "image": job.images.server,
                        "rounds": job.rounds,
                        "minAvailableClients": job.min_available_clients,
                        "listeners": [
                            {"name": listener.name, "type": listener.type.value, "port": listener.port}
                            for listener in listeners
                        ],
                        "storage": storage,
                    },
                    "client": {"image": job.images.client, "placement": placement},
                }
            },
        )
