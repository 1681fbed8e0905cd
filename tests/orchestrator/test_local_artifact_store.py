"""The local store's files: where they land, and the hint it gives the file system."""

import array
import fcntl
import os
import shutil
from pathlib import Path

import pytest

from apps.core.errors import ServiceUnavailable
from apps.orchestrator.infra.storage import local
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


def test_a_runs_next_attempt_makes_its_two_directories_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.write("run/first/1/draft.md", b"# Draft\n")
    made: list[str] = []
    real_mkdir = os.mkdir

    def mkdir(path: str, *args: int) -> None:
        made.append(os.path.relpath(path, store.root))
        real_mkdir(path, *args)

    monkeypatch.setattr(os, "mkdir", mkdir)
    store.write("run/second/1/draft.md", b"# Draft\n")
    store.write("run/second/1/draft.md.sidecar.json", b"{}")

    assert made == ["run/second", "run/second/1"]
    assert store.read("run/second/1/draft.md") == b"# Draft\n"


def test_directories_removed_by_someone_else_are_made_again(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.write("run/first/1/draft.md", b"one")
    shutil.rmtree(tmp_path / "artifacts" / "run")

    store.write("run/second/1/draft.md", b"two")
    shutil.rmtree(tmp_path / "artifacts" / "run" / "second" / "1")
    store.write("run/second/1/draft.md.sidecar.json", b"{}")

    assert store.read("run/second/1/draft.md.sidecar.json") == b"{}"
    assert not (tmp_path / "artifacts" / "run" / "first").exists()


def test_a_store_that_forgot_the_directories_it_knew_still_writes_under_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "KNOWN_DIRECTORIES", 3)
    store = LocalArtifactStore(tmp_path / "artifacts")
    keys = [f"run-{run}/node-{node}/1/draft.md" for run in range(3) for node in range(3)]

    for key in keys + keys:
        store.write(key, key.encode())

    assert all(store.read(key) == key.encode() for key in keys)


def test_deleting_an_attempts_last_file_removes_its_directory_and_a_new_write_makes_it(
    tmp_path: Path,
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.write("run/node/1/draft.md", b"one")

    store.delete("run/node/1/draft.md")
    assert not (tmp_path / "artifacts" / "run" / "node" / "1").exists()
    store.write("run/node/1/draft.md", b"again")

    assert store.read("run/node/1/draft.md") == b"again"


def test_content_exists_once_written_and_only_inside_the_store(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.write("run/node/1/draft.md", b"")
    (tmp_path / "outside.md").write_bytes(b"not the store's")

    assert store.exists("run/node/1/draft.md")
    assert not store.exists("run/node/1/never-written.md")
    assert not store.exists("run/node")
    assert not store.exists("../outside.md")


def test_a_root_removed_while_in_use_is_made_again_but_not_its_parents(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "volume" / "artifacts")
    store.write("run/1/draft.md", b"one")

    shutil.rmtree(tmp_path / "volume" / "artifacts")
    store.write("other/1/draft.md", b"two")
    assert store.read("other/1/draft.md") == b"two"

    shutil.rmtree(tmp_path / "volume")
    with pytest.raises(ServiceUnavailable):
        store.write("third/1/draft.md", b"three")
    assert not (tmp_path / "volume").exists()
