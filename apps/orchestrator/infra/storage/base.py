"""Where artifact files and their sidecars live: a local directory (the default) or an
S3-compatible bucket (`s3_artifact_store`), chosen by ARTIFACT_STORE.

Keys are the `storage_key`s of artifacts, `<run>/<node>/<name>`, with each sidecar beside its
artifact under `<key>.sidecar.json`. No key from the database or a request names anything outside
the store: the local store resolves every path inside its root (refusing `..`, absolute paths and
symlinks out), the S3 store refuses any key that is not plain `/`-separated names.

Store calls block (a file system or the network): `store_io` decides whether one runs on the event
loop or in a thread. Errors: `NotFound` for missing content, `ServiceUnavailable` when the store
itself failed (a full disk, an unreachable bucket), so callers can retry or answer 503.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from apps.core.errors import NotFound, ServiceUnavailable
from apps.core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

SIDECAR_SUFFIX = ".sidecar.json"
# Files up to this size are read and written on the event loop: that takes less time than
# handing the work to a thread and back, which at a few milliseconds a node is what counts.
INLINE_IO_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Content that is a local file, served as one (ranges, sendfile)."""

    path: Path


@dataclass(frozen=True, slots=True)
class StoredStream:
    """Content streamed in chunks from a remote store; the stream is closed once iterated."""

    chunks: Iterator[bytes]
    size: int
    etag: str | None


StoredContent = StoredFile | StoredStream


class ArtifactStore(Protocol):
    """What the executor, the operators' edits and the API need of a store. Every call blocks."""

    def read(self, storage_key: str) -> bytes:
        """The content under `storage_key`; `NotFound` when there is none."""
        ...

    def write(self, storage_key: str, content: bytes) -> None:
        """Store `content` under `storage_key`, replacing what was there."""
        ...

    def open(self, storage_key: str) -> StoredContent:
        """The content under `storage_key`, to serve without holding all of it in memory."""
        ...

    def location(self, storage_key: str) -> str:
        """Where `storage_key` is, for people to find it: a path or a URL."""
        ...

    def inline(self, size: int) -> bool:
        """Whether moving `size` bytes is cheap enough to do on the event loop."""
        ...


def is_plain_key(key: str) -> bool:
    """Whether `key` is names separated by single slashes: no `.`, `..`, empty or absolute
    part, no backslash or control character (which HTTP stacks or servers might reinterpret)."""
    parts = key.split("/")
    return (
        key.isprintable() and "\\" not in key and all(part not in ("", ".", "..") for part in parts)
    )


def encode_sidecar(sidecar: dict[str, Any]) -> bytes:
    """A sidecar as its file holds it: JSON on one line (indenting takes the json module's pure
    Python encoder, ten times slower, on every node)."""
    return json.dumps(sidecar).encode()


def sidecar_key(storage_key: str) -> str:
    """Where the sidecar of the artifact stored under `storage_key` is: beside it."""
    return storage_key + SIDECAR_SUFFIX


async def store_io(store: ArtifactStore, size: int, work: Callable[[], T]) -> T:
    """`work()`, which moves `size` bytes through `store`: inline when the store says that is
    cheap (small local files), else in a thread (big files, the network)."""
    if store.inline(size):
        return work()
    return await asyncio.to_thread(work)


class LocalArtifactStore:
    """Artifact files under one local directory, which every process that reads or serves them
    must see at the same absolute path (one host, or a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, storage_key: str) -> Path:
        """The file for `storage_key`, or `NotFound` if it is missing or outside the root."""
        candidate = (self.root / storage_key).resolve()
        if not candidate.is_relative_to(self.root):
            logger.warning("refused artifact key outside the store: %r", storage_key)
            raise NotFound("artifact content is not in the artifact store")
        if not candidate.is_file():
            raise NotFound("artifact content is missing from the artifact store")
        return candidate

    def read(self, storage_key: str) -> bytes:
        path = self.path_for(storage_key)
        try:
            return path.read_bytes()
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None

    def write(self, storage_key: str, content: bytes) -> None:
        # Keys are checked by their text: resolving the path, as reads do, costs a system call
        # per directory level on every write, and the keys written are the service's own.
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        path = self.root / storage_key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None

    def open(self, storage_key: str) -> StoredContent:
        return StoredFile(self.path_for(storage_key))

    def location(self, storage_key: str) -> str:
        return str(self.root / storage_key)

    def inline(self, size: int) -> bool:
        return size <= INLINE_IO_BYTES


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The store ARTIFACT_STORE names, configured by the settings."""
    if settings.artifact_store == "s3":
        # Imported here: boto3 adds ~0.2 s and ~10 MB to start-up, which local setups never need.
        from apps.orchestrator.infra.storage.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    return LocalArtifactStore(settings.artifacts_dir)
