"""The S3 artifact store against a real S3-compatible server (moto in server mode)."""

import pytest

from apps.core.errors import NotFound, ServiceUnavailable
from apps.core.settings import load_settings
from apps.orchestrator.infra.storage import open_artifact_store
from apps.orchestrator.infra.storage.base import StoredStream
from apps.orchestrator.infra.storage.s3 import CHUNK_BYTES, S3ArtifactStore
from tests.s3_server import bucket_keys, s3_client, s3_settings
from tests.servers import free_port

UNSAFE_KEYS = [
    pytest.param("../outside.md", id="dot-dot"),
    pytest.param("run/node/../../../outside.md", id="dot-dot-inside"),
    pytest.param("/run/node/absolute.md", id="absolute"),
    pytest.param("run//node/empty-part.md", id="empty-part"),
    pytest.param("run/./node/dot.md", id="dot"),
    pytest.param("run/node/", id="trailing-slash"),
    pytest.param("run\\..\\outside.md", id="backslash"),
    pytest.param("run/node/nul\x00.md", id="nul"),
    pytest.param("run/node/new\nline.md", id="newline"),
    pytest.param("", id="empty"),
]


def _store(endpoint: str, bucket: str, prefix: str = "crew/test") -> S3ArtifactStore:
    settings = {name.lower(): value for name, value in s3_settings(endpoint, bucket).items()}
    store = open_artifact_store(
        load_settings(_env_file=None, **{**settings, "artifact_s3_prefix": prefix})
    )
    assert isinstance(store, S3ArtifactStore)
    return store


def test_content_written_is_read_back_from_the_object_under_the_prefix(
    s3_endpoint: str, s3_bucket: str
) -> None:
    store = _store(s3_endpoint, s3_bucket, prefix="/crew/test/")

    store.write("run/node/draft.md", "# Été\n".encode())

    assert store.read("run/node/draft.md") == "# Été\n".encode()
    assert bucket_keys(s3_endpoint, s3_bucket) == {"crew/test/run/node/draft.md"}


def test_a_write_replaces_what_was_there(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)
    store.write("run/node/draft.md", b"first")

    store.write("run/node/draft.md", b"second")

    assert store.read("run/node/draft.md") == b"second"


def test_stores_with_other_prefixes_do_not_see_each_others_objects(
    s3_endpoint: str, s3_bucket: str
) -> None:
    staging = _store(s3_endpoint, s3_bucket, prefix="staging")
    production = _store(s3_endpoint, s3_bucket, prefix="production")
    staging.write("run/node/draft.md", b"staging")

    with pytest.raises(NotFound):
        production.read("run/node/draft.md")


def test_missing_content_is_not_found(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)

    with pytest.raises(NotFound):
        store.read("run/node/never-written.md")
    with pytest.raises(NotFound):
        store.open("run/node/never-written.md")
    assert not store.exists("run/node/never-written.md")


def test_content_exists_once_written_even_empty(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)
    store.write("run/node/draft.md", b"# Draft\n")
    store.write("run/node/empty.md", b"")

    assert store.exists("run/node/draft.md")
    assert store.exists("run/node/empty.md")


def test_content_is_opened_as_a_stream_of_chunks(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)
    content = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    store.write("run/node/big.bin", content)

    stored = store.open("run/node/big.bin")

    assert isinstance(stored, StoredStream)
    assert stored.size == len(content)
    assert stored.etag
    chunks = list(stored.chunks)
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) <= CHUNK_BYTES
    assert b"".join(chunks) == content


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_a_key_that_is_not_plain_names_is_refused(
    s3_endpoint: str, s3_bucket: str, key: str
) -> None:
    store = _store(s3_endpoint, s3_bucket, prefix="crew/test/inner")
    s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key="crew/test/outside.md", Body=b"no")

    with pytest.raises(NotFound):
        store.read(key)
    with pytest.raises(NotFound):
        store.open(key)
    with pytest.raises(ValueError):
        store.write(key, b"written")
    assert not store.exists(key)
    assert bucket_keys(s3_endpoint, s3_bucket) == {"crew/test/outside.md"}


def test_a_missing_bucket_is_the_store_failing_not_missing_content(s3_endpoint: str) -> None:
    store = _store(s3_endpoint, "no-such-bucket-here")

    with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
        store.write("run/node/draft.md", b"draft")
    with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
        store.read("run/node/draft.md")
    with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
        store.exists("run/node/draft.md")


def test_an_unreachable_endpoint_is_the_store_failing() -> None:
    store = _store(f"http://127.0.0.1:{free_port()}", "crew-artifacts")

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        store.read("run/node/draft.md")
