"""Spare inodes for the local store: empty files and directories made ahead of need by a thread of
their own, and renamed into place when an artifact is written.

Creating an inode (a file or a directory) is what a write costs on a real disk: 0.1 ms on a quiet
ext4, 0.3 to 2 ms while other writers' fsyncs commit its journal, where a rename costs 0.01 to
0.05 ms. An attempt's output needs four (its node's directory, the attempt's, the artifact, the
sidecar), and in a chain of nodes each one waits for the last one's. Made ahead, they leave the
critical path: a filled file is renamed to its key, so it also appears whole or not at all.

The spares of a process live in one directory of the store's root, `.spares-<host>-<pid>-<tag>`
(a rename never crosses file systems), removed when the process exits; those of processes that
died on this host are removed by the next one. When none is left, the store creates the inode
itself, as without spares.
"""

import atexit
import collections
import contextlib
import logging
import os
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = ".spares-"
OWNER = re.compile(r"(?P<pid>[0-9]+)-[0-9a-f]{6}")
# Enough for the outputs of a worker's concurrent attempts between two refills.
SPARE_FILES = 32
SPARE_DIRS = 64


def is_spare(relative: Path) -> bool:
    """Whether a path relative to the store's root lies among spares rather than artifacts."""
    return bool(relative.parts) and relative.parts[0].startswith(PREFIX)


class Spares:
    """Empty files and directories under `root`, kept at `SPARE_FILES` and `SPARE_DIRS` by a
    daemon thread started on the first `take_*`. Safe to call from any thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname()
        self.directory = root / f"{PREFIX}{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._files: collections.deque[Path] = collections.deque()
        self._dirs: collections.deque[Path] = collections.deque()
        self._wanted = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self._count = 0

    @property
    def ready_files(self) -> int:
        """How many spare files are ready now."""
        return len(self._files)

    def take_file(self) -> Path | None:
        """An empty file of the spares, now the caller's; None when none is ready."""
        return self._take(self._files)

    def take_dir(self) -> Path | None:
        """An empty directory of the spares, now the caller's; None when none is ready."""
        return self._take(self._dirs)

    def _take(self, spares: collections.deque[Path]) -> Path | None:
        self._start()
        self._wanted.set()
        try:
            return spares.popleft()
        except IndexError:
            return None

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._fill, name="artifact-spares", daemon=True).start()

    def _fill(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_orphans()
            self.directory.mkdir()
            atexit.register(shutil.rmtree, self.directory, ignore_errors=True)
            while True:
                self._wanted.wait()
                self._wanted.clear()
                self._top_up()
        except OSError as error:
            # Writes create their inodes themselves from now on: slower, never wrong.
            logger.info("artifact store: no spare files from now on: %s", error)

    def _top_up(self) -> None:
        while len(self._files) < SPARE_FILES or len(self._dirs) < SPARE_DIRS:
            self._count += 1
            if len(self._dirs) < SPARE_DIRS:
                path = self.directory / f"d{self._count}"
                path.mkdir()
                self._dirs.append(path)
            if len(self._files) < SPARE_FILES:
                path = self.directory / f"f{self._count}"
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                self._files.append(path)

    def _remove_orphans(self) -> None:
        """Remove the spares of processes of this host that are gone (killed, crashed)."""
        for path in self.root.glob(f"{PREFIX}{self.host}-*"):
            # Only `<pid>-<tag>` after this host's name: "vm-2" is another host than "vm".
            owner = OWNER.fullmatch(path.name.removeprefix(f"{PREFIX}{self.host}-"))
            if owner and not _alive(int(owner["pid"])):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def place_file(spare: Path, path: Path, content: bytes) -> None:
    """Fill the empty `spare` with `content` and rename it to `path` (replacing what was
    there). The spare is removed if that fails."""
    try:
        with open(spare, "wb") as file:
            file.write(content)
        os.replace(spare, path)
    except OSError:
        with contextlib.suppress(OSError):
            spare.unlink()
        raise


def place_dir(spare: Path, path: Path) -> None:
    """Rename the empty `spare` to the directory `path`. When that fails (`path` was made
    meanwhile by another thread, or the spare is gone) the spare is removed and `path` made as
    without spares."""
    try:
        os.rename(spare, path)
    except OSError:
        with contextlib.suppress(OSError):
            spare.rmdir()
        path.mkdir(exist_ok=True)
