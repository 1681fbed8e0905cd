"""The local store's spare inodes: outputs written from them read back whole at their keys, spares
never show as artifacts, and those of a process that died are removed by the next one."""

import os
import subprocess
import sys
import time
from pathlib import Path

from apps.orchestrator.infra.storage.local import LocalArtifactStore
from apps.orchestrator.infra.storage.spares import PREFIX, SPARE_FILES, Spares, is_spare


def _wait_for_spares(spares: Spares) -> None:
    deadline = time.monotonic() + 10
    while spares.ready_files < SPARE_FILES:
        assert time.monotonic() < deadline, "no spares were made"
        time.sleep(0.01)


def _artifacts(root: Path) -> dict[str, bytes]:
    found = (path for path in root.rglob("*") if path.is_file())
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in found
        if not is_spare(path.relative_to(root))
    }


def test_outputs_written_from_spares_are_whole_at_their_keys(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.write("run/first/1/a.md", b"first")
    _wait_for_spares(store.spares)
    written = {f"run/node-{i}/1/a.md": f"content {i}".encode() for i in range(SPARE_FILES * 2)}
    for key, content in written.items():
        store.write(key, content)
    assert _artifacts(tmp_path) == {"run/first/1/a.md": b"first", **written}
    for key, content in written.items():
        assert store.read(key) == content


def test_a_key_written_again_holds_the_new_content(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.write("run/node/1/a.md", b"old")
    _wait_for_spares(store.spares)
    store.write("run/node/1/a.md", b"new")
    assert store.read("run/node/1/a.md") == b"new"


def test_a_deleted_attempt_leaves_no_directory(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.write("run/node/0/warm.md", b"x")
    _wait_for_spares(store.spares)
    store.write("run/node/1/a.md", b"x")
    store.delete("run/node/1/a.md")
    assert not (tmp_path / "run/node/1").exists()


def test_the_spares_of_a_process_that_died_are_removed(tmp_path: Path) -> None:
    # A pid no process has: the child has exited and been reaped.
    pid = int(subprocess.check_output([sys.executable, "-c", "import os; print(os.getpid())"]))
    spares = Spares(tmp_path)
    orphan = tmp_path / f"{PREFIX}{spares.host}-{pid}-abcdef"
    (orphan / "d1").mkdir(parents=True)
    mine = tmp_path / f"{PREFIX}{spares.host}-{os.getpid()}-abcdef"
    mine.mkdir()
    # A host whose name begins with this one's.
    other_host = tmp_path / f"{PREFIX}{spares.host}-2-{pid}-abcdef"
    other_host.mkdir()
    spares.take_file()
    _wait_for_spares(spares)
    assert not orphan.exists()
    assert mine.exists()
    assert other_host.exists()
