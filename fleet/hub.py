"""Names of hub objects that the renderer writes and the controller and ``fleet plan`` read."""

from __future__ import annotations

import fleet

CONTROLLER_NAMESPACE = "fleet-system"
CONTROLLER_NAME = "fleet-controller"
ADDON_NAME = "fleet-collaborator"
"""The OCM add-on making a managed cluster a collaborator: a Flower SuperNode with a hub-signed identity."""
ADDON_INSTALL_NAMESPACE = "fleet-collaborator"
"""Namespace on each managed cluster where the collaborator runs."""
ADDON_SIGNER = "fleet.dev/collaborator"
"""The CustomSigner name under which the hub signs each collaborator's client certificate."""
ADDON_AGENT = f"{ADDON_NAME}-agent"
"""The add-on agent's name in the subject OCM gives its registration."""
OPERATOR_USER = "fleet:operator"
"""Common name of the certificates the controller (or `fleet run`) and the ServerApp present to a SuperLink: the
one identity allowed its Control and Runtime APIs, where a collaborator may use the Fleet API only."""
OPERATOR_SECRET = "fleet-operator"
"""Secret (in CONTROLLER_NAMESPACE) holding the controller's own operator certificate, issued by the controller."""
KLUSTERLET_USER_PREFIX = "system:open-cluster-management:"
"""A managed cluster's klusterlet authenticates to the hub as ``system:open-cluster-management:<cluster>:<agent
id>`` (OCM registration, ``pkg/registration/register/csr/csr.go``): the requester of its add-on CSRs."""


def serverapp_user(namespace: str, job: str) -> str:
    """Common name of a hub job's ServerApp certificate: an operator of that job's SuperLink only (each job's
    allow-list names its own), so the certificate in one job's namespace opens no other job's SuperLink."""
    return f"{OPERATOR_USER}:serverapp:{namespace}:{job}"


def requesting_cluster(username: str) -> str | None:
    """The managed cluster whose klusterlet made a request as ``username`` (a CSR's ``spec.username``, which the
    API server sets from the requester's credentials); None for any other user."""
    if not username.startswith(KLUSTERLET_USER_PREFIX):
        return None
    parts = username.removeprefix(KLUSTERLET_USER_PREFIX).split(":")
    # <cluster>:<agent id> exactly: the add-on identities (cluster:<c>:addon:...) and the managed-clusters group
    # share the prefix. Cluster names are DNS labels, never holding ':'.
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0]


def collaborator_user(cluster: str) -> str:
    """The user (certificate common name) OCM's registration gives ``cluster``'s collaborator add-on: the default
    subject of an add-on registration (addon-framework `agent.DefaultUser`), which names the cluster."""
    return f"system:open-cluster-management:cluster:{cluster}:addon:{ADDON_NAME}:agent:{ADDON_AGENT}"


def collaborator_groups(cluster: str) -> tuple[str, ...]:
    """The groups (certificate organisations) of that subject (addon-framework `agent.DefaultGroups`)."""
    return (
        f"system:open-cluster-management:cluster:{cluster}:addon:{ADDON_NAME}",
        f"system:open-cluster-management:addon:{ADDON_NAME}",
        "system:authenticated",
    )


HUB_CA_SECRET = "fleet-hub-ca"
"""Secret (in CONTROLLER_NAMESPACE) holding the hub CA that signs collaborator and SuperLink certificates."""
POLICY_NAMESPACE = "fleet-policies"
"""Hub namespace for the governance policies rendered from policies/."""
POLICY_SUFFIXES = ("-egress", "-locality")
"""Each DataLocalityPolicy becomes governance Policies named ``<name><suffix>``."""
MAX_POLICY_NAME = 63 - len(POLICY_NAMESPACE) - 1 - max(len(suffix) for suffix in POLICY_SUFFIXES)
"""OCM copies a Policy into each cluster namespace as ``<namespace>.<name>``, which must fit in 63 characters
(the policy propagator's admission webhook refuses longer ones): 39 for a DataLocalityPolicy's own name."""
DATASET_CLAIM_SUFFIX = "dataset.fleet.dev"
"""A cluster claims dataset D as the ClusterClaim ``D.dataset.fleet.dev``."""
MAX_DATASET_NAME = 63 - len(DATASET_CLAIM_SUFFIX) - 1
"""A Placement's claimSelector takes claim names as label keys (at most 63 characters without a prefix), so a
dataset name may have 45: a longer one leaves its Placements Misconfigured on the hub."""
CLAIMS_WORK_NAME = "fleet-cluster-claims"
"""The ManifestWork that delivers a cluster's dataset and capacity ClusterClaims."""

JOB_LABEL = "fleet.dev/job"
"""The job's name, on every hub and spoke object made for it."""
DATASET_LABEL = "fleet.dev/dataset"
"""The dataset a collaborator workload trains on: what the data-locality policies look for on the spokes."""
CLIENT_CERT_SECRET = f"{ADDON_NAME}-{ADDON_SIGNER.replace('/', '-')}-client-cert"
"""On each spoke, where the klusterlet stores the hub-signed certificate of the add-on's CustomSigner
registration: ``<addon>-<signer name with '/' as '-'>-client-cert`` (tls.crt, tls.key)."""
DATA_ROOT = "/data"
"""Where a collaborator sees the cluster's data; dataset claims name paths below it."""
DATA_VOLUME_CLAIM = "fleet-data"
"""On each spoke, in ADDON_INSTALL_NAMESPACE: the claim holding the cluster's data, mounted read-only."""
SOURCE_ANNOTATION = "fleet.dev/source"
"""On every rendered object: the repository file(s) it came from, so a reviewer can trace any hub object back."""
POLICIES_ANNOTATION = "fleet.dev/policies"
"""On a job's Placement: the data-locality policies whose rules its label selector carries (for `fleet plan`)."""
INSTANCE_LABEL = "app.kubernetes.io/instance"


APP_IMAGE = f"ghcr.io/fleet-fl/fleet-app:{fleet.__version__}"
"""fleet's app image of this version (`docker/app.Dockerfile`): the add-on's agent, the progress sidecars."""

AGGREGATOR_SERVICE_COMPONENT = "aggregator"
"""The component label of every job's in-hub aggregator Service, whatever its runtime (Flower's SuperLink,
OpenFL's aggregator): what the rendered ServiceMonitor selects, and no listener's Service."""
