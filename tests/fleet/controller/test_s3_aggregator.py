"""S3 storage on the hub: the aggregator container the controller writes gets the job's bucket and, from the
Secret the job names, its keys (nothing else gets them, and no key is in any object); fleet's real ServerApp,
with exactly that container's environment as a kubelet gives it, publishes the run to the emulated bucket (moto's
server mode on loopback, `tests/fleet/federation/s3_support.py`) where the controller says the model is, and a
refused upload fails the run with S3's reason, publishing nothing.

Only the Grid is in memory (its nodes run fleet's real ClientApp); the endpoint is a real S3 server process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleet.app.server_app import FederationError
from fleet.app.storage import MANIFEST
from fleet.controller.objects import SUPERLINK_STATE, JobRef, federation_objects, model_path
from fleet.models import FederatedLearningSpec, ModelStorage, S3Storage
from tests.fleet.app.test_server_app import FakeGrid, _nodes, _run, _settings, _task_identity, partitions
from tests.fleet.federation.s3_support import BUCKET, REGION, Keys, S3Server, s3_server

from .conftest import job

__all__ = ["_task_identity", "partitions", "s3_server"]  # fixtures

SECRET = "digits-s3"
JOB = JobRef("digits", "fl-digits", "uid-1")


def _spec(prefix: str) -> FederatedLearningSpec:
    storage = ModelStorage(s3=S3Storage(bucket=BUCKET, prefix=prefix, region=REGION, credentials_secret=SECRET))
    return FederatedLearningSpec.from_job(job(storage=storage, tls=False), {"clusterSets": ["eu"]})


def _containers(spec: FederatedLearningSpec) -> dict[str, dict[str, Any]]:
    deployment = next(o for o in federation_objects(spec, JOB, None, replicas=1) if o["kind"] == "Deployment")
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def _kubelet_environment(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """What a kubelet gives the container: values as written, secretKeyRef from the Secret (optional may miss)."""
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        value = secrets[reference["name"]].get(reference["key"])
        if value is None:
            assert reference.get("optional"), (
                f"{variable['name']}: Secret {reference['name']} has no {reference['key']}"
            )
            continue
        env[variable["name"]] = value
    return env


def test_only_the_aggregator_gets_the_bucket_and_the_secrets_keys() -> None:
    containers = _containers(_spec("teams/digits"))
    executor = {v["name"]: v for v in containers["executor"]["env"]}
    assert executor["FLEET_S3_BUCKET"] == {"name": "FLEET_S3_BUCKET", "value": BUCKET}
    assert executor["FLEET_S3_PREFIX"]["value"] == "teams/digits"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert executor[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}
    assert executor["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    for name, container in containers.items():
        if name != "executor":
            assert not any(v["name"].startswith(("AWS_", "FLEET_S3_")) for v in container.get("env", [])), name


def _run_on_hub(
    tmp_path: Path, partitions: dict[str, Path], server: S3Server, keys: Keys, prefix: str, monkeypatch: Any
) -> tuple[FederatedLearningSpec, Path, FakeGrid]:
    spec = _spec(prefix)
    secret = {SECRET: {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key}}
    environment = _kubelet_environment(_containers(spec)["executor"], secret)
    # The hub's network reaches the emulator; a job would name its endpoint (https) in storage.s3.endpoint.
    environment["AWS_ENDPOINT_URL_S3"] = server.endpoint
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    return spec, tmp_path / "model", grid


def test_the_servers_run_is_published_where_the_controller_says_the_model_is(
    tmp_path: Path, partitions: dict[str, Path], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, model_dir, grid = _run_on_hub(tmp_path, partitions, s3_server, s3_server.writer, "hub/ok", monkeypatch)
    # The SuperLink's database shares the job's volume (as the controller places it): it is state, never published.
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / SUPERLINK_STATE).write_bytes(b"SQLite format 3\x00 nodes and their public keys")
    _run(grid, _settings(tmp_path, partitions, num_rounds=1))

    events = [json.loads(line) for line in (model_dir / "progress.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "completed"
    url = model_path(spec, JOB, grid.run.run_id)
    key = url.removeprefix(f"s3://{BUCKET}/")
    assert s3_server.read(key) == (model_dir / "model.pt").read_bytes()
    manifest = json.loads(s3_server.read(f"hub/ok/{MANIFEST}"))
    assert manifest["model"] == key
    assert set(manifest["objects"]) == {"checkpoints/round-1.pt", "metrics.json", "model.pt", "progress.jsonl"}
    # The published metrics are the final ones: the upload comes after them, before the completed event.
    metrics = json.loads(s3_server.read(manifest["objects"]["metrics.json"]["key"]))
    assert metrics["final"] == events[-1]["metrics"]


def test_a_refused_upload_fails_the_servers_run_with_the_reason(
    tmp_path: Path, partitions: dict[str, Path], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model_dir, grid = _run_on_hub(tmp_path, partitions, s3_server, s3_server.no_models, "hub/refused", monkeypatch)
    with pytest.raises(FederationError, match="not published"):
        _run(grid, _settings(tmp_path, partitions, num_rounds=1))

    events = [json.loads(line) for line in (model_dir / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("completed") == 0
    reason = events[-1]["reason"]
    assert events[-1]["event"] == "failed" and "AccessDenied" in reason and "model.pt" in reason
    assert f"s3://{BUCKET}/hub/refused/{MANIFEST} still names no run" in reason
    assert s3_server.keys_under("hub/refused/") == []
