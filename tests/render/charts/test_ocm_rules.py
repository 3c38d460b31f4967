"""The claim keys, label keys and CEL the renderer writes, checked with the rules OCM applies to them.

- A Placement's ``claimSelector`` (and ``labelSelector``) goes through Kubernetes' LabelSelectorAsSelector
  (ocm pkg/placement/helpers/clusters.go): every key must be a qualified name (an optional DNS-subdomain prefix
  and '/', then at most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends), every value a label value;
  anything else leaves the Placement Misconfigured and selecting nothing.
- Its ``celSelector`` runs in cel-go, whose ``int(string)`` parses a base-10 int64 (strconv.ParseInt(s, 10,
  64)) and errors otherwise; an expression that errors selects nothing. The capacity claims must hold such
  integers, and the minimum an expression compares with must be one.

The rules are stated here on their own (not borrowed from the evaluator), and held against every repository
hypothesis draws and against the example's rendered hub target.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.claims import CAPACITY_CLAIMS, cluster_claims, dataset_claim
from fleet.models import Cluster, DataLocalityPolicy, Job
from fleet.placement import HubContext, evaluate, placement_spec
from fleet.repository import Repository

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CEL_GO_INT = re.compile(r"[+-]?[0-9]+")
INT64 = range(-(2**63), 2**63)
_WRITTEN_CEL = re.compile(
    r'managedCluster\.status\.clusterClaims\.exists\(c, c\.name == "([^"]+)" && int\(c\.value\) >= (-?[0-9]+)\)'
)


def qualified_name(key: str) -> bool:
    """Kubernetes' IsQualifiedName: what a label (and so a claim selector) key must be."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def cel_go_int(text: str) -> bool:
    """Whether cel-go's int() accepts ``text``."""
    return _CEL_GO_INT.fullmatch(text) is not None and int(text) in INT64


def _selectors(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["requiredClusterSelector"] for p in spec.get("predicates") or []]


def check_placement(spec: dict[str, Any], delivered: set[str]) -> None:
    """Every key and value a Placement selects on passes OCM's rules; every CEL expression is the one shape the
    renderer writes, over a claim some cluster is given, with an int64 minimum."""
    for selector in _selectors(spec):
        label_selector = selector.get("labelSelector") or {}
        requirements = [*(label_selector.get("matchExpressions") or [])]
        requirements += [{"key": k, "values": [v]} for k, v in (label_selector.get("matchLabels") or {}).items()]
        requirements += (selector.get("claimSelector") or {}).get("matchExpressions") or []
        for requirement in requirements:
            assert qualified_name(requirement["key"]), requirement
            assert all(len(v) <= 63 and _LABEL_VALUE.fullmatch(v) for v in requirement.get("values") or [])
        for expression in (selector.get("celSelector") or {}).get("celExpressions") or []:
            match = _WRITTEN_CEL.fullmatch(expression)
            assert match is not None, expression
            assert match.group(1) in delivered and cel_go_int(match.group(2)), expression


def check_claims(claims: dict[str, str]) -> None:
    for name, value in claims.items():
        # A ClusterClaim is a cluster-scoped object (its name a DNS subdomain) and a claim selector key.
        assert qualified_name(name) and len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name), name
        if name in CAPACITY_CLAIMS:
            assert cel_go_int(value), (name, value)


DATASETS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?", fullmatch=True)
INT64_MAX = 2**63 - 1


@settings(max_examples=150, deadline=None)
@given(
    dataset=DATASETS,
    cpu_milli=st.integers(min_value=0, max_value=INT64_MAX),
    memory=st.integers(min_value=0, max_value=INT64_MAX),
    gpu=st.integers(min_value=0, max_value=INT64_MAX),
    request=st.tuples(
        st.integers(min_value=0, max_value=INT64_MAX),
        st.integers(min_value=0, max_value=INT64_MAX),
        st.integers(min_value=0, max_value=INT64_MAX),
    ),
    region=st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True),
)
def test_any_valid_definition_renders_keys_and_cel_ocm_accepts(
    dataset: str, cpu_milli: int, memory: int, gpu: int, request: tuple[int, int, int], region: str
) -> None:
    cluster = Cluster.model_validate(
        {
            "name": "c",
            "clusterSet": "s",
            "labels": {"topology.fleet.dev/region": region},
            "datasets": {dataset: {"path": "/d", "samples": 1}},
            "capacity": {"cpu": f"{cpu_milli}m", "memory": str(memory), "gpu": gpu},
        }
    )
    job = Job.model_validate(
        {
            "name": "j",
            "namespace": "fl-j",
            "images": {"server": "example.org/app:1", "client": "example.org/app:1"},
            "rounds": 1,
            "minAvailableClients": 1,
            "maxClients": 1,
            "dataset": dataset,
            "resources": {"cpu": f"{request[0]}m", "memory": str(request[1]), "gpu": request[2]},
            "storage": {"pvc": {"name": "m", "size": "1Gi", "path": "/m"}},
            "listeners": [{"name": "server", "type": "NodePort", "port": 30090}],
            "clusterSets": ["s"],
        }
    )
    policy = DataLocalityPolicy.model_validate(
        {
            "name": "p",
            "datasets": [dataset],
            "allowedClusters": {"matchLabels": {"topology.fleet.dev/region": region}},
        }
    )
    claims = cluster_claims(cluster)
    check_claims(claims)
    spec = placement_spec(job, [policy])
    check_placement(spec, set(claims))
    assert dataset_claim(dataset) in claims
    # And the scheduler model finds nothing misconfigured: OCM builds every selector and compiles every CEL.
    result = evaluate(spec, ["s"], [cluster], context=HubContext("fl-j", "j"))
    assert result.misconfigured is not None and result.misconfigured.status is False
    fits = cpu_milli >= request[0] and memory >= request[1] and gpu >= request[2]
    assert result.selected == (["c"] if fits else [])


def test_the_example_rendered_placements_and_claims(example: tuple[Repository, dict[str, Any]]) -> None:
    repository, rendered = example
    delivered: set[str] = set()
    for body in rendered.values():
        if body["kind"] == "ManifestWork" and body["metadata"]["name"] == "fleet-cluster-claims":
            claims = {
                m["metadata"]["name"]: m["spec"]["value"]
                for m in body["spec"]["workload"]["manifests"]
                if m["kind"] == "ClusterClaim"
            }
            check_claims(claims)
            delivered |= set(claims)
    placements = [b for b in rendered.values() if b["kind"] == "Placement"]
    assert len(placements) == len(repository.jobs) + 2 * len(repository.policies)  # jobs' and policies' (2 each)
    for placement in placements:
        check_placement(placement["spec"], delivered)
        result = evaluate(placement["spec"], ["research-eu", "research-us"], list(repository.clusters.values()))
        assert result.misconfigured is not None and result.misconfigured.status is False, placement["metadata"]
    declarations = [b for b in rendered.values() if b["kind"] == "ManagedClusterLabels"]
    assert len(declarations) == len(repository.clusters)
    for body in declarations:  # the labels the controller applies to each ManagedCluster
        labels = {**body["spec"]["labels"], "cluster.open-cluster-management.io/clusterset": body["spec"]["clusterSet"]}
        assert all(qualified_name(k) and len(v) <= 63 and _LABEL_VALUE.fullmatch(v) for k, v in labels.items())
