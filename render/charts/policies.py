"""The ``policies/`` folders: each DataLocalityPolicy as OCM governance policies that the spokes enforce.

The job Placements already keep collaborators off clusters a policy does not allow; these policies hold the
line on the spokes themselves, whatever creates workloads there:

- ``<policy>-egress`` (with ``egressOnlyToAggregator``): a NetworkPolicy in the collaborator namespace letting
  pods reach only DNS and the aggregator, on the allowed clusters that hold a governed dataset;
- ``<policy>-locality``: no collaborator workload labelled with a governed dataset may exist on a cluster that
  holds the data but is not allowed (``mustnothave``, enforced: the policy framework deletes it).

The NetworkPolicy leaves the add-on healthy: OCM judges a template add-on by its Deployment's availability
(reported through ManifestWork feedback), not by a lease the agent would have to renew over the network.

Each comes with its Placement and PlacementBinding in ``fleet.hub.POLICY_NAMESPACE``, which is bound to every
cluster set of ``clusters/``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from constructs import Construct

from fleet.claims import dataset_claim
from fleet.hub import ADDON_INSTALL_NAMESPACE, DATASET_LABEL, POLICY_NAMESPACE, POLICY_SUFFIXES
from fleet.models import DataLocalityPolicy, Job, LabelSelector, ListenerType, SelectorOperator
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.managed_cluster_set_binding import ManagedClusterSetBinding
from render.constructs.namespace import Namespace
from render.constructs.placement import Placement
from render.constructs.placement_binding import PlacementBinding
from render.constructs.policy import Policy

COMPONENT = "data-locality"
POLICY_LABEL = "fleet.dev/policy"
EGRESS_SUFFIX, LOCALITY_SUFFIX = POLICY_SUFFIXES  # the name limit that they imply is in the model
REMEDIATION = "enforce"
WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"), ("v1", "Pod"))
"""What counts as a collaborator workload for the locality policy."""
_TLS_PORT = 443
"""Route and Ingress listeners are reached through the router's TLS port, not the Service port."""
_NEGATION = {
    SelectorOperator.IN: SelectorOperator.NOT_IN,
    SelectorOperator.NOT_IN: SelectorOperator.IN,
    SelectorOperator.EXISTS: SelectorOperator.DOES_NOT_EXIST,
    SelectorOperator.DOES_NOT_EXIST: SelectorOperator.EXISTS,
}


def build_policies(app: FleetApp, repository: Repository) -> None:
    if not repository.policies:
        return
    chart = FolderChart(app, "policies")
    sources = ",".join(sorted(repository.source(p).file for p in repository.policies.values()))
    Namespace(chart, name=POLICY_NAMESPACE, component=COMPONENT, source=sources)
    cluster_files: dict[str, list[str]] = defaultdict(list)
    for cluster in repository.clusters.values():
        cluster_files[cluster.cluster_set].append(repository.source(cluster).file)
    for cluster_set, files in sorted(cluster_files.items()):
        ManagedClusterSetBinding(
            chart,
            cluster_set=cluster_set,
            namespace=POLICY_NAMESPACE,
            component=COMPONENT,
            source=",".join(sorted(files)),
        )
    for policy in repository.policies.values():
        build_policy(app, repository, policy)


def build_policy(app: FleetApp, repository: Repository, policy: DataLocalityPolicy) -> None:
    source = repository.source(policy).file
    chart = FolderChart(app, f"policies/{policy.name}")
    jobs = [job for job in repository.jobs.values() if job.dataset in policy.datasets]
    if policy.rules.egress_only_to_aggregator:
        network_policy = egress_network_policy(policy, jobs)
        _govern(
            chart,
            policy,
            source,
            suffix=EGRESS_SUFFIX,
            placement=egress_placement_spec(policy),
            controls="egress only to the aggregator",
            configuration={
                "remediationAction": REMEDIATION,
                "severity": "high",
                # Removing the policy removes the NetworkPolicy it created, nothing else.
                "pruneObjectBehavior": "DeleteIfCreated",
                "object-templates": [{"complianceType": "musthave", "objectDefinition": network_policy}],
            },
        )
    locality = locality_placement_spec(policy)
    if locality is not None:  # an allow-all selector leaves no cluster to keep collaborators off
        templates = [
            {"complianceType": "mustnothave", "objectDefinition": workload} for workload in _governed_workloads(policy)
        ]
        _govern(
            chart,
            policy,
            source,
            suffix=LOCALITY_SUFFIX,
            placement=locality,
            controls="no collaborators outside the allowed clusters",
            configuration={
                "remediationAction": REMEDIATION,
                "severity": "critical",
                "object-templates": templates,
            },
        )


def _govern(
    chart: Construct,
    policy: DataLocalityPolicy,
    source: str,
    *,
    suffix: str,
    placement: dict[str, Any],
    controls: str,
    configuration: dict[str, Any],
) -> None:
    name = policy.name + suffix
    labels = {POLICY_LABEL: policy.name}
    common: dict[str, Any] = {"component": COMPONENT, "instance": policy.name, "source": source}
    Policy(
        chart,
        name=name,
        namespace=POLICY_NAMESPACE,
        configuration_policies={name: configuration},
        remediation_action=REMEDIATION,
        controls=controls,
        labels=labels,
        **common,
    )
    Placement(
        chart,
        name=name,
        namespace=POLICY_NAMESPACE,
        spec=placement,
        policies=[policy.name],
        labels=labels,
        **common,
    )
    PlacementBinding(chart, name=name, namespace=POLICY_NAMESPACE, placement=name, policies=[name], **common)


# --- placements ---------------------------------------------------------------------------------------------


def egress_placement_spec(policy: DataLocalityPolicy) -> dict[str, Any]:
    """Clusters holding a governed dataset that the policy allows: one predicate per dataset (ORed)."""
    labels = policy.allowed_clusters.manifest()
    predicates = []
    for dataset in sorted(policy.datasets):
        selector: dict[str, Any] = {"claimSelector": _holds(dataset)}
        if labels:
            selector["labelSelector"] = labels
        predicates.append({"requiredClusterSelector": selector})
    return {"predicates": predicates}


def locality_placement_spec(policy: DataLocalityPolicy) -> dict[str, Any] | None:
    """Clusters holding a governed dataset that the policy does not allow; None when it allows every cluster.

    A selector is an AND of terms, so its negation is the OR of the negated terms: one predicate per dataset
    and negated term (predicates are ORed), each also requiring the dataset claim.
    """
    negated = negated_terms(policy.allowed_clusters)
    if not negated:
        return None
    return {
        "predicates": [
            {
                "requiredClusterSelector": {
                    "claimSelector": _holds(dataset),
                    "labelSelector": {"matchExpressions": [term]},
                }
            }
            for dataset in sorted(policy.datasets)
            for term in negated
        ]
    }


def negated_terms(selector: LabelSelector) -> list[dict[str, Any]]:
    """Label expressions, each matching exactly the clusters that fail one term of ``selector``.

    ``k=v`` fails where k is missing or differs (NotIn); In fails as NotIn (a missing key included), NotIn
    fails only where the key holds a listed value (In), Exists as DoesNotExist and the reverse.
    """
    terms: list[dict[str, Any]] = [
        {"key": key, "operator": SelectorOperator.NOT_IN.value, "values": [value]}
        for key, value in sorted(selector.match_labels.items())
    ]
    terms += [{**r.manifest(), "operator": _NEGATION[r.operator].value} for r in selector.match_expressions]
    return terms


def _holds(dataset: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": dataset_claim(dataset), "operator": "Exists"}]}


# --- what the spokes must (not) have ------------------------------------------------------------------------


def egress_network_policy(policy: DataLocalityPolicy, jobs: list[Job]) -> dict[str, Any]:
    """The NetworkPolicy letting collaborator pods reach DNS and the aggregator only.

    The aggregator is ``aggregatorCidrs`` when given; otherwise any address, on the governed jobs' listener
    ports only. With both, the CIDRs on those ports.
    """
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ports = sorted(
        {
            _TLS_PORT if listener.type in (ListenerType.ROUTE, ListenerType.INGRESS) else listener.port
            for job in jobs
            for listener in job.listeners
        }
    )
    aggregator: dict[str, Any] = {}
    if policy.aggregator_cidrs:
        aggregator["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in policy.aggregator_cidrs]
    if ports:
        aggregator["ports"] = [{"protocol": "TCP", "port": port} for port in ports]
    egress = [dns, aggregator] if aggregator else [dns]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy.name + EGRESS_SUFFIX,
            "namespace": ADDON_INSTALL_NAMESPACE,
            "labels": {POLICY_LABEL: policy.name, "app.kubernetes.io/part-of": "fleet"},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress},
    }


def _governed_workloads(policy: DataLocalityPolicy) -> list[dict[str, Any]]:
    # No name: a mustnothave template without one matches every object of the kind carrying these labels.
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"namespace": ADDON_INSTALL_NAMESPACE, "labels": {DATASET_LABEL: dataset}},
        }
        for dataset in sorted(policy.datasets)
        for api_version, kind in WORKLOAD_KINDS
    ]
