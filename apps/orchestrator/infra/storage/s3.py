"""The artifact store in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Ceph, moto).

Library: boto3 (pinned `>=1.44,<1.45`), AWS's own and best-kept S3 SDK, synchronous like every
caller of a store (which runs in a thread or a transaction anyway), so no event-loop bridge.

Objects are `<ARTIFACT_S3_PREFIX>/<storage key>`. Credentials come from the settings when given,
else from boto's own chain, which reads the environment and files by itself (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, ~/.aws/, a web identity token, the
instance's role); so do AWS_DEFAULT_REGION and AWS_ENDPOINT_URL_S3 when their settings are unset.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from apps.core.errors import NotFound, ServiceUnavailable
from apps.core.settings import Settings
from apps.orchestrator.infra.storage.base import StoredContent, StoredStream, is_plain_key

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
# botocore retries throttling, 5xx and dropped connections itself (standard mode) before a call
# fails; past that the executor's retry policy takes over. The pool covers a worker's concurrent
# nodes plus the API's concurrent downloads.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,
)


class S3ArtifactStore:
    """Artifact objects in one bucket, under one key prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The store of the ARTIFACT_S3_* settings, with a client of its own."""
        key_id, secret = settings.artifact_s3_access_key_id, settings.artifact_s3_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.artifact_s3_endpoint_url,
            region_name=settings.artifact_s3_region,
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=CLIENT_CONFIG,
        )
        assert settings.artifact_s3_bucket is not None  # the settings refuse s3 without one
        return cls(client, settings.artifact_s3_bucket, settings.artifact_s3_prefix)

    def object_key(self, storage_key: str) -> str:
        """The object of `storage_key`, or `NotFound` for a key that is not plain."""
        if not is_plain_key(storage_key):
            logger.warning("refused artifact key outside the store: %r", storage_key)
            raise NotFound("artifact content is not in the artifact store")
        return self.prefix + storage_key

    def read(self, storage_key: str) -> bytes:
        key = self.object_key(storage_key)
        with self._answers(key):
            content: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return content

    def exists(self, storage_key: str) -> bool:
        try:
            key = self.object_key(storage_key)
            with self._answers(key):
                # A GET of one byte, not a HEAD, whose 404 is the same for a missing bucket as
                # for a missing object; an empty object has no byte to give (InvalidRange).
                try:
                    answer = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")
                    answer["Body"].close()
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "InvalidRange":
                        raise
        except NotFound:
            return False
        return True

    def write(self, storage_key: str, content: bytes) -> None:
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        key = self.prefix + storage_key
        with self._answers(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=content)

    def delete(self, storage_key: str) -> None:
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        key = self.prefix + storage_key
        with self._answers(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def open(self, storage_key: str) -> StoredContent:
        key = self.object_key(storage_key)
        with self._answers(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        return StoredStream(_chunks(answer["Body"]), answer["ContentLength"], answer.get("ETag"))

    def location(self, storage_key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(storage_key)}"

    def inline(self, size: int) -> bool:
        return False

    @contextmanager
    def _answers(self, key: str) -> Iterator[None]:
        """Turn boto's errors into ours: a missing object is `NotFound`, anything else that
        failed (a missing bucket, refused credentials, an unreachable endpoint) is a 503."""
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "an error"))
            if code in _MISSING:
                raise NotFound("artifact content is missing from the artifact store") from None
            logger.warning("artifact store answered %s for %s/%s", code, self.bucket, key)
            raise ServiceUnavailable(f"the artifact store answered {code}") from None
        except BotoCoreError as error:
            logger.warning("artifact store unreachable for %s/%s: %s", self.bucket, key, error)
            unreachable = f"the artifact store is unreachable ({type(error).__name__})"
            raise ServiceUnavailable(unreachable) from None


def _chunks(body: Any) -> Iterator[bytes]:
    """The body's bytes in chunks; its connection is released however the iteration ends."""
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
