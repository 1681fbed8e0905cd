"""What every artifact store offers, and what callers of any store share.

Keys are the `storage_key`s of artifacts, `<run>/<attempt>/<name>` for what an attempt produced
(its name is its node's key, one node's in its run, and an extension) and
`<run>/edited-<artifact>/<name>` for an operator's edit, with each sidecar beside its artifact
under `<key>.sidecar.json`. A key is written once: every attempt and every edit has keys of its
own, so the content an artifact's size and sha256 describe never changes.

The nodes of a run share the directory of each attempt number: a node costs the file system two
new inodes (the artifact and its sidecar), not four, as it did with a directory of its own and
one for each of its attempts (`<run>/<node>/<attempt>/<name>`, which keys stored before still
name, and which every store still reads). Creating an inode is what a node's files cost most on
a disk (see `apps.orchestrator.infra.storage.local`).

No key from the database or a request names anything outside the store: the local store resolves
every path inside its root (refusing `..`, absolute paths and symlinks out), the S3 store refuses
any key that is not plain `/`-separated names.

Store calls block (a file system or the network): `store_io` decides whether one runs on the event
loop or in a thread; `store_changes` and `start_changes` make changes in a thread. Errors:
`NotFound` for missing content, `ServiceUnavailable` when the store itself failed (a full disk, an
unreachable bucket), so callers can retry or answer 503.
"""

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

SIDECAR_SUFFIX = ".sidecar.json"

# The thread of `start_changes`: one for the process, whose writes follow one another as the
# passes that record them do. Made at import, its thread only when first needed.
_CHANGES = ThreadPoolExecutor(1, thread_name_prefix="artifact-changes")


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

    def exists(self, storage_key: str) -> bool:
        """Whether `storage_key` holds content, without reading it."""
        ...

    def write(self, storage_key: str, content: bytes) -> None:
        """Store `content` under `storage_key`, replacing what was there."""
        ...

    def delete(self, storage_key: str) -> None:
        """Remove what `storage_key` holds, if anything (content no artifact refers to)."""
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


async def store_changes(work: Callable[[], T]) -> T:
    """`work()`, which creates or removes files in a store: always in a thread. Creating a file
    is a change of the file system's metadata, which a real disk takes 0.1 to 2.6 ms to make
    (a RAM file system 0.02): on the event loop it would stall every other node and stream."""
    return await asyncio.to_thread(work)


def start_changes(work: Callable[[], T]) -> Future[T]:
    """`work()`, which creates or removes files in a store, started now in a thread (as
    `store_changes` runs it) and not waited for: what it gave, or raised, is the future's. A
    thread waits for it with `result()`, the event loop awaits `asyncio.wrap_future` of it.

    For changes that must be made before something else happens, started as soon as they are
    known so that they overlap what happens meanwhile (an output's files and the pass that
    records it), rather than each waiting for a thread of its own."""
    return _CHANGES.submit(work)
