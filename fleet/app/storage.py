"""Publishing a completed run's files (checkpoints, model, metrics, model card) to the job's S3 bucket.

S3 has no transaction over several objects, so a run is published in two steps: every file goes under a folder
of the run's own, ``<prefix>/runs/<run>/``, and then one object, ``<prefix>/latest.json``, names that run and
lists its objects with their sizes and sha256. A single PUT replaces an object whole, so a reader of
``latest.json`` finds either the previous complete run or the new one, never a mix. When an upload is refused
(or anything else fails) before ``latest.json`` is written, the run's objects already uploaded are deleted and
``latest.json`` still names the previous run: nothing is half-published. After a publish the replaced run's
objects are deleted, as a completed local run replaces the job's storage whole.

Credentials come from boto3's own chain, never from the job: on the hub the aggregator's AWS_* variables, from
the Secret the job names (``storage.s3.credentialsSecret``); on a workstation AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and ``~/.aws/credentials``. ``AWS_ENDPOINT_URL_S3`` (boto3's own variable)
points at another endpoint when the job names none.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3Client = Any
"""A boto3 S3 client (boto3 ships no type hints)."""

_BUCKET, _PREFIX, _REGION, _ENDPOINT = "FLEET_S3_BUCKET", "FLEET_S3_PREFIX", "FLEET_S3_REGION", "FLEET_S3_ENDPOINT"
"""On the hub, the aggregator's variables naming the job's bucket (`s3_environment`)."""
_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_SESSION_TOKEN": True}
"""The keys of the job's credentials Secret, and whether each is optional."""
MANIFEST = "latest.json"
"""The one object that says which run is published."""
RUNS = "runs"
_FORMAT = 1


class StorageError(Exception):
    """The run's files could not be published; the message says which object, why, and what stays published."""


@dataclass(frozen=True)
class S3Location:
    """A job's bucket and prefix, and how to reach them."""

    bucket: str
    prefix: str
    region: str
    endpoint: str = ""
    """An S3-compatible endpoint; empty: boto3's choice (AWS, or ``AWS_ENDPOINT_URL_S3``)."""

    @classmethod
    def at(cls, bucket: str, prefix: str, region: str, endpoint: str | None = None) -> S3Location:
        """A job's ``storage.s3`` (or its FederatedLearning's ``server.storage.s3``)."""
        return cls(bucket, prefix.strip("/"), region, endpoint or "")

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> S3Location | None:
        """The bucket `s3_environment` gives the aggregator on the hub; None without one."""
        bucket = environment.get(_BUCKET, "")
        if not bucket:
            return None
        prefix = environment.get(_PREFIX, "").strip("/")
        return cls(bucket, prefix, environment.get(_REGION, ""), environment.get(_ENDPOINT, ""))

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def client(self) -> S3Client:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=120)
        session = boto3.session.Session()
        return session.client("s3", region_name=self.region, endpoint_url=self.endpoint or None, config=config)


@dataclass(frozen=True)
class Published:
    run: str
    model_url: str
    """``s3://<bucket>/<prefix>/runs/<run>/model.pt``."""
    replaced: str | None
    """The run that was published before, whose objects were deleted."""
    warnings: tuple[str, ...] = ()
    """What could not be cleaned up (the new run is published all the same)."""


def run_folder(run: str) -> str:
    return f"{RUNS}/{run}"


def hub_run_name(run: int) -> str:
    """A hub run's folder name: its Flower run id, which the controller records when it submits the run."""
    return f"flower-run-{run}"


def s3_environment(location: S3Location, credentials_secret: str) -> list[dict[str, Any]]:
    """The aggregator container's variables on the hub: the bucket, and the keys from the job's Secret (as
    boto3 reads them), which only this container gets."""
    variables: list[dict[str, Any]] = [
        {"name": _BUCKET, "value": location.bucket},
        {"name": _PREFIX, "value": location.prefix},
        {"name": _REGION, "value": location.region},
    ]
    if location.endpoint:
        variables.append({"name": _ENDPOINT, "value": location.endpoint})
    for key, optional in _SECRET_KEYS.items():
        reference: dict[str, Any] = {"name": credentials_secret, "key": key}
        if optional:
            reference["optional"] = True
        variables.append({"name": key, "valueFrom": {"secretKeyRef": reference}})
    return variables


def publish_from_environment(folder: Path, run: int, environment: Mapping[str, str]) -> Published | None:
    """On the hub: publish the run's files when the aggregator has a bucket (`s3_environment`), else None."""
    location = S3Location.from_environment(environment)
    if location is None:
        return None
    return publish_run(folder, location, hub_run_name(run))


def publish_run(folder: Path, location: S3Location, run: str, client: S3Client | None = None) -> Published:
    """Upload every file under ``folder`` as run ``run`` and make it the published one (`MANIFEST`).

    Raises `StorageError` naming the object and S3's reason, having deleted what it uploaded of this run.
    """
    from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    files = sorted(_files(folder))
    if not any(relative == "model.pt" for relative, _ in files):
        raise StorageError(f"{folder}: expected a model.pt to publish, found none")
    s3 = client or location.client()
    uploaded: list[str] = []
    objects: dict[str, dict[str, Any]] = {}
    current = location.key(MANIFEST)
    previous: dict[str, Any] | None = None
    try:
        previous = read_manifest(location, s3)
        for relative, path in files:
            current = location.key(f"{run_folder(run)}/{relative}")
            s3.upload_file(str(path), location.bucket, current)
            uploaded.append(current)
            objects[relative] = {"key": current, "size": path.stat().st_size, "sha256": _sha256(path)}
        current = location.key(MANIFEST)
        manifest = {
            "format": _FORMAT,
            "run": run,
            "published": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "model": objects["model.pt"]["key"],
            "objects": objects,
        }
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        s3.put_object(Bucket=location.bucket, Key=current, Body=body, ContentType="application/json")
    except (ClientError, BotoCoreError, Boto3Error, OSError, StorageError) as error:
        left = _delete(s3, location.bucket, uploaded)
        still = f"run {previous['run']!r}" if previous else "no run"
        raise StorageError(
            f"upload to s3://{location.bucket}/{current} failed: {_reason(error)}; nothing was published: "
            f"{location.url(MANIFEST)} still names {still}"
            + (f" (and {len(left)} of this run's objects could not be removed: {left[0]} ...)" if left else "")
        ) from error
    warnings: tuple[str, ...] = ()
    replaced = previous["run"] if previous else None
    if previous and replaced != run:
        stale = [str(entry["key"]) for entry in previous.get("objects", {}).values()]
        left = _delete(s3, location.bucket, stale)
        if left:
            warnings = (
                f"the replaced run {replaced!r} left {len(left)} objects, e.g. s3://{location.bucket}/{left[0]}",
            )
    return Published(run, f"s3://{location.bucket}/{objects['model.pt']['key']}", replaced, warnings)


def read_manifest(location: S3Location, client: S3Client | None = None) -> dict[str, Any] | None:
    """The published run's manifest, or None when no run was published yet."""
    from botocore.exceptions import ClientError

    s3 = client or location.client()
    try:
        answer = s3.get_object(Bucket=location.bucket, Key=location.key(MANIFEST))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    data: Any = json.loads(answer["Body"].read())
    if not isinstance(data, dict) or not isinstance(data.get("run"), str):
        raise StorageError(f"{location.url(MANIFEST)}: expected a manifest naming a run, got {str(data)[:200]!r}")
    return data


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """The run's output under ``folder``: dot-entries are state (the SuperLink's database), never published."""
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            yield relative.as_posix(), path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _delete(s3: S3Client, bucket: str, keys: list[str]) -> list[str]:
    """Delete ``keys``; the ones that are still there."""
    left: list[str] = []
    for key in keys:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except Exception:  # best effort: the caller reports what is left
            left.append(key)
    return left


def _reason(error: BaseException) -> str:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return f"{detail.get('Code', 'error')}: {detail.get('Message', str(error))}"
    if isinstance(error, S3UploadFailedError | StorageError):
        # boto3's message already says which file, which object and S3's answer (code and message).
        return str(error)
    return f"{type(error).__name__}: {error}"


__all__ = [
    "MANIFEST",
    "Published",
    "S3Location",
    "StorageError",
    "hub_run_name",
    "publish_from_environment",
    "publish_run",
    "read_manifest",
    "run_folder",
    "s3_environment",
]
