"""Where artifact files live. Every path is resolved inside the store's root: no key from the
database or a request can name a file outside it, through `..`, an absolute path or a symlink."""

import logging
from pathlib import Path

from apps.core.errors import NotFound

logger = logging.getLogger(__name__)


class LocalArtifactStore:
    """Artifact files under one local directory (shared by every process that serves them)."""

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
        """The content stored under `storage_key` (blocking: run it in a thread)."""
        return self.path_for(storage_key).read_bytes()

    def write(self, storage_key: str, content: bytes) -> None:
        """Store `content` under `storage_key` (blocking: run it in a thread)."""
        path = (self.root / storage_key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
