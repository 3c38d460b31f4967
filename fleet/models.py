"""The typed definitions people write under ``jobs/``, ``clusters/`` and ``policies/``.

Each file holds one document. Field names are camelCase in YAML (as in Kubernetes) and snake_case in Python.
Unknown fields are rejected so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from fleet.hub import MAX_DATASET_NAME, MAX_POLICY_NAME
from fleet.quantity import Quantity

# Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation).
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def label_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as a Kubernetes label (or annotation) key, or None when it is valid."""
    prefix, slash, name = key.rpartition("/")
    # fullmatch: `$` would also match before a trailing newline
    if slash and (not prefix or len(prefix) > 253 or not re.fullmatch(_DNS_SUBDOMAIN.strip("^$"), prefix)):
        return f"expected a label key whose prefix is a DNS subdomain, got {key!r}"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            f"expected a label key: at most 63 characters of [A-Za-z0-9-_.], starting and ending "
            f"alphanumeric, optionally behind a DNS-subdomain prefix and '/', got {key!r}"
        )
    return None


def _label_key(key: str) -> str:
    problem = label_key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return key


DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_LABEL)]
"""A DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters (namespace and cluster names)."""

MAX_INT64 = 2**63 - 1
"""The largest integer CEL's int() holds: capacity claims are compared as such on the hub."""

DatasetName = Annotated[str, Field(min_length=1, max_length=MAX_DATASET_NAME, pattern=_DNS_LABEL)]
"""A DNS-1123 label short enough that its ClusterClaim name is a valid label key (see MAX_DATASET_NAME)."""

LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]

# The OCI distribution reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_IMAGE_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
)
_IMAGE_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = rf"(?:{_IMAGE_HOST}(?::[0-9]+)?/)?{_IMAGE_PATH_COMPONENT}(?:/{_IMAGE_PATH_COMPONENT})*"
_IMAGE_TAG = r"(?::[\w][\w.-]{0,127})?"
_IMAGE_ALGORITHM = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>{_IMAGE_NAME}){_IMAGE_TAG}(?:@(?P<algorithm>{_IMAGE_ALGORITHM}):(?P<hex>[0-9a-fA-F]{{32,}}))?"
)
_IMAGE_SCHEMA_PATTERN = f"^{_IMAGE_NAME}{_IMAGE_TAG}(?:@{_IMAGE_ALGORITHM}:[0-9a-fA-F]{{32,}})?$"
"""The same grammar for the JSON Schema and the CRD (no named groups: ECMA-262 and RE2 both read it)."""
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}


def _image_reference(reference: str) -> str:
    match = _IMAGE_REFERENCE.fullmatch(reference)
    if match is None or len(match.group("name")) > 255:
        raise ValueError(
            "expected an OCI image reference, [registry[:port]/]path[:tag][@sha256:<64 hex digits>], with a "
            f"lower-case path of at most 255 characters, got {reference!r}"
        )
    algorithm, digest = match.group("algorithm"), match.group("hex")
    if algorithm in _DIGEST_LENGTHS and len(digest) != _DIGEST_LENGTHS[algorithm]:
        raise ValueError(f"expected a {algorithm} digest of {_DIGEST_LENGTHS[algorithm]} hex digits, got {reference!r}")
    return reference


Image = Annotated[
    str, AfterValidator(_image_reference), Field(min_length=1, json_schema_extra={"pattern": _IMAGE_SCHEMA_PATTERN})
]


def _without_parent_segments(path: str) -> str:
    # Locally, paths are mapped under one folder (--data-root, the job's storage): `..` would leave it.
    if ".." in path.split("/"):
        raise ValueError(f"expected an absolute path without '..' segments, got {path!r}")
    return path


DataPath = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^/"), AfterValidator(_without_parent_segments)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
        use_attribute_docstrings=True,  # field docstrings become descriptions in the published schemas
    )


# --- shared ---------------------------------------------------------------------------------------------------


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(_Model):
    key: LabelKey
    operator: SelectorOperator
    values: tuple[LabelValue, ...] = ()

    @field_validator("values")
    @classmethod
    def _values_match_operator(cls, values: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        operator = info.data.get("operator")
        if operator is None:  # the operator itself is invalid and reported
            return values
        needs_values = operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not values:
            raise ValueError(f"expected a non-empty list for operator {operator.value}")
        if not needs_values and values:
            raise ValueError(f"expected no values for operator {operator.value}")
        return values

    def manifest(self) -> dict[str, Any]:
        """As a Kubernetes object carries it: key, operator, and values where the operator takes them."""
        return {
            "key": self.key,
            "operator": self.operator.value,
            **({"values": list(self.values)} if self.values else {}),
        }


class LabelSelector(_Model):
    """A Kubernetes label selector; the terms are ANDed."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def manifest(self) -> dict[str, Any]:
        """As a Kubernetes object carries it (labels sorted by key; empty parts left out)."""
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(sorted(self.match_labels.items()))
        if self.match_expressions:
            out["matchExpressions"] = [requirement.manifest() for requirement in self.match_expressions]
        return out

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(_requirement_matches(req, labels) for req in self.match_expressions)


def _requirement_matches(req: SelectorRequirement, labels: dict[str, str]) -> bool:
    if req.operator is SelectorOperator.EXISTS:
        return req.key in labels
    if req.operator is SelectorOperator.DOES_NOT_EXIST:
        return req.key not in labels
    if req.operator is SelectorOperator.IN:
        return labels.get(req.key) in req.values
    return labels.get(req.key) not in req.values


class Resources(_Model):
    """CPU, memory and GPUs: what one collaborator requests, or what one cluster can give."""

    cpu: Quantity = Quantity("0")
    memory: Quantity = Quantity("0")
    gpu: Annotated[int, Strict(), Field(ge=0, le=MAX_INT64)] = 0

    @field_validator("cpu", "memory")
    @classmethod
    def _fits_int64(cls, quantity: Quantity, info: ValidationInfo) -> Quantity:
        # Claims carry CPU in millicores and memory in bytes; the Placement's CEL compares them as int64.
        amount, unit = (quantity.milli, "millicores") if info.field_name == "cpu" else (quantity.whole, "bytes")
        if amount > MAX_INT64:
            raise ValueError(
                f"expected at most {MAX_INT64} {unit} (capacity claims and the Placement's CEL compare 64-bit "
                f"integers), got {quantity.text!r}"
            )
        return quantity

    def fits_within(self, capacity: Resources) -> bool:
        return self.cpu <= capacity.cpu and self.memory <= capacity.memory and self.gpu <= capacity.gpu


# --- Job ------------------------------------------------------------------------------------------------------


AGGREGATOR_POD_PORT = 8080
"""The port of the progress sidecar in the aggregator's pod (`fleet.controller.objects.PROGRESS_PORT`)."""


class Framework(StrEnum):
    FLOWER = "flower"
    OPENFL = "openfl"


class Strategy(StrEnum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"


class Images(_Model):
    server: Image
    client: Image


class Training(_Model):
    strategy: Strategy = Strategy.FEDAVG
    local_epochs: Annotated[int, Strict(), Field(ge=1, le=1000)] = 1
    learning_rate: Annotated[float, Field(strict=True, gt=0, le=10)] = 0.05
    batch_size: Annotated[int, Strict(), Field(ge=1, le=65536)] = 32
    fraction_train: Annotated[float, Field(strict=True, gt=0, le=1)] = 1.0
    """The fraction of available collaborators sampled for each round."""
    proximal_mu: Annotated[float, Field(strict=True, ge=0)] = 0.0
    """FedProx's proximal term; only used, and then required to be > 0, with strategy fedprox."""
    round_timeout_seconds: Annotated[int, Strict(), Field(ge=1, le=86400)] = 600

    @field_validator("proximal_mu")
    @classmethod
    def _proximal_mu_with_fedprox(cls, mu: float, info: ValidationInfo) -> float:
        strategy = info.data.get("strategy")
        if strategy is Strategy.FEDPROX and mu <= 0:
            raise ValueError("expected a number > 0 with strategy fedprox")
        if strategy is Strategy.FEDAVG and mu != 0:
            raise ValueError("expected 0 or nothing: proximalMu applies only to strategy fedprox")
        return mu


class PVCStorage(_Model):
    name: DNSLabel
    size: Quantity
    path: DataPath

    @field_validator("size")
    @classmethod
    def _size_positive(cls, size: Quantity) -> Quantity:
        if size.value <= 0:
            raise ValueError(f"expected a quantity greater than 0, got {size.text!r}")
        return size


_CREDENTIAL_FIELDS = frozenset(
    {
        "accesskey",
        "accesskeyid",
        "awsaccesskeyid",
        "awssecretaccesskey",
        "awssessiontoken",
        "credentials",
        "password",
        "secretaccesskey",
        "secretkey",
        "sessiontoken",
    }
)
_AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


class S3Storage(_Model):
    """An S3 bucket (or an S3-compatible store) that receives each completed run's files; the credentials are
    in a Secret the job names, never in Git."""

    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")]
    prefix: Annotated[str, Field(max_length=1024)] = ""
    region: Annotated[str, Field(min_length=1, pattern=r"^[a-z0-9-]+$")]
    credentials_secret: Annotated[str, Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)]
    """The Secret in the job's namespace with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and optionally
    AWS_SESSION_TOKEN), given to the aggregator alone."""
    endpoint: Annotated[
        str | None, Field(max_length=2048, pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$")
    ] = None
    """An S3-compatible endpoint (MinIO, Ceph, ...), https only; AWS's own when absent."""

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_git(cls, data: Any) -> Any:
        # Unknown fields are refused anyway; keys get a reason of their own, since a key in Git is a leak.
        if isinstance(data, dict):
            for name, value in data.items():
                normalized = str(name).replace("-", "").replace("_", "").lower()
                leaked = isinstance(value, str) and _AWS_ACCESS_KEY_ID.search(value)
                if normalized in _CREDENTIAL_FIELDS or leaked:
                    raise ValueError(
                        f"{name}: credentials never go in Git: put them in a Secret in the job's namespace "
                        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and name it in credentialsSecret; "
                        "rotate this key, it is in the repository's history now"
                    )
        return data


class ModelStorage(_Model):
    """Where the aggregator writes checkpoints and the final model: exactly one of a PVC or an S3 bucket."""

    pvc: PVCStorage | None = None
    s3: S3Storage | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelStorage:
        if (self.pvc is None) == (self.s3 is None):
            raise ValueError("expected exactly one of 'pvc' or 's3'")
        return self


class ListenerType(StrEnum):
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    ROUTE = "Route"
    INGRESS = "Ingress"


class Listener(_Model):
    """How collaborators reach the aggregator from outside the hub."""

    name: DNSLabel = "server"
    type: ListenerType
    port: Annotated[int, Strict(), Field(ge=1, le=65535)]
    host: Annotated[str | None, Field(pattern=_DNS_SUBDOMAIN, max_length=253)] = None
    """The host name of a Route or Ingress listener (required) or of a LoadBalancer one (optional, its DNS name)."""

    @field_validator("port")
    @classmethod
    def _node_port_range(cls, port: int, info: ValidationInfo) -> int:
        if info.data.get("type") is ListenerType.NODE_PORT and not 30000 <= port <= 32767:
            raise ValueError(f"expected a port in the node-port range 30000-32767 for a NodePort listener, got {port}")
        return port

    @field_validator("host")
    @classmethod
    def _host_for_route_and_ingress(cls, host: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind in (ListenerType.ROUTE, ListenerType.INGRESS) and host is None:
            raise ValueError(f"expected a host name for a {kind.value} listener")
        if kind is ListenerType.NODE_PORT and host is not None:
            raise ValueError(
                "expected no host: it applies only to Route, Ingress and LoadBalancer listeners, not NodePort (reached "
                "at the hub nodes' address, fleet controller --node-host)"
            )
        return host


class ClippingSide(StrEnum):
    SERVER = "server"
    CLIENT = "client"


class Clipping(StrEnum):
    FIXED = "fixed"
    ADAPTIVE = "adaptive"


class DifferentialPrivacy(_Model):
    """Central differential privacy with Flower's DP wrappers: every update is clipped to an L2 norm (by the
    aggregator or by each collaborator before it sends), and Gaussian noise is added to the aggregate."""

    side: ClippingSide = ClippingSide.SERVER
    """Who clips each update: the aggregator (server) or each collaborator before sending it (client)."""
    clipping: Clipping = Clipping.FIXED
    """A fixed clipping norm, or one that adapts each round towards targetClippedQuantile (Andrew et al.)."""
    noise_multiplier: Annotated[float, Field(strict=True, gt=0, le=1000)]
    """The Gaussian noise's standard deviation, in units of the clipping norm (1.0 or more for strong privacy)."""
    clipping_norm: Annotated[float, Field(strict=True, gt=0, le=1e6)]
    """The L2 norm each update is clipped to (with adaptive clipping: the first round's)."""
    target_clipped_quantile: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.5
    """Adaptive clipping only: the fraction of updates the norm should clip."""
    clip_norm_learning_rate: Annotated[float, Field(strict=True, gt=0, le=10)] = 0.2
    """Adaptive clipping only: how fast the norm adapts."""
    clipped_count_stddev: Annotated[float | None, Field(strict=True, gt=0, le=1e6)] = None
    """Adaptive clipping only: the noise on the count of clipped updates (Flower's default: the round's
    collaborators / 20); the noise multiplier must stay below twice it."""
    target_delta: Annotated[float, Field(strict=True, gt=0, lt=1)] = 1e-5
    """The delta at which the spent epsilon is reported and the budget is held."""
    epsilon: Annotated[float | None, Field(strict=True, gt=0, le=1e6)] = None
    """The privacy budget: the run stops, Failed, before a round whose release would spend more epsilon (at
    targetDelta, Flower's RDP accountant). Fixed clipping only: Flower 1.41 accounts for no other."""

    @model_validator(mode="after")
    def _runnable_by_flower(self) -> DifferentialPrivacy:
        if self.clipping is Clipping.ADAPTIVE and self.epsilon is not None:
            raise ValueError(
                "expected no epsilon with clipping: adaptive: Flower 1.41's privacy accountant covers fixed "
                "clipping only (its adaptive-clipping wrappers spend an unaccounted budget); use clipping: fixed "
                "for a budget"
            )
        return self


class SecureAggregation(_Model):
    """SecAgg+ (Bell et al.): each collaborator masks its update with pairwise and private masks, and the
    aggregator learns only their sum; the masks' seeds are secret-shared among neighbours, so the round
    survives a collaborator dropping out once reconstructionThreshold of its neighbours still answer."""

    shares: Annotated[int, Strict(), Field(ge=3, le=10000)]
    """Into how many shares each collaborator splits its secrets (itself and shares - 1 neighbours); odd."""
    reconstruction_threshold: Annotated[int, Strict(), Field(ge=2, le=10000)]
    """How many shares rebuild a secret: more is more private, fewer tolerates more dropouts."""

    @field_validator("shares")
    @classmethod
    def _odd_shares(cls, shares: int) -> int:
        if shares % 2 == 0:
            raise ValueError(
                f"expected an odd number: Flower's SecAgg+ gives each collaborator as many neighbours on either "
                f"side and would raise {shares} to {shares + 1}, got {shares}"
            )
        return shares

    @field_validator("reconstruction_threshold")
    @classmethod
    def _below_shares(cls, threshold: int, info: ValidationInfo) -> int:
        shares = info.data.get("shares")
        if shares is not None and threshold >= shares:
            raise ValueError(f"expected fewer than shares ({shares}), got {threshold}")
        return threshold


class Privacy(_Model):
    """What protects the model updates beyond mutual TLS."""

    differential_privacy: DifferentialPrivacy | None = None
    secure_aggregation: SecureAggregation | None = None

    @model_validator(mode="after")
    def _runnable_together(self) -> Privacy:
        dp, secure = self.differential_privacy, self.secure_aggregation
        if dp is not None and secure is not None and dp.side is ClippingSide.SERVER:
            raise ValueError(
                "expected differentialPrivacy.side: client with secureAggregation: server-side clipping needs "
                "each update in clear, which secure aggregation hides from the aggregator"
            )
        if dp is not None and secure is not None:
            raise ValueError(
                "expected differentialPrivacy or secureAggregation, not both: Flower 1.41 runs SecAgg+ only on "
                "its legacy path, and fleet runs differential privacy on its Message API (not yet on the legacy "
                "path)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.differential_privacy is not None or self.secure_aggregation is not None


class Job(_Model):
    """One federated-learning job: what to train, on which data, with how many collaborators."""

    kind: Literal["Job"] = "Job"
    name: DNSLabel
    """The job's name: the FederatedLearning resource and its Placement are named after it."""
    namespace: DNSLabel
    """The hub namespace the job's objects live in."""
    framework: Framework = Framework.FLOWER
    """The federated-learning framework the aggregator and collaborators run."""
    images: Images
    """Container images of the aggregator (server) and the collaborators (client)."""
    rounds: Annotated[int, Strict(), Field(ge=1, le=10000)]
    """Federated rounds: each collaborator trains locally and sends an update once per round."""
    min_available_clients: Annotated[int, Strict(), Field(ge=1, le=10000)]
    """Collaborators that must be available before training starts and in every round."""
    max_clients: Annotated[int, Strict(), Field(ge=1, le=10000)]
    """At most this many clusters are placed (the Placement's numberOfClusters)."""
    dataset: DatasetName
    """The dataset every collaborator must hold, as named in clusters/ under datasets."""
    resources: Resources = Resources()
    """What one collaborator requests; only clusters whose capacity covers it are placed."""
    training: Training = Training()
    """Aggregation strategy and local training settings."""
    storage: ModelStorage
    """Where the aggregator writes checkpoints and the final model."""
    listeners: Annotated[tuple[Listener, ...], Field(min_length=1)]
    """How collaborators reach the aggregator from their clusters."""
    tls: Annotated[bool, Strict()] = True
    """Mutual TLS between aggregator and collaborators; turning it off is refused on governed datasets."""
    cluster_sets: Annotated[tuple[DNSLabel, ...], Field(min_length=1)]
    """The ManagedClusterSets the job may place collaborators in."""
    wait_timeout_seconds: Annotated[int, Strict(), Field(ge=1, le=7 * 86400)] = 1800
    """How long the job may wait for minAvailableClients collaborators before it fails."""
    privacy: Privacy = Field(default_factory=Privacy)
    """Differential privacy and secure aggregation of the model updates."""

    @field_validator("max_clients")
    @classmethod
    def _at_least_min_available(cls, max_clients: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min_available_clients")
        if minimum is not None and max_clients < minimum:
            raise ValueError(f"expected at least minAvailableClients ({minimum}), got {max_clients}")
        return max_clients

    @field_validator("listeners")
    @classmethod
    def _distinct_listener_names(cls, listeners: tuple[Listener, ...], info: ValidationInfo) -> tuple[Listener, ...]:
        names = [listener.name for listener in listeners]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"expected distinct listener names, got {', '.join(repeated)} more than once")
        if info.data.get("framework") is Framework.OPENFL:
            # OpenFL's aggregator listens on the port its collaborators dial, in a pod whose progress sidecar has this
            # one (`fleet.controller.objects.PROGRESS_PORT`).
            taken = [listener.name for listener in listeners if listener.port == AGGREGATOR_POD_PORT]
            if taken:
                raise ValueError(
                    f"expected no listener on port {AGGREGATOR_POD_PORT} with framework: openfl (the aggregator's pod "
                    f"serves its progress there), got {', '.join(taken)}"
                )
        return listeners

    @field_validator("cluster_sets")
    @classmethod
    def _distinct_cluster_sets(cls, sets: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(sets)) != len(sets):
            raise ValueError("expected distinct cluster-set names")
        return sets

    @field_validator("storage")
    @classmethod
    def _storage_the_framework_publishes(cls, storage: ModelStorage, info: ValidationInfo) -> ModelStorage:
        if storage.s3 is not None and info.data.get("framework") is Framework.OPENFL:
            # On the hub Flower's ServerApp publishes the run to the bucket; OpenFL's aggregator writes only to its
            # volume, which an S3 job's pod would lose with it.
            raise ValueError("expected storage.pvc with framework: openfl (S3 storage runs on framework: flower only)")
        return storage

    @field_validator("privacy")
    @classmethod
    def _privacy_fits_the_rounds(cls, privacy: Privacy, info: ValidationInfo) -> Privacy:
        secure, dp = privacy.secure_aggregation, privacy.differential_privacy
        if privacy.enabled and info.data.get("framework") is Framework.OPENFL:
            # The mods and workflows are the Flower ServerApp's and ClientApp's: OpenFL would train without them.
            raise ValueError(
                "expected no differentialPrivacy or secureAggregation with framework: openfl (they run on "
                "framework: flower only; OpenFL would train without them)"
            )
        minimum, maximum = info.data.get("min_available_clients"), info.data.get("max_clients")
        if minimum is None or maximum is None:
            return privacy
        if dp is not None and dp.clipping is Clipping.ADAPTIVE:
            stddev = dp.clipped_count_stddev if dp.clipped_count_stddev is not None else minimum / 20
            if dp.noise_multiplier >= 2 * stddev:
                raise ValueError(
                    f"expected differentialPrivacy.noiseMultiplier below {2 * stddev:g}, twice clippedCountStddev "
                    f"({'as set' if dp.clipped_count_stddev is not None else 'Flower: minAvailableClients / 20'}): "
                    f"Flower's adaptive clipping spends that much of the noise on the clipped count, got "
                    f"{dp.noise_multiplier:g}; raise clippedCountStddev"
                )
        if secure is None:
            return privacy
        if secure.reconstruction_threshold > minimum:
            raise ValueError(
                f"expected secureAggregation.reconstructionThreshold at most minAvailableClients ({minimum}): "
                f"a round of {minimum} collaborators could never rebuild a secret from "
                f"{secure.reconstruction_threshold} shares"
            )
        if secure.shares > maximum:
            raise ValueError(
                f"expected secureAggregation.shares at most maxClients ({maximum}): each share goes to a "
                f"different collaborator of the round, got {secure.shares}"
            )
        return privacy


# --- Cluster --------------------------------------------------------------------------------------------------


class DatasetClaim(_Model):
    path: DataPath
    """Where the data lies on that cluster; delivered as the value of a ClusterClaim."""
    samples: Annotated[int, Strict(), Field(ge=1)]


class Cluster(_Model):
    """A managed cluster's claims: which datasets it holds and where, its labels, its capacity."""

    kind: Literal["Cluster"] = "Cluster"
    name: DNSLabel
    """The ManagedCluster's name on the hub (also its namespace there)."""
    cluster_set: DNSLabel
    """The ManagedClusterSet the cluster belongs to."""
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    """The ManagedCluster's labels (region, tier, ...) that policies select on."""
    datasets: dict[DatasetName, DatasetClaim] = Field(default_factory=dict)
    """Datasets held on the cluster: name -> where the data lies and how many samples it has."""
    capacity: Resources
    """What the cluster can give to collaborators."""


# --- DataLocalityPolicy ---------------------------------------------------------------------------------------


class DifferentialPrivacyRule(_Model):
    max_epsilon: Annotated[float, Field(strict=True, gt=0, le=1e6)]
    """The largest privacy budget (epsilon, at the job's targetDelta) a job may spend."""
    max_delta: Annotated[float, Field(strict=True, gt=0, lt=1)] = 1e-5
    """The largest targetDelta a job may state its epsilon at: without it, a large delta meets any maxEpsilon."""


class LocalityRules(_Model):
    require_tls: Annotated[bool, Strict()] = True
    """Jobs on the governed datasets must keep mutual TLS on."""
    min_clients_per_round: Annotated[int, Strict(), Field(ge=1)] = 1
    """Jobs must aggregate at least this many collaborators per round (minAvailableClients)."""
    egress_only_to_aggregator: Annotated[bool, Strict()] = False
    """Collaborators may reach only DNS and the aggregator (an enforced NetworkPolicy on the spokes)."""
    require_differential_privacy: DifferentialPrivacyRule | None = None
    """Jobs on the governed datasets must use differential privacy with fixed clipping and a budget epsilon of
    at most maxEpsilon."""
    require_secure_aggregation: Annotated[bool, Strict()] = False
    """Jobs on the governed datasets must aggregate with SecAgg+, so the aggregator sees no single update."""


class DataLocalityPolicy(_Model):
    """Which clusters may ever train on which datasets, and how."""

    kind: Literal["DataLocalityPolicy"] = "DataLocalityPolicy"
    name: Annotated[str, Field(min_length=1, max_length=MAX_POLICY_NAME, pattern=_DNS_LABEL)]
    """The policy's name; at most 39 characters, so that the governance Policies rendered from it fit OCM's
    63-character limit once copied into cluster namespaces."""
    datasets: Annotated[tuple[DatasetName, ...], Field(min_length=1)]
    """The datasets this policy governs."""
    allowed_clusters: LabelSelector
    """The only clusters that may ever train on the governed datasets."""
    rules: LocalityRules = LocalityRules()
    """How training on the governed datasets must happen."""
    aggregator_cidrs: tuple[Annotated[str, Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")], ...] = ()
    """With egressOnlyToAggregator: the addresses the aggregator is reached at. Empty allows any address on
    the jobs' listener ports only."""


Definition = Job | Cluster | DataLocalityPolicy


# --- FederatedLearning status ---------------------------------------------------------------------------------
# One shape for the job's progress: `fleet run` writes it to a status file, the controller to the custom
# resource's status subresource, `fleet status` reads either.


class Phase(StrEnum):
    WAITING = "Waiting"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class RoundStatus(_Model):
    round: Annotated[int, Field(ge=1)]
    participants: tuple[str, ...] = ()
    """The clusters whose updates were aggregated in this round."""
    metrics: dict[str, float] = Field(default_factory=dict)
    finished_at: str | None = None
    """RFC 3339 time the round was aggregated."""


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str = ""
    last_transition_time: str


class ListenerStatus(_Model):
    name: str
    type: ListenerType
    port: int
    address: str = ""


MAX_ROUND_HISTORY = 100
"""Status keeps the latest rounds only, so a long job never outgrows an etcd object."""


class FederatedLearningStatus(_Model):
    phase: Phase = Phase.WAITING
    current_round: Annotated[int, Field(ge=0)] = 0
    total_rounds: Annotated[int, Field(ge=0)] = 0
    rounds: Annotated[tuple[RoundStatus, ...], Field(max_length=MAX_ROUND_HISTORY)] = ()
    participating_clusters: tuple[str, ...] = ()
    message: str = ""
    model_path: str = ""
    final_metrics: dict[str, float] = Field(default_factory=dict)
    listeners: tuple[ListenerStatus, ...] = ()
    conditions: tuple[Condition, ...] = ()
    observed_generation: int = 0
    started_at: str | None = None
    finished_at: str | None = None


# --- FederatedLearning spec -----------------------------------------------------------------------------------
# The project's own custom resource keeps the field names of the upstream
# federation-ai.open-cluster-management.io/v1alpha1 FederatedLearning (framework, server.rounds,
# server.minAvailableClients, server.storage, server.listeners, client.placement) and adds what a controller
# needs to run the job without a person: the dataset, maxClients, resources, training settings, TLS, timeouts.


class StorageType(StrEnum):
    PVC = "PersistentVolumeClaim"
    S3 = "S3Bucket"


class S3BucketSpec(_Model):
    bucket_name: str
    prefix: str = ""
    region: str = ""
    credentials_secret: str = ""
    """The Secret (in the job's namespace) whose keys the aggregator gets as AWS_* variables."""
    endpoint: str = ""


class ServerStorageSpec(_Model):
    type: StorageType
    name: str | None = None
    size: Quantity | None = None
    path: str | None = None
    s3: S3BucketSpec | None = None


class ServerSpec(_Model):
    image: str
    rounds: Annotated[int, Field(ge=1)]
    min_available_clients: Annotated[int, Field(ge=1)]
    listeners: tuple[Listener, ...]
    storage: ServerStorageSpec


class ClientSpec(_Model):
    image: str
    placement: dict[str, Any]
    """An OCM Placement spec (cluster.open-cluster-management.io/v1beta1), as the job's Placement carries it."""
    resources: Resources = Resources()


class FederatedLearningSpec(_Model):
    framework: Framework
    server: ServerSpec
    client: ClientSpec
    dataset: DNSLabel
    max_clients: Annotated[int, Field(ge=1)]
    training: Training = Training()
    tls: bool = True
    wait_timeout_seconds: Annotated[int, Field(ge=1)] = 1800
    privacy: Privacy | None = None

    @classmethod
    def from_job(cls, job: Job, placement: dict[str, Any]) -> FederatedLearningSpec:
        if job.storage.pvc is not None:
            pvc = job.storage.pvc
            storage = ServerStorageSpec(type=StorageType.PVC, name=pvc.name, size=pvc.size, path=pvc.path)
        else:
            assert job.storage.s3 is not None  # ModelStorage guarantees exactly one
            s3 = job.storage.s3
            storage = ServerStorageSpec(
                type=StorageType.S3,
                s3=S3BucketSpec(
                    bucket_name=s3.bucket,
                    prefix=s3.prefix,
                    region=s3.region,
                    credentials_secret=s3.credentials_secret,
                    endpoint=s3.endpoint or "",
                ),
            )
        return cls(
            framework=job.framework,
            server=ServerSpec(
                image=job.images.server,
                rounds=job.rounds,
                min_available_clients=job.min_available_clients,
                listeners=job.listeners,
                storage=storage,
            ),
            client=ClientSpec(image=job.images.client, placement=placement, resources=job.resources),
            dataset=job.dataset,
            max_clients=job.max_clients,
            training=job.training,
            tls=job.tls,
            wait_timeout_seconds=job.wait_timeout_seconds,
            privacy=job.privacy if job.privacy.enabled else None,
        )


# --- ManagedClusterLabels -------------------------------------------------------------------------------------
# One per clusters/ file, cluster-scoped, named after the cluster: what Git declares about that ManagedCluster's
# labels. GitOps tools apply and prune it like any object; the controller applies its labels to the
# ManagedCluster under a field manager of its own and removes exactly those when the object goes.


class ManagedClusterLabelsSpec(_Model):
    cluster_set: DNSLabel
    """The ManagedClusterSet the cluster joins (the cluster.open-cluster-management.io/clusterset label)."""
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    """The other labels clusters/<cluster>.yaml declares (region, tier, ...)."""

    @classmethod
    def from_cluster(cls, cluster: Cluster) -> ManagedClusterLabelsSpec:
        return cls(cluster_set=cluster.cluster_set, labels=dict(sorted(cluster.labels.items())))


class ManagedClusterLabelsStatus(_Model):
    observed_generation: int = 0
    applied_labels: dict[str, str] = Field(default_factory=dict)
    """The labels the controller last applied to the ManagedCluster (its field manager owns exactly these)."""
    conditions: tuple[Condition, ...] = ()
    """``Applied``: True once the ManagedCluster carries the labels; False with ``NotRegistered`` (no
    ManagedCluster of that name yet) or ``Refused`` (the hub refused the apply: the message says why)."""
