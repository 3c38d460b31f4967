"""The hub as a source of job status for ``fleet status``: FederatedLearning resources read through a kubeconfig.

`HubStatusSource` has the shape of `fleet.federation.status.StatusSource`, so ``fleet status`` lists hub jobs next
to local runs. One list request per call (or one get for a named job in a namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from fleet.federation.status import JobStatus
from fleet.models import FederatedLearningStatus

from .hub import HubClient
from .objects import FEDERATED_LEARNING


@dataclass
class HubStatusSource:
    kubeconfig: str | None = None
    """A kubeconfig file; None: $KUBECONFIG or ~/.kube/config, else the in-cluster service account."""
    context: str | None = None
    namespace: str | None = None
    """Only jobs in this namespace; None: every namespace."""
    _client: HubClient | None = field(default=None, repr=False)

    def statuses(self, job: str | None = None) -> list[JobStatus]:
        """The status of every FederatedLearning resource (named ``job``, when given), by namespace and name.

        A resource whose status this version cannot read comes back with its ``problem`` (it hides no other job);
        raises `fleet.controller.hub.ApiError` when the hub cannot be asked."""
        client = self._client or HubClient.from_kubeconfig(self.kubeconfig, self.context)
        self._client = client
        if job is not None and self.namespace is not None:
            one = client.get(FEDERATED_LEARNING, self.namespace, job)
            items = [one] if one is not None else []
        else:
            items = client.list(FEDERATED_LEARNING, self.namespace)
        found = []
        for item in sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"])):
            metadata = item["metadata"]
            if job is not None and metadata["name"] != job:
                continue
            where = f"hub: {FEDERATED_LEARNING.kind} {metadata.get('namespace', '')}/{metadata['name']}"
            try:
                status = FederatedLearningStatus.model_validate(item.get("status") or {})
            except ValidationError as error:
                problem = f"{where}: expected a FederatedLearningStatus: {error}"
                found.append(JobStatus(metadata["name"], FederatedLearningStatus(), where, problem=problem))
                continue
            found.append(JobStatus(metadata["name"], status, where))
        return found


def hub_status(
    kubeconfig: str | None = None, *, context: str | None = None, namespace: str | None = None, job: str | None = None
) -> list[JobStatus]:
    """The statuses of the jobs on the hub ``kubeconfig`` points at (see `HubStatusSource`)."""
    return HubStatusSource(kubeconfig, context, namespace).statuses(job)
