"""A local S3-compatible server for tests: moto in server mode, in a process of its own on a free
loopback port, so the S3 store talks HTTP to it exactly as it would to MinIO or AWS.

A pytest plugin of tests/conftest.py: `s3_endpoint` is one server for the session, `s3_bucket` a
new bucket on it for each test.
"""

import functools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.servers import free_port

# moto accepts any credentials; the tests give these explicitly, so nothing is read from ~/.aws.
ACCESS_KEY_ID = "AKIACREWTEST0001"
SECRET_ACCESS_KEY = "crew-test-secret-Zk3vQ8"
REGION = "us-east-1"


def _wait_until_up(endpoint: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the moto server did not come up within 30 s")


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """The endpoint URL of a moto server running until the block ends; its log in `workdir`."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = workdir / "moto.log"
    command = [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)]
    with (
        log.open("ab") as output,
        subprocess.Popen(
            command, env={"PATH": "/usr/bin:/bin"}, stdout=output, stderr=output
        ) as server,
    ):
        try:
            _wait_until_up(endpoint, server, log)
            yield endpoint
        finally:
            server.terminate()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    return create_bucket(s3_endpoint)


@functools.cache
def s3_client(endpoint: str) -> Any:
    """A client of the test server, to look at the bucket behind the store's back."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def create_bucket(endpoint: str) -> str:
    """A new empty bucket on the test server, so tests never see each other's objects."""
    name = f"crew-test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def bucket_keys(endpoint: str, bucket: str) -> set[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listed.get("Contents", [])}


def s3_settings(endpoint: str, bucket: str, prefix: str = "") -> dict[str, str]:
    """The settings, by variable name, of an S3 store in `bucket` of the test server."""
    return {
        "ARTIFACT_STORE": "s3",
        "ARTIFACT_S3_BUCKET": bucket,
        "ARTIFACT_S3_PREFIX": prefix,
        "ARTIFACT_S3_ENDPOINT_URL": endpoint,
        "ARTIFACT_S3_REGION": REGION,
        "ARTIFACT_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ARTIFACT_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
