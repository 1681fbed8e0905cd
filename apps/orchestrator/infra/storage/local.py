"""The local artifact store: files under one directory, the default (ARTIFACT_STORE=local)."""

import array
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from apps.core.errors import NotFound, ServiceUnavailable
from apps.orchestrator.infra.storage.base import StoredContent, StoredFile, is_plain_key

logger = logging.getLogger(__name__)

# Files up to this size are read on the event loop: that takes less time than
# handing the work to a thread and back, which at a few milliseconds a node is what counts.
INLINE_IO_BYTES = 256 * 1024

# How many directories a store remembers being there (see `LocalArtifactStore.write`): a run's
# and its attempts' are needed again by each of its nodes.
KNOWN_DIRECTORIES = 1024

# `chattr +T`: the flag ext2/3/4 read as "the top of unrelated directory hierarchies", and the
# ioctls that read and set a file's flags (linux/fs.h).
FS_TOPDIR_FL = 0x00020000
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602


class LocalArtifactStore:
    """Artifact files under one local directory, which every process that reads or serves them
    must see at the same absolute path (one host, or a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._root_text = str(self.root)
        self._root_prefix = os.path.join(self._root_text, "")
        self._root_marked = False
        # Directories under the root, by key, that this store made or found there.
        self._known: set[str] = set()

    def path_for(self, storage_key: str) -> Path:
        """The file for `storage_key`, or `NotFound` if it is missing or outside the root."""
        candidate = Path(self._inside(storage_key))
        if not candidate.is_file():
            raise NotFound("artifact content is missing from the artifact store")
        return candidate

    def _inside(self, storage_key: str) -> str:
        """The resolved path of `storage_key` (symlinks followed), or `NotFound` when that is
        outside the root. Strings rather than `Path`s: an attempt reads its dependencies'
        outputs on the event loop, and pathlib's parsing cost more than the resolving."""
        candidate = os.path.realpath(os.path.join(self._root_text, storage_key))
        if not candidate.startswith(self._root_prefix):
            logger.warning("refused artifact key outside the store: %r", storage_key)
            raise NotFound("artifact content is not in the artifact store")
        return candidate

    def exists(self, storage_key: str) -> bool:
        try:
            self.path_for(storage_key)
        except NotFound:
            return False
        return True

    def read(self, storage_key: str) -> bytes:
        path = self._inside(storage_key)
        try:
            # Unbuffered: the whole file in one read, without a buffer object around it.
            with open(path, "rb", buffering=0) as file:
                return file.readall()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("artifact content is missing from the artifact store") from None
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None

    def write(self, storage_key: str, content: bytes) -> None:
        # Keys are checked by their text: resolving the path, as reads do, costs a system call
        # per directory level on every write, and the keys written are the service's own.
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        path = self._root_prefix + storage_key
        try:
            try:
                self._make_under_known(storage_key.rpartition("/")[0])
                _write_file(path, content)
            except FileNotFoundError:
                # The first file of a run: its directories are new. Or a directory known to be
                # there was removed meanwhile (a run's files deleted by another process).
                self._known.clear()
                self._make_directories(storage_key)
                _write_file(path, content)
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None

    def _make_under_known(self, directory: str) -> None:
        """`directory` (a key's) made from the deepest of its parents known to be there down,
        when one is: an attempt's directory under its run's is one mkdir, where trying the file
        first costs a failed open and a refused mkdir of the run's directory more. Nothing when
        `directory` is known, or none of its parents (the file is tried first, `write`)."""
        parent, missing = directory, []
        while parent not in self._known:
            parent, _, name = parent.rpartition("/")
            if not parent:
                return
            missing.append(name)
        self._make_down(parent, reversed(missing))

    def _make_directories(self, storage_key: str) -> None:
        """Every directory of `storage_key`, made from the top down (as `Path.mkdir(parents=True)`
        goes, from the deepest up, the ones that are there fail first): a run's first file, or
        one whose directory was removed meanwhile."""
        if not self._root_marked:
            self.root.mkdir(parents=True, exist_ok=True)
            _spread_subdirectories(self.root)
            self._root_marked = True
        elif not os.path.isdir(self._root_text):
            # Removed while in use (a cleaner of old temporary files): made again, but not its
            # parents, which a volume no longer mounted would have the files land on the host's
            # own disk for.
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._root_text)
            _spread_subdirectories(self.root)
        self._make_down("", storage_key.split("/")[:-1])

    def _make_down(self, parent: str, names: Iterable[str]) -> None:
        """The directories `names` under `parent` (a key's directory, "" for the root), each in
        the one before, made where they are not there yet, and remembered."""
        for name in names:
            parent = f"{parent}/{name}" if parent else name
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._root_prefix + parent)
            self._know(parent)

    def _know(self, directory: str) -> None:
        if len(self._known) >= KNOWN_DIRECTORIES:
            self._known.clear()
        self._known.add(directory)

    def delete(self, storage_key: str) -> None:
        if not is_plain_key(storage_key):
            raise ValueError(f"storage key outside the artifact store: {storage_key!r}")
        path = self.root / storage_key
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise ServiceUnavailable(f"the artifact store failed: {error.strerror}") from None
        # A directory goes with its last file (an attempt's or an edit's): a write into it
        # meanwhile makes it again (`write`).
        self._known.discard(storage_key.rpartition("/")[0])
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def open(self, storage_key: str) -> StoredContent:
        return StoredFile(self.path_for(storage_key))

    def location(self, storage_key: str) -> str:
        return str(self.root / storage_key)

    def inline(self, size: int) -> bool:
        return size <= INLINE_IO_BYTES


def _write_file(path: str, content: bytes) -> None:
    """`content` as the whole of the file at `path`, in an open, a write and a close:
    `Path.write_bytes` adds an fstat and an ioctl, on every artifact and sidecar."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        written = os.write(descriptor, content)
        while written < len(content):
            written += os.write(descriptor, memoryview(content)[written:])
    finally:
        os.close(descriptor)


def _spread_subdirectories(directory: Path) -> None:
    """Mark `directory` as the top of unrelated hierarchies (`chattr +T`) where the file system
    knows the flag (ext2/3/4), which then places each run's directory in a block group of its
    own choosing rather than in its parent's: a run's files stay together, and runs do not
    crowd the group of whatever else the parent holds.

    Unmarked, every inode of every run goes to the group of the store's parent directory. An
    ext4 without a journal will not reuse an inode freed in the last minutes and steps over
    each one before it finds a free one: in a group where others delete files (a temporary
    directory beside test suites) the four inodes a node had then cost 0.36-0.6 ms of CPU,
    against 0.06 ms in the group a marked root gives a run (a node now makes two, see `base`).
    Where the flag is unknown or refused (another file system, a directory of another user's)
    nothing changes.
    """
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(descriptor, FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & FS_TOPDIR_FL:
            flags[0] |= FS_TOPDIR_FL
            fcntl.ioctl(descriptor, FS_IOC_SETFLAGS, flags)
    except OSError as error:
        logger.debug("artifact store root %s keeps its flags: %s", directory, error.strerror)
    finally:
        os.close(descriptor)
