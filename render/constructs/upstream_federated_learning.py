"""FederatedLearning (federation-ai.open-cluster-management.io): the job for the upstream OCM controller."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from fleet.models import Job, ListenerType
from render.constructs.base import HubObject
from render.constructs.placement import JOB_LABEL

UPSTREAM_LISTENER_TYPES = (ListenerType.NODE_PORT, ListenerType.LOAD_BALANCER, ListenerType.ROUTE)
UNSUPPORTED_ANNOTATION = "fleet.dev/unsupported-listeners"


class UpstreamFederatedLearning(HubObject):
    def __init__(self, scope: Construct, *, job: Job, placement: dict[str, Any], source: str) -> None:
        listeners = [listener for listener in job.listeners if listener.type in UPSTREAM_LISTENER_TYPES]
        # The upstream controller knows no Ingress listener: leave it out, visibly, rather than fail the job.
        dropped = [
            listener.name for listener in job.listeners if listener.type not in UPSTREAM_LISTENER_TYPES
        ]
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
            annotations={UNSUPPORTED_ANNOTATION: ",".join(dropped)} if dropped else None,
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
