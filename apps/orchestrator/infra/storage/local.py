"""The local artifact store: files under one directory, the default (ARTIFACT_STORE=local)."""

import contextlib
import logging
import os
from pathlib import Path

from apps.core.errors import NotFound, ServiceUnavailable
from apps.orchestrator.infra.storage.base import StoredContent, StoredFile, is_plain_key

logger = logging.getLogger(__name__)

# Files up to this size are read on the event loop: that takes less time than
# handing the work to a thread and back, which at a few milliseconds a node is what counts.
INLINE_IO_BYTES = 256 * 1024


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
            try:
                _write_file(path, content)
            except FileNotFoundError:
                # The first file of an attempt or an edit: its directory is new. Creating it
                # only then spares every other write a mkdir that fails and a stat.
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_file(path, content)
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None

    def delete(self, storage_key: str) -> None:
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        path = self.root / storage_key
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None
        # The directory of an attempt or an edit is its own: gone with its last file.
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def open(self, storage_key: str) -> StoredContent:
        return StoredFile(self.path_for(storage_key))

    def location(self, storage_key: str) -> str:
        return str(self.root / storage_key)

    def inline(self, size: int) -> bool:
        return size <= INLINE_IO_BYTES


def _write_file(path: Path, content: bytes) -> None:
    """`content` as the whole of the file at `path`, in an open, a write and a close:
    `Path.write_bytes` adds an fstat and an ioctl, on every artifact and sidecar."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        written = os.write(descriptor, content)
        while written < len(content):
            written += os.write(descriptor, memoryview(content)[written:])
    finally:
        os.close(descriptor)
