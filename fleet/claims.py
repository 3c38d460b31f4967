"""The ClusterClaims through which a managed cluster tells the hub what data it holds and what it can give.

Claims are the OCM way for a spoke to publish facts about itself: the klusterlet copies them into the
ManagedCluster's status, where Placement's ``claimSelector`` and ``celSelector`` can read them. The renderer
delivers them, the placement evaluator reads them, the controller reads the data path from them: all through
these names.
"""

from __future__ import annotations

from fleet.hub import DATASET_CLAIM_SUFFIX
from fleet.models import Cluster

API_GROUP = "federation.fleet.dev"
"""The project's own API group (the FederatedLearning custom resource)."""

CPU_CLAIM = "cpu.capacity.fleet.dev"
"""Capacity in millicores, as a decimal integer so that a CEL expression can compare it."""
MEMORY_CLAIM = "memory.capacity.fleet.dev"
"""Capacity in bytes, as a decimal integer."""
GPU_CLAIM = "gpu.capacity.fleet.dev"
CAPACITY_CLAIMS = (CPU_CLAIM, MEMORY_CLAIM, GPU_CLAIM)

MAX_CUSTOM_CLUSTER_CLAIMS = 20
"""The klusterlet reports at most this many custom ClusterClaims by default (``--max-custom-cluster-claims``);
claims beyond it never reach the hub, so a Placement selecting on them would never match."""


def dataset_claim(dataset: str) -> str:
    """The ClusterClaim whose value is the path of ``dataset`` on the cluster (``digits.dataset.fleet.dev``)."""
    return f"{dataset}.{DATASET_CLAIM_SUFFIX}"


def cluster_claims(cluster: Cluster) -> dict[str, str]:
    """Every claim the cluster publishes, name -> value, in a stable order."""
    claims = {dataset_claim(name): claim.path for name, claim in sorted(cluster.datasets.items())}
    claims[CPU_CLAIM] = str(cluster.capacity.cpu.milli)
    claims[MEMORY_CLAIM] = str(cluster.capacity.memory.whole)
    claims[GPU_CLAIM] = str(cluster.capacity.gpu)
    return claims
