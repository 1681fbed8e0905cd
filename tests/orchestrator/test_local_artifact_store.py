"""The local store's files: where they land, and the hint it gives the file system."""

import array
import fcntl
import os
from pathlib import Path

import pytest

from apps.orchestrator.infra.storage.local import (
    FS_IOC_GETFLAGS,
    FS_TOPDIR_FL,
    LocalArtifactStore,
    _spread_subdirectories,
)


def inode_flags(path: Path) -> int:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(descriptor, FS_IOC_GETFLAGS, flags, True)
        return flags[0]
    finally:
        os.close(descriptor)


def takes_the_top_of_hierarchies_flag(directory: Path) -> bool:
    probe = directory / "probe"
    probe.mkdir()
    _spread_subdirectories(probe)
    try:
        return bool(inode_flags(probe) & FS_TOPDIR_FL)
    except OSError:
        return False


def test_an_attempts_files_land_under_their_key_in_new_directories(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")

    store.write("run/node/1/draft.md", b"# Draft\n")
    store.write("run/node/1/draft.md.sidecar.json", b"{}")
    store.write("run/node/1/draft.md", b"")

    attempt = tmp_path / "artifacts" / "run" / "node" / "1"
    assert sorted(path.name for path in attempt.iterdir()) == [
        "draft.md",
        "draft.md.sidecar.json",
    ]
    assert (attempt / "draft.md").read_bytes() == b""
    assert (attempt / "draft.md.sidecar.json").read_bytes() == b"{}"


def test_the_store_marks_its_root_so_that_each_runs_directory_is_placed_apart(
    tmp_path: Path,
) -> None:
    if not takes_the_top_of_hierarchies_flag(tmp_path):
        pytest.skip("this file system has no top-of-hierarchies flag (chattr +T)")
    store = LocalArtifactStore(tmp_path / "artifacts")

    store.write("run/node/1/draft.md", b"# Draft\n")

    assert inode_flags(tmp_path / "artifacts") & FS_TOPDIR_FL
    assert not inode_flags(tmp_path / "artifacts" / "run") & FS_TOPDIR_FL
