"""S3 model storage against a real S3 endpoint process: moto's server mode on loopback (an emulator, not AWS),
with its IAM authentication and authorization on (`s3_support`).

A completed run is published whole (its objects, then `latest.json` naming them), replaces the run published
before, and a refused upload, wrong keys included, publishes nothing and says which object and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from fleet.app.storage import MANIFEST, S3Location, StorageError, publish_run, read_manifest
from fleet.errors import InvalidRepository
from fleet.federation.status import STATUS_FILE
from fleet.repository import load_repository
from tests.fleet.federation.federation_support import (
    TINY_APP,
    fleet_run_tiny,
    no_leftovers,
    write_data,
    write_repository,
)
from tests.fleet.federation.s3_support import BUCKET, REGION, Keys, S3Server, s3_server

__all__ = ["no_leftovers", "s3_server"]  # fixtures

PVC = "storage: {pvc: {name: tiny-model, size: 1Gi, path: /models/tiny}}"


def _run_files(folder: Path, model: bytes) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "round-1.pt").write_bytes(b"round one " + model)
    (folder / "metrics.json").write_text('{"final": {"accuracy": 0.5}}\n')
    (folder / "model-card.md").write_text("# Model card\n")
    (folder / "model.pt").write_bytes(model)
    return folder


def test_a_run_is_published_whole_and_replaces_the_one_before(s3_server: S3Server, tmp_path: Path) -> None:
    location = S3Location(BUCKET, "teams/whole", REGION)
    client = s3_server.client(s3_server.writer)
    first = publish_run(_run_files(tmp_path / "first", b"model one"), location, "run-1", client)
    assert first.model_url == f"s3://{BUCKET}/teams/whole/runs/run-1/model.pt" and first.replaced is None

    second = publish_run(_run_files(tmp_path / "second", b"model two"), location, "run-2", client)

    assert second.replaced == "run-1" and not second.warnings
    manifest = read_manifest(location, client)
    assert (
        manifest is not None and manifest["run"] == "run-2" and manifest["model"] == "teams/whole/runs/run-2/model.pt"
    )
    files = ["checkpoints/round-1.pt", "metrics.json", "model-card.md", "model.pt"]
    assert sorted(manifest["objects"]) == files
    for relative, entry in manifest["objects"].items():
        body = s3_server.read(entry["key"])
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == _sha256(tmp_path / "second" / relative)
    # The replaced run is gone, whole: the bucket holds the published run and its manifest only.
    assert s3_server.keys_under("teams/whole/") == sorted(
        ["teams/whole/latest.json", *(f"teams/whole/runs/run-2/{f}" for f in files)]
    )


def test_a_refused_upload_publishes_nothing_and_names_the_object_and_reason(
    s3_server: S3Server, tmp_path: Path
) -> None:
    location = S3Location(BUCKET, "teams/refused", REGION)
    publish_run(_run_files(tmp_path / "first", b"model one"), location, "run-1", s3_server.client(s3_server.writer))
    before = {key: s3_server.read(key) for key in s3_server.keys_under("teams/refused/")}

    # These keys may write everything but a model.pt: the checkpoints and metrics go up, then the model is refused.
    with pytest.raises(StorageError) as refused:
        publish_run(
            _run_files(tmp_path / "second", b"model two"), location, "run-2", s3_server.client(s3_server.no_models)
        )

    message = str(refused.value)
    assert f"s3://{BUCKET}/teams/refused/runs/run-2/model.pt" in message
    assert "AccessDenied" in message
    assert f"nothing was published: s3://{BUCKET}/teams/refused/{MANIFEST} still names run 'run-1'" in message
    # Exactly what was there before, byte for byte: the first run, whole, and no object of the refused one.
    assert {key: s3_server.read(key) for key in s3_server.keys_under("teams/refused/")} == before


def test_wrong_keys_are_refused_by_the_endpoint_and_nothing_is_written(s3_server: S3Server, tmp_path: Path) -> None:
    location = S3Location(BUCKET, "teams/wrong-keys", REGION)
    cases = {
        "SignatureDoesNotMatch": Keys(s3_server.writer.access_key_id, "not-the-secret"),
        "InvalidAccessKeyId": Keys("AKIAUNKNOWNUNKNOWN00", s3_server.writer.secret_access_key),
    }
    for code, keys in cases.items():
        with pytest.raises(StorageError, match=code):
            publish_run(_run_files(tmp_path / code, b"model"), location, "run-1", s3_server.client(keys))
    assert s3_server.keys_under("teams/wrong-keys/") == []
    with pytest.raises(ClientError):  # the emulator really checks: the same keys cannot read either
        s3_server.client(cases["SignatureDoesNotMatch"]).list_objects_v2(Bucket=BUCKET)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("secretAccessKey: abc", "secretAccessKey: credentials never go in Git"),
        ("accessKeyId: AKIAIOSFODNN7EXAMPLE", "accessKeyId: credentials never go in Git"),
        ("endpoint: https://AKIAIOSFODNN7EXAMPLE.example.com", "endpoint: credentials never go in Git"),
    ],
)
def test_a_job_whose_yaml_carries_keys_does_not_load(tmp_path: Path, field: str, expected: str) -> None:
    repo = _s3_repository(tmp_path, "teams/tiny", extra=f", {field}")
    with pytest.raises(InvalidRepository) as invalid:
        load_repository(repo)
    assert "jobs/tiny.yaml" in str(invalid.value) and "storage.s3" in str(invalid.value)
    assert expected in str(invalid.value) and "credentialsSecret" in str(invalid.value)


def test_a_job_without_a_credentials_secret_does_not_load(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"])
    job = repo / "jobs" / "tiny.yaml"
    job.write_text(job.read_text().replace(PVC, "storage: {s3: {bucket: fl-models, region: eu-west-1}}"))
    with pytest.raises(InvalidRepository, match=r"storage\.s3\.credentialsSecret"):
        load_repository(repo)


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_fleet_run_uploads_the_completed_run_to_the_bucket(
    s3_server: S3Server, tmp_path: Path, no_leftovers: None
) -> None:
    _s3_repository(tmp_path, "teams/run-ok")
    write_data(tmp_path / "data", ["alpha", "beta"])
    done = _fleet_run(tmp_path, s3_server.environment_of(s3_server.writer))

    assert done.returncode == 0, done.stderr
    status = json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())
    assert status["phase"] == "Completed"
    manifest = json.loads(s3_server.read("teams/run-ok/latest.json"))
    assert status["modelPath"] == f"s3://{BUCKET}/{manifest['model']}"
    assert f"model: s3://{BUCKET}/teams/run-ok/runs/{manifest['run']}/model.pt" in done.stderr
    assert {"checkpoints/round-1.pt", "checkpoints/round-2.pt", "model.pt", "metrics.json", "model-card.md"} <= set(
        manifest["objects"]
    )
    # What the aggregator wrote is what the bucket holds; the model card is the run's own.
    local = tmp_path / "runs" / "tiny" / "storage" / "s3" / BUCKET / "teams" / "run-ok"
    for relative, entry in manifest["objects"].items():
        assert s3_server.read(entry["key"]) == (local / relative).read_bytes()
    assert "alpha, beta" in s3_server.read(manifest["objects"]["model-card.md"]["key"]).decode()


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_fleet_run_fails_with_the_reason_when_the_bucket_refuses_the_model(
    s3_server: S3Server, tmp_path: Path, no_leftovers: None
) -> None:
    _s3_repository(tmp_path, "teams/run-refused")
    write_data(tmp_path / "data", ["alpha", "beta"])
    done = _fleet_run(tmp_path, s3_server.environment_of(s3_server.no_models))

    assert done.returncode == 1, done.stderr
    assert "job tiny failed" in done.stderr and "AccessDenied" in done.stderr
    status = json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())
    assert status["phase"] == "Failed"
    assert "its files were not published" in status["message"] and "runs/" in status["message"]
    assert f"s3://{BUCKET}/teams/run-refused/{MANIFEST} still names no run" in status["message"]
    # Nothing half-published: no manifest and no object of the run in the bucket, no local copy replaced.
    assert s3_server.keys_under("teams/run-refused/") == []
    assert not (tmp_path / "runs" / "tiny" / "storage").exists()


def _s3_repository(tmp_path: Path, prefix: str, extra: str = "") -> Path:
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"])
    job = repo / "jobs" / "tiny.yaml"
    s3 = f"{{bucket: {BUCKET}, prefix: {prefix}, region: {REGION}, credentialsSecret: tiny-s3{extra}}}"
    job.write_text(job.read_text().replace(PVC, f"storage: {{s3: {s3}}}"))
    return repo


def _fleet_run(tmp_path: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = fleet_run_tiny(tmp_path, "--app", str(TINY_APP))
    env = {**os.environ, **environment}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
