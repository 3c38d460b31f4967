"""FederatedLearning (federation.fleet.dev): the job as this project's controller runs it."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from fleet.claims import API_GROUP
from fleet.crd import KIND, VERSION
from fleet.hub import JOB_LABEL
from fleet.models import FederatedLearningSpec, Job
from render.constructs.base import HubObject


class FederatedLearning(HubObject):
    def __init__(self, scope: Construct, *, job: Job, placement: dict[str, Any], source: str) -> None:
        spec = FederatedLearningSpec.from_job(job, placement)
        super().__init__(
            scope,
            api_version=f"{API_GROUP}/{VERSION}",
            kind=KIND,
            name=job.name,
            namespace=job.namespace,
            component="job",
            instance=job.name,
            source=source,
            labels={JOB_LABEL: job.name},
            body={"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)},
        )
