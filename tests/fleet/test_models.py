"""The definitions' own rules, tested on the models directly (the loader's messages: test_repository.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from fleet.models import (
    Clipping,
    ClippingSide,
    Cluster,
    DataLocalityPolicy,
    FederatedLearningSpec,
    FederatedLearningStatus,
    Framework,
    Job,
    LabelSelector,
    ListenerType,
    Phase,
    Privacy,
    Resources,
    SelectorOperator,
    Strategy,
)
from fleet.quantity import Quantity

ROOT = Path(__file__).resolve().parents[2]


def _example(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))
    return document


def _job(**changes: Any) -> dict[str, Any]:
    return {**_example("jobs/mnist-digits.yaml"), **changes}


def _cluster(**changes: Any) -> dict[str, Any]:
    return {**_example("clusters/eu-west-hospital.yaml"), **changes}


def _errors(model: type[BaseModel], document: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(document)
    errors = [(tuple(e["loc"]), e["msg"], e["type"]) for e in raised.value.errors()]
    # A list whose items failed also calls itself too short (pydantic counts the valid items only); the
    # loader drops that echo, and so do these tests.
    return [
        (loc, message)
        for loc, message, kind in errors
        if not (kind == "too_short" and any(other[: len(loc)] == loc and other != loc for other, _, _ in errors))
    ]


# --- the example, read as the models see it -------------------------------------------------------------------


def test_the_example_job_reads_as_written() -> None:
    job = Job.model_validate(_example("jobs/mnist-digits.yaml"))
    assert job.kind == "Job"
    assert job.name == "mnist-digits"
    assert job.framework is Framework.FLOWER
    assert (job.rounds, job.min_available_clients, job.max_clients) == (5, 2, 3)
    assert job.resources.cpu == Quantity("0.5")
    assert job.resources.memory == Quantity("1Gi")
    assert job.training.strategy is Strategy.FEDAVG
    assert job.training.round_timeout_seconds == 300
    assert job.storage.pvc is not None
    assert job.storage.s3 is None
    assert job.listeners[0].type is ListenerType.NODE_PORT
    assert job.cluster_sets == ("research-eu", "research-us")


def test_defaults_apply_when_fields_are_left_out() -> None:
    document = _job()
    for optional in ("framework", "resources", "training", "tls"):
        del document[optional]
    job = Job.model_validate(document)
    assert job.framework is Framework.FLOWER
    assert job.tls is True  # TLS is on unless the job turns it off
    assert job.resources == Resources(cpu=Quantity("0"), memory=Quantity("0"), gpu=0)
    assert job.training.strategy is Strategy.FEDAVG
    assert job.training.proximal_mu == 0
    assert job.wait_timeout_seconds == 1800
    assert job.listeners[0].name == "server"


def test_python_names_work_too_and_dump_back_to_yaml_names() -> None:
    job = Job.model_validate(_job())
    dumped = job.model_dump(mode="json", by_alias=True)
    assert "minAvailableClients" in dumped
    assert dumped["resources"] == {"cpu": "500m", "memory": "1Gi", "gpu": 0}
    assert Job.model_validate(dumped) == job
    by_python_name = Job.model_validate(job.model_dump(mode="python"))
    assert by_python_name == job


def test_definitions_are_frozen() -> None:
    job = Job.model_validate(_job())
    with pytest.raises(ValidationError):
        job.rounds = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "example"),
    [
        (Job, "jobs/mnist-digits.yaml"),
        (Cluster, "clusters/eu-west-hospital.yaml"),
        (DataLocalityPolicy, "policies/digits-residency.yaml"),
    ],
)
def test_kind_must_match_the_folder(model: type[BaseModel], example: str) -> None:
    document = _example(example)
    assert model.model_validate({**document, "kind": model.__name__})
    ((loc, _),) = _errors(model, {**document, "kind": "Something"})
    assert loc == ("kind",)


# --- Kubernetes names and labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "mnist-digits", "a1", "1a", "x" * 63, "a-b-c"])
def test_dns_labels_accepted(name: str) -> None:
    assert Job.model_validate(_job(name=name)).name == name


@pytest.mark.parametrize(
    "name", ["", "A", "mnist_digits", "-a", "a-", "a.b", "x" * 64, "a b", "é", "a\n", " a", "mnist-digits\n"]
)
def test_dns_labels_refused(name: str) -> None:
    ((loc, _),) = _errors(Job, _job(name=name))
    assert loc == ("name",)


@pytest.mark.parametrize(
    "key",
    ["region", "topology.kubernetes.io/region", "example.com/a_b.c-d", "a", "A1", "x" * 63, "x" * 253 + "/y"],
)
def test_label_keys_accepted(key: str) -> None:
    assert key in Cluster.model_validate(_cluster(labels={key: "v"})).labels


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/a",
        "a/",
        "Example.com/a",
        "ex_ample.com/a",
        "x" * 64,
        "-a",
        "a-",
        "a b",
        "x" * 254 + "/y",
        "a/b/c",
        "tier\n",  # a trailing newline must not pass for the end of the key
        "example.com\n/tier",
    ],
)
def test_label_keys_refused(key: str) -> None:
    ((loc, message),) = _errors(Cluster, _cluster(labels={key: "v"}))
    assert loc[0] == "labels"
    assert "expected a label key" in message


@pytest.mark.parametrize("value", ["", "eu-west", "a", "A.b_c-d", "x" * 63, "1"])
def test_label_values_accepted(value: str) -> None:
    assert Cluster.model_validate(_cluster(labels={"k": value})).labels["k"] == value


@pytest.mark.parametrize("value", ["eu west", "-a", "a-", "x" * 64, "a/b", "é", "a\n"])
def test_label_values_refused(value: str) -> None:
    ((loc, _),) = _errors(Cluster, _cluster(labels={"k": value}))
    assert loc == ("labels", "k")


# --- label selectors ------------------------------------------------------------------------------------------


def _selector(**fields: Any) -> LabelSelector:
    return LabelSelector.model_validate(fields)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"region": "eu-west"}}, {"region": "eu-west", "tier": "x"}, True),
        ({"matchLabels": {"region": "eu-west"}}, {"region": "eu-central"}, False),
        ({"matchLabels": {"region": "eu-west"}}, {}, False),
        ({"matchExpressions": [{"key": "region", "operator": "In", "values": ["a", "b"]}]}, {"region": "b"}, True),
        ({"matchExpressions": [{"key": "region", "operator": "In", "values": ["a"]}]}, {"region": "c"}, False),
        ({"matchExpressions": [{"key": "region", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["a"]}]}, {"region": "c"}, True),
        ({"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["a"]}]}, {"region": "a"}, False),
        ({"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
        (
            {
                "matchLabels": {"tier": "research"},
                "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu-west"]}],
            },
            {"tier": "research", "region": "eu-central"},
            False,  # the terms are ANDed
        ),
    ],
)
def test_selectors_match_as_kubernetes_does(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert _selector(**selector).matches(labels) is matches


@pytest.mark.parametrize(
    ("requirement", "phrase"),
    [
        ({"key": "region", "operator": "In"}, "expected a non-empty list for operator In"),
        ({"key": "region", "operator": "NotIn", "values": []}, "expected a non-empty list for operator NotIn"),
        ({"key": "region", "operator": "Exists", "values": ["a"]}, "expected no values for operator Exists"),
        ({"key": "region", "operator": "DoesNotExist", "values": ["a"]}, "expected no values for operator DoesNot"),
    ],
)
def test_selector_values_must_fit_the_operator(requirement: dict[str, Any], phrase: str) -> None:
    ((loc, message),) = _errors(LabelSelector, {"matchExpressions": [requirement]})
    assert loc == ("matchExpressions", 0, "values")
    assert phrase in message


def test_an_unknown_operator_is_reported_once() -> None:
    ((loc, _),) = _errors(LabelSelector, {"matchExpressions": [{"key": "a", "operator": "Contains"}]})
    assert loc == ("matchExpressions", 0, "operator")
    assert [o.value for o in SelectorOperator] == ["In", "NotIn", "Exists", "DoesNotExist"]


# --- resources ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "capacity", "fits"),
    [
        ({"cpu": "500m", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}, True),
        ({"cpu": "2", "memory": "1Gi"}, {"cpu": "1999m", "memory": "8Gi"}, False),
        ({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1G"}, False),  # 1Gi > 1G
        ({"cpu": "1", "memory": "1G"}, {"cpu": "1", "memory": "1Gi"}, True),
        ({"gpu": 1}, {"cpu": "8", "memory": "8Gi"}, False),
        ({"gpu": 1}, {"gpu": 2}, True),
        ({}, {}, True),
    ],
)
def test_resources_fit_by_value(request_: dict[str, Any], capacity: dict[str, Any], fits: bool) -> None:
    assert Resources.model_validate(request_).fits_within(Resources.model_validate(capacity)) is fits


@pytest.mark.parametrize("gpu", [-1, "1", 1.0, True])
def test_gpus_are_whole_non_negative_numbers(gpu: object) -> None:
    ((loc, _),) = _errors(Resources, {"gpu": gpu})
    assert loc == ("gpu",)


# --- job rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rounds", "5"),
        ("rounds", 5.0),
        ("rounds", True),
        ("rounds", 0),
        ("rounds", 10001),
        ("minAvailableClients", 0),
        ("maxClients", "3"),
        ("tls", "yes"),
        ("tls", 1),
        ("framework", "tensorflow"),
        ("framework", "Flower"),
        ("dataset", "Digits"),
        ("clusterSets", []),
        ("clusterSets", "research-eu"),
        ("listeners", []),
        ("waitTimeoutSeconds", 0),
    ],
)
def test_job_fields_are_strict(field: str, value: object) -> None:
    ((loc, _),) = _errors(Job, _job(**{field: value}))
    assert loc[0] == field


def test_min_available_clients_at_most_max_clients() -> None:
    assert Job.model_validate(_job(minAvailableClients=3, maxClients=3))
    ((loc, message),) = _errors(Job, _job(minAvailableClients=4, maxClients=3))
    assert loc == ("maxClients",)
    assert "minAvailableClients (4)" in message


@pytest.mark.parametrize(
    ("training", "loc"),
    [
        ({"strategy": "fedprox"}, ("training", "proximal_mu")),
        ({"strategy": "fedprox", "proximalMu": 0}, ("training", "proximalMu")),
        ({"strategy": "fedavg", "proximalMu": 0.1}, ("training", "proximalMu")),
        ({"strategy": "scaffold"}, ("training", "strategy")),
        ({"learningRate": 0}, ("training", "learningRate")),
        ({"learningRate": "0.1"}, ("training", "learningRate")),
        ({"fractionTrain": 1.5}, ("training", "fractionTrain")),
        ({"localEpochs": 0}, ("training", "localEpochs")),
        ({"batchSize": 0}, ("training", "batchSize")),
        ({"roundTimeoutSeconds": 86401}, ("training", "roundTimeoutSeconds")),
    ],
)
def test_training_rules(training: dict[str, Any], loc: tuple[str, ...]) -> None:
    ((found, _),) = _errors(Job, _job(training=training))
    assert found == loc


def test_fedprox_with_a_proximal_term_is_valid() -> None:
    job = Job.model_validate(_job(training={"strategy": "fedprox", "proximalMu": 0.01}))
    assert job.training.strategy is Strategy.FEDPROX
    assert job.training.proximal_mu == 0.01


@pytest.mark.parametrize(
    "storage",
    [
        {},
        {"pvc": None, "s3": None},
        {
            "pvc": {"name": "m", "size": "1Gi", "path": "/m"},
            "s3": {"bucket": "fleet-models", "region": "eu-west-1", "credentialsSecret": "s3"},
        },
    ],
)
def test_storage_is_exactly_one_of_pvc_or_s3(storage: dict[str, Any]) -> None:
    ((loc, message),) = _errors(Job, _job(storage=storage))
    assert loc == ("storage",)
    assert "exactly one of 'pvc' or 's3'" in message


@pytest.mark.parametrize(
    ("storage", "loc"),
    [
        ({"pvc": {"name": "m", "size": "0", "path": "/m"}}, ("storage", "pvc", "size")),
        ({"pvc": {"name": "m", "size": "1Gi", "path": "m"}}, ("storage", "pvc", "path")),
        ({"pvc": {"name": "m", "size": "1Gi", "path": "/models/.."}}, ("storage", "pvc", "path")),
        ({"pvc": {"name": "M", "size": "1Gi", "path": "/m"}}, ("storage", "pvc", "name")),
        ({"s3": {"bucket": "ab", "region": "eu-west-1", "credentialsSecret": "s3"}}, ("storage", "s3", "bucket")),
        ({"s3": {"bucket": "Fleet", "region": "eu-west-1", "credentialsSecret": "s3"}}, ("storage", "s3", "bucket")),
        ({"s3": {"bucket": "fleet-models", "credentialsSecret": "s3"}}, ("storage", "s3", "region")),
        ({"s3": {"bucket": "fleet-models", "region": "eu-west-1"}}, ("storage", "s3", "credentialsSecret")),
        (
            {"s3": {"bucket": "b3t", "region": "r", "credentialsSecret": "s3", "endpoint": "http://minio:9000"}},
            ("storage", "s3", "endpoint"),
        ),
    ],
)
def test_storage_fields(storage: dict[str, Any], loc: tuple[str, ...]) -> None:
    ((found, _),) = _errors(Job, _job(storage=storage))
    assert found == loc


@pytest.mark.parametrize(
    "listener",
    [
        {"type": "NodePort", "port": 30000},
        {"type": "NodePort", "port": 32767},
        {"type": "LoadBalancer", "port": 443},
        {"type": "LoadBalancer", "port": 443, "host": "fl.example.org"},  # the DNS name published for it
        {"type": "Route", "port": 443, "host": "fl.example.org"},
        {"type": "Ingress", "port": 443, "host": "fl.example.org"},
    ],
)
def test_listeners_accepted(listener: dict[str, Any]) -> None:
    assert Job.model_validate(_job(listeners=[listener])).listeners[0].port == listener["port"]


@pytest.mark.parametrize(
    ("listener", "loc"),
    [
        ({"type": "NodePort", "port": 29999}, ("listeners", 0, "port")),
        ({"type": "NodePort", "port": 32768}, ("listeners", 0, "port")),
        ({"type": "LoadBalancer", "port": 0}, ("listeners", 0, "port")),
        ({"type": "LoadBalancer", "port": 65536}, ("listeners", 0, "port")),
        ({"type": "Route", "port": 443}, ("listeners", 0, "host")),
        ({"type": "Ingress", "port": 443}, ("listeners", 0, "host")),
        ({"type": "NodePort", "port": 30093, "host": "fl.example.org"}, ("listeners", 0, "host")),
        ({"type": "Route", "port": 443, "host": "FL.example.org"}, ("listeners", 0, "host")),
        ({"type": "ClusterIP", "port": 443}, ("listeners", 0, "type")),
        ({"port": 443}, ("listeners", 0, "type")),
    ],
)
def test_listeners_refused(listener: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    assert [found for found, _ in _errors(Job, _job(listeners=[listener]))] == [loc]


def test_listener_names_and_cluster_sets_are_distinct() -> None:
    twice = [{"type": "LoadBalancer", "port": 1}, {"type": "LoadBalancer", "port": 2}]
    ((loc, message),) = _errors(Job, _job(listeners=twice))
    assert loc == ("listeners",)
    assert "server" in message
    ((loc, _),) = _errors(Job, _job(clusterSets=["a", "a"]))
    assert loc == ("clusterSets",)


def test_every_error_of_a_document_is_reported() -> None:
    errors = _errors(Job, _job(rounds="5", tls="yes", framework="tensorflow", epochs=3))
    assert sorted(loc for loc, _ in errors) == [("epochs",), ("framework",), ("rounds",), ("tls",)]


# --- cluster and policy ---------------------------------------------------------------------------------------


def test_cluster_claims() -> None:
    cluster = Cluster.model_validate(_example("clusters/eu-west-university.yaml"))
    assert sorted(cluster.datasets) == ["digits", "mnist"]
    assert cluster.datasets["mnist"].samples == 20000
    assert cluster.capacity.cpu == Quantity("4")
    assert Cluster.model_validate(_example("clusters/us-west-edge.yaml")).datasets == {}


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"datasets": {"digits": {"path": "/d"}}}, ("datasets", "digits", "samples")),
        ({"datasets": {"digits": {"path": "/d", "samples": 0}}}, ("datasets", "digits", "samples")),
        ({"datasets": {"digits": {"path": "", "samples": 1}}}, ("datasets", "digits", "path")),
        ({"datasets": {"digits": {"path": "/data/../../etc", "samples": 1}}}, ("datasets", "digits", "path")),
        ({"datasets": {"Digits": {"path": "/d", "samples": 1}}}, ("datasets", "Digits", "[key]")),
        ({"datasets": ["digits"]}, ("datasets",)),
        ({"capacity": {"cpu": "4 Gi"}}, ("capacity", "cpu")),
        ({"capacity": None}, ("capacity",)),
        ({"clusterSet": "Research"}, ("clusterSet",)),
        ({"region": "eu-west"}, ("region",)),
    ],
)
def test_cluster_rules(changes: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert [found for found, _ in _errors(Cluster, _cluster(**changes))] == [loc]


def test_the_example_policy() -> None:
    policy = DataLocalityPolicy.model_validate(_example("policies/digits-residency.yaml"))
    assert policy.datasets == ("digits",)
    assert policy.rules.require_tls is True
    assert policy.rules.min_clients_per_round == 2
    assert policy.allowed_clusters.matches({"region": "eu-west"})
    assert not policy.allowed_clusters.matches({"region": "us-east"})


def test_policy_defaults_require_tls() -> None:
    policy = DataLocalityPolicy.model_validate({"name": "p", "datasets": ["d"], "allowedClusters": {}})
    assert policy.rules.require_tls is True
    assert policy.rules.egress_only_to_aggregator is False
    assert policy.allowed_clusters.matches({})


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"datasets": []}, ("datasets",)),
        ({"datasets": ["Digits"]}, ("datasets", 0)),
        ({"allowedClusters": None}, ("allowedClusters",)),
        ({"rules": {"minClientsPerRound": 0}}, ("rules", "minClientsPerRound")),
        ({"rules": {"requireTls": "true"}}, ("rules", "requireTls")),
        ({"rules": {"requireTLS": True}}, ("rules", "requireTLS")),
        ({"aggregatorCidrs": ["10.0.0.1"]}, ("aggregatorCidrs", 0)),
    ],
)
def test_policy_rules(changes: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    document = {**_example("policies/digits-residency.yaml"), **changes}
    assert [found for found, _ in _errors(DataLocalityPolicy, document)] == [loc]


# --- status ---------------------------------------------------------------------------------------------------


def test_status_round_trips_through_json() -> None:
    status = FederatedLearningStatus.model_validate(
        {
            "phase": "Running",
            "currentRound": 2,
            "totalRounds": 5,
            "rounds": [{"round": 1, "participants": ["a", "b"], "metrics": {"accuracy": 0.8}}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "RoundsRunning",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    )
    assert status.phase is Phase.RUNNING
    dumped = status.model_dump(mode="json", by_alias=True)
    assert dumped["currentRound"] == 2
    assert FederatedLearningStatus.model_validate(dumped) == status


def test_status_keeps_at_most_a_hundred_rounds() -> None:
    rounds = [{"round": n} for n in range(1, 102)]
    ((loc, _),) = _errors(FederatedLearningStatus, {"rounds": rounds})
    assert loc == ("rounds",)
    assert len(FederatedLearningStatus.model_validate({"rounds": rounds[:100]}).rounds) == 100


@pytest.mark.parametrize("reason", ["", "has space", "1Leading", "Trailing,"])
def test_condition_reasons_are_identifiers(reason: str) -> None:
    condition = {"type": "Ready", "status": "True", "reason": reason, "lastTransitionTime": "t"}
    ((loc, _),) = _errors(FederatedLearningStatus, {"conditions": [condition]})
    assert loc == ("conditions", 0, "reason")


IMAGE_REFERENCES = {
    "ghcr.io/fleet-fl/fleet-app:0.1.0": True,
    "python:3.11-slim": True,
    "localhost:5000/team/app@sha256:" + "a" * 64: True,
    "registry.example.com/x/y:tag@sha256:" + "0" * 64: True,
    "[::1]:5000/app": True,
    "HTTP://Bad::Image::": False,
    "repo@sha256:xyz": False,
    "a//b": False,
    "app:": False,
    "-app": False,
    "ghcr.io/fleet app": False,
}


@pytest.mark.parametrize(("reference", "valid"), sorted(IMAGE_REFERENCES.items()))
def test_image_references_follow_the_oci_grammar_in_the_model_and_its_schema(reference: str, valid: bool) -> None:
    import jsonschema

    from fleet.models import Images

    schema = Images.model_json_schema(by_alias=True)["properties"]["server"]
    assert jsonschema.Draft202012Validator(schema).is_valid(reference) is valid
    try:
        Images.model_validate({"server": reference, "client": reference})
    except ValueError:
        assert not valid
    else:
        assert valid


def test_a_digest_must_have_its_algorithms_length() -> None:
    from fleet.models import Images

    with pytest.raises(ValueError, match="sha256 digest of 64 hex digits"):
        Images.model_validate({"server": "app@sha256:" + "a" * 40, "client": "app"})


# --- privacy ----------------------------------------------------------------------------------------------------

_DP = {"noiseMultiplier": 1.0, "clippingNorm": 0.5}


def test_privacy_is_off_unless_asked_and_the_spec_carries_it_only_then() -> None:
    job = Job.model_validate(_job())
    assert job.privacy == Privacy() and not job.privacy.enabled
    assert FederatedLearningSpec.from_job(job, {}).privacy is None  # rendered manifests of other jobs unchanged
    private = Job.model_validate(_job(privacy={"differentialPrivacy": {**_DP, "epsilon": 4}}))
    dp = private.privacy.differential_privacy
    assert dp is not None
    assert (dp.side, dp.clipping, dp.target_delta, dp.epsilon) == (ClippingSide.SERVER, Clipping.FIXED, 1e-5, 4)
    assert FederatedLearningSpec.from_job(private, {}).privacy == private.privacy


@pytest.mark.parametrize(
    ("privacy", "loc", "phrase"),
    [
        ({"differentialPrivacy": {"clippingNorm": 1.0}}, ("privacy", "differentialPrivacy", "noiseMultiplier"), ""),
        (
            {"differentialPrivacy": {**_DP, "noiseMultiplier": 0}},
            ("privacy", "differentialPrivacy", "noiseMultiplier"),
            "",
        ),
        ({"differentialPrivacy": {**_DP, "targetDelta": 1}}, ("privacy", "differentialPrivacy", "targetDelta"), ""),
        ({"differentialPrivacy": {**_DP, "side": "both"}}, ("privacy", "differentialPrivacy", "side"), ""),
        ({"differentialPrivacy": {**_DP, "epsilon": "3"}}, ("privacy", "differentialPrivacy", "epsilon"), ""),
        (
            {"differentialPrivacy": {**_DP, "clipping": "adaptive", "clippedCountStddev": 1.0, "epsilon": 3}},
            ("privacy", "differentialPrivacy"),
            "accountant",
        ),
        (
            {"secureAggregation": {"shares": 4, "reconstructionThreshold": 2}},
            ("privacy", "secureAggregation", "shares"),
            "odd",
        ),
        ({"secureAggregation": {"shares": 3}}, ("privacy", "secureAggregation", "reconstructionThreshold"), ""),
        (
            {"differentialPrivacy": _DP, "secureAggregation": {"shares": 3, "reconstructionThreshold": 2}},
            ("privacy",),
            "in clear",
        ),
    ],
)
def test_privacy_rules(privacy: dict[str, Any], loc: tuple[str, ...], phrase: str) -> None:
    errors = _errors(Job, _job(privacy=privacy))
    assert [e[0] for e in errors] == [loc]
    assert phrase in errors[0][1]


def test_secure_aggregation_fits_the_job_s_collaborators() -> None:
    secure = {"secureAggregation": {"shares": 3, "reconstructionThreshold": 2}}
    assert Job.model_validate(_job(privacy=secure)).privacy.secure_aggregation is not None
    errors = _errors(Job, _job(privacy=secure, minAvailableClients=1, maxClients=3))
    assert errors[0][0] == ("privacy",) and "reconstructionThreshold at most minAvailableClients (1)" in errors[0][1]


def test_policy_privacy_rules() -> None:
    rules = {"requireDifferentialPrivacy": {"maxEpsilon": 2.5}, "requireSecureAggregation": True}
    policy = DataLocalityPolicy.model_validate({**_example("policies/digits-residency.yaml"), "rules": rules})
    assert policy.rules.require_differential_privacy is not None
    assert policy.rules.require_differential_privacy.max_epsilon == 2.5
    assert policy.rules.require_secure_aggregation is True
    defaults = DataLocalityPolicy.model_validate(_example("policies/digits-residency.yaml")).rules
    assert defaults.require_differential_privacy is None and defaults.require_secure_aggregation is False


@pytest.mark.parametrize(
    "privacy",
    [
        {"differentialPrivacy": {"noiseMultiplier": 1.0, "clippingNorm": 0.5}},
        {"secureAggregation": {"shares": 3, "reconstructionThreshold": 2}},
    ],
)
def test_privacy_options_do_not_load_with_openfl(privacy: dict[str, Any]) -> None:
    # Flower's mods and workflows carry them; an OpenFL federation would train without, so the job is refused at
    # load (fleet validate, plan and render say so), not when a run starts.
    [(location, message)] = _errors(Job, _job(framework="openfl", privacy=privacy))
    assert location == ("privacy",)
    assert "with framework: openfl" in message and "flower only" in message
    Job.model_validate(_job(framework="flower", privacy=privacy))


def test_s3_storage_does_not_load_with_openfl() -> None:
    # On the hub OpenFL's aggregator writes only to its volume: an S3 job would complete pointing at a bucket object
    # nothing published, its model lost with the pod.
    s3 = {"s3": {"bucket": "models", "region": "eu-west-1", "credentialsSecret": "s3-keys"}}
    [(location, message)] = _errors(Job, _job(framework="openfl", storage=s3))
    assert location == ("storage",)
    assert "expected storage.pvc with framework: openfl" in message
    Job.model_validate(_job(framework="flower", storage=s3))


def test_an_openfl_listener_may_not_take_the_port_of_the_aggregator_pod_s_progress_sidecar() -> None:
    from fleet.controller.objects import PROGRESS_PORT

    listeners = [{"name": "lb", "type": "LoadBalancer", "port": PROGRESS_PORT}]
    [(location, message)] = _errors(Job, _job(framework="openfl", listeners=listeners))
    assert location == ("listeners",)
    assert f"expected no listener on port {PROGRESS_PORT} with framework: openfl" in message and "lb" in message
    Job.model_validate(_job(framework="flower", listeners=listeners))  # Flower's SuperLink listens on its own port
