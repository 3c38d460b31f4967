"""An S3 endpoint for the storage tests: moto's server mode (an emulator of S3, not AWS) as a process of its own
on loopback, with IAM authentication and authorization switched on.

What moto enforces, and so what the tests rely on: with its ``/moto-api/reset-auth`` count at 0 every request
must be signed with a known access key and the right secret (else InvalidAccessKeyId or SignatureDoesNotMatch),
and is allowed only by the identity policies of that key's IAM user, explicit Deny first, wildcards in object
ARNs included (else AccessDenied). Bucket policies are stored but not evaluated, so the tests deny with user
policies.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
BUCKET = "fl-models"
REGION = "eu-west-1"


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str

    def environment(self, endpoint: str) -> dict[str, str]:
        """The variables `fleet run` reads them from (boto3's chain), with the emulator as endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    writer: Keys
    """Allowed to write, read and delete under the bucket (and to list it)."""
    no_models: Keys
    """As the writer, but an explicit Deny on PutObject of any ``model.pt``."""
    admin: Keys
    """Everything: what the tests read the bucket with."""

    def client(self, keys: Keys) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def environment_of(self, keys: Keys) -> dict[str, str]:
        return keys.environment(self.endpoint)

    def keys_under(self, prefix: str) -> list[str]:
        answer = self.client(self.admin).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.client(self.admin).get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, process, log)
        yield _set_up(endpoint)
    finally:
        process.terminate()
        process.wait(10)


def _set_up(endpoint: str) -> S3Server:
    # Before authentication is on, any key may set up the bucket and the users.
    anyone = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    boto3.client("s3", **anyone).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    iam = boto3.client("iam", **anyone)
    objects, bucket = f"arn:aws:s3:::{BUCKET}/*", f"arn:aws:s3:::{BUCKET}"
    write = [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], "Resource": objects},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket},
    ]
    no_models = [*write, {"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": f"{bucket}/*model.pt"}]
    admin = [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]
    keys = {name: _user(iam, name, statements) for name, statements in [("writer", write), ("no-models", no_models)]}
    keys["admin"] = _user(iam, "admin", admin)
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    return S3Server(endpoint, keys["writer"], keys["no-models"], keys["admin"])


def _user(iam: Any, name: str, statements: list[dict[str, Any]]) -> Keys:
    iam.create_user(UserName=name)
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-s3", PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start; its log:\n{log.read_text()}") from None
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
