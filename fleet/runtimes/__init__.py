"""The one boundary between fleet and a training framework: what a runtime does, locally and on the hub.

Everything else is shared by every runtime: placement, the hub CA and the collaborators' identities, the phase
machine (`fleet.lifecycle`), the status, the progress events the aggregator writes (`fleet.federation.progress`),
the model storage, the model card and the evaluation. A runtime says
- how `fleet run` starts its aggregator and collaborators on this machine (`Runtime.local_run`);
- which hub objects run its aggregator, and what a collaborator's ManifestWork carries (`Runtime.aggregator_objects`,
  `Runtime.collaborator_manifests`), beside the objects every job has (its TLS Secret, model volume, listeners);
- how the controller starts, follows and stops its run (`Runtime.run_backend`), and whether the collaborators'
  keys are registered with the aggregator (`Runtime.registers_keys`).

A third runtime is a new module here, listed in `_RUNTIMES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fleet.models import FederatedLearningSpec, Framework, Job

if TYPE_CHECKING:
    from fleet.controller.objects import JobRef, TlsMaterial
    from fleet.controller.runs import RunBackend
    from fleet.federation.local import LocalRun


class Runtime(Protocol):
    framework: Framework
    aggregator: str
    """What its aggregator is called in the hub objects' names (``<job>-<aggregator>``) and component label."""
    registers_keys: bool
    """Whether the controller registers each collaborator's key with the aggregator (Flower's SuperNode
    authentication); otherwise the aggregator reads the keys it admits from the objects (`aggregator_objects`)."""

    def local_run(self) -> type[LocalRun]:
        """The run `fleet run` makes of a job (`fleet.federation.local.run_federation`)."""
        ...

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
        """The hub objects of the job's aggregator: its Deployment (with ``replicas``), its in-hub Service
        (``<job>-<aggregator>``, port ``fleet``: where the listeners send collaborators), its configuration.
        ``tls`` is None with ``tls: false`` or while the certificate is not issued (then no Deployment yet);
        ``collaborators``: each placed cluster's registration subject -> the cluster; ``client_keys``: cluster ->
        the digest of the key it must present; ``address``: ``host:port`` where collaborators reach the aggregator
        (empty while unknown)."""
        ...

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
        """What the ManifestWork of ``cluster`` carries: its collaborator Deployment (named
        `fleet.controller.objects.collaborator_name`, in the add-on's namespace, reading ``data_path``) and its
        configuration; ``user``: the cluster's registration subject; ``collaborators``: every placed cluster's."""
        ...

    def run_backend(self) -> RunBackend:
        """How the controller submits, follows and stops the job's run."""
        ...

    def plan_notes(self, job: Job) -> tuple[str, ...]:
        """What ``fleet plan`` says the hub runs for ``job`` beyond its placement."""
        ...


_RUNTIMES = {
    Framework.FLOWER: "fleet.runtimes.flower:FLOWER",
    Framework.OPENFL: "fleet.runtimes.openfl:OPENFL",
}


def runtime_for(framework: Framework) -> Runtime:
    """The runtime of ``framework`` (imported on first use: the controller never imports torch or a runtime's own
    packages)."""
    module, _, name = _RUNTIMES[framework].partition(":")
    runtime: Runtime = getattr(importlib.import_module(module), name)
    return runtime


DEFAULT_FRAMEWORK: Framework = Job.model_fields["framework"].default
"""A job's framework when it names none (`fleet.models.Job.framework`)."""


def framework_of(resource: Mapping[str, Any]) -> Framework:
    """The framework of a FederatedLearning resource as the API server holds it (the default when it names none;
    one this version does not know fails the spec's validation, so any runtime's names do here)."""
    try:
        return Framework(str((resource.get("spec") or {}).get("framework", DEFAULT_FRAMEWORK.value)))
    except ValueError:
        return DEFAULT_FRAMEWORK


__all__ = ["DEFAULT_FRAMEWORK", "Runtime", "framework_of", "runtime_for"]
