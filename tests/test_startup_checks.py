"""Start-up with a world the settings cannot serve in: `crew-api`, the worker and the migrations
stop with one line naming the problem (no trace, exit 1), instead of serving 500s, or retrying a
database that does not exist for ever."""

import asyncio
import errno
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from alembic import command
from apps.cli import startup
from apps.core.database import create_migration_engine
from tests.conftest import alembic_config, process_env
from tests.servers import api_process, free_port

API = ("-m", "apps.api")
WORKER = ("-m", "apps.orchestrator.worker")
TASK = ("-m", "apps.orchestrator.main", "--title", "Checked first")
COMMANDS = pytest.mark.parametrize("program", [API, WORKER], ids=["api", "worker"])
# What reaches the database and the store from the command line, besides the two services.
EVERY_COMMAND = pytest.mark.parametrize(
    "program", [API, WORKER, TASK], ids=["api", "worker", "crew-task"]
)


def _start(
    program: tuple[str, ...],
    workdir: Path,
    *,
    limits: Callable[[], None] | None = None,
    **settings: str,
) -> list[str]:
    """What `program` says on stderr as it stops at start-up, line by line; `limits` are set
    in its process before it starts."""
    env = {
        "API_KEY": "a-long-random-key",
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
        "PORT": str(free_port()),
    }
    environment = process_env(**(env | settings))
    if limits is not None:
        # A process that may write no file cannot save its coverage either (`make coverage`,
        # CI): it is not measured, rather than have coverage's complaint on its stderr.
        environment = {k: v for k, v in environment.items() if not k.startswith("COVERAGE_")}
    done = subprocess.run(
        [sys.executable, *program],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limits,
    )
    assert done.returncode == 1, done.stderr
    return done.stderr.splitlines()


def _set_revision(url: str, revision: str) -> None:
    async def write() -> None:
        engine = create_migration_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE alembic_version SET version_num = :revision"),
                    {"revision": revision},
                )
        finally:
            await engine.dispose()

    asyncio.run(write())


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A loopback port where nothing listens, nor will while the test runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@EVERY_COMMAND
def test_an_unreachable_database_stops_start_up(
    program: tuple[str, ...], tmp_path: Path, unused_port: int
) -> None:
    url = f"postgresql+asyncpg://crew:s3cr3t@127.0.0.1:{unused_port}/crew"
    [line] = _start(program, tmp_path, DATABASE_URL=url)
    assert line.startswith(
        f"error: cannot reach the database of DATABASE_URL postgresql+asyncpg://crew:***@"
        f"127.0.0.1:{unused_port}/crew: ConnectionRefusedError"
    )


@COMMANDS
def test_a_missing_sqlite_file_stops_start_up_and_is_not_created(
    program: tuple[str, ...], tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    [line] = _start(program, tmp_path, DATABASE_URL=url)
    assert line == (
        f"error: the database of DATABASE_URL {url} does not exist: create it with "
        "`make db-upgrade` (alembic upgrade head)"
    )
    assert not (tmp_path / "app.db").exists()


@EVERY_COMMAND
def test_a_database_at_an_older_schema_stops_start_up(
    program: tuple[str, ...], empty_database: str, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(empty_database), "0005")
    [line] = _start(program, tmp_path, DATABASE_URL=empty_database)
    assert line.startswith("error: the database of DATABASE_URL ")
    assert line.endswith(
        " is at schema revision 0005 and this version needs 0009; migrate it first: "
        "`make db-upgrade` (alembic upgrade head)"
    )


@EVERY_COMMAND
def test_a_database_with_no_schema_stops_start_up(program: tuple[str, ...], tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    (tmp_path / "app.db").touch()
    [line] = _start(program, tmp_path, DATABASE_URL=url)
    assert line.endswith(
        " has no schema yet; migrate it first: `make db-upgrade` (alembic upgrade head)"
    )


def test_a_database_a_newer_version_migrated_is_served_with_a_warning(
    migrated_database: str, tmp_path: Path
) -> None:
    """docs/deploy.md: the old version keeps running against the new schema while it is
    replaced, so an old process restarted during a rollover must start."""
    _set_revision(migrated_database, "ffff")
    port = free_port()
    with api_process(migrated_database, tmp_path, port, WORKER_IN_API="0"):
        pass
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "warning: the database of DATABASE_URL " in log
    assert " is at schema revision ffff, which this version (at 0009) does not know" in log


@COMMANDS
def test_an_artifacts_dir_that_cannot_be_written_stops_start_up(
    program: tuple[str, ...], migrated_database: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = tmp_path / "a-file" / "artifacts"
    [line] = _start(program, tmp_path, DATABASE_URL=migrated_database, ARTIFACTS_DIR=str(store))
    assert line == f"error: cannot use ARTIFACTS_DIR {store}: Not a directory"


@pytest.fixture
def full_file_system(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs with no room left, though with inodes to spare; a skip where this process
    may not mount one."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with (mount_point / "filler").open("wb", buffering=0) as filler:
            with pytest.raises(OSError) as full:
                while True:
                    filler.write(bytes(65536))
            assert full.value.errno == errno.ENOSPC
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@COMMANDS
def test_an_artifacts_dir_on_a_full_file_system_stops_start_up(
    program: tuple[str, ...], migrated_database: str, tmp_path: Path, full_file_system: Path
) -> None:
    """A full disk still makes an empty file: the check writes data, as the store will."""
    [line] = _start(
        program, tmp_path, DATABASE_URL=migrated_database, ARTIFACTS_DIR=str(full_file_system)
    )
    assert line == f"error: cannot use ARTIFACTS_DIR {full_file_system}: No space left on device"
    assert os.listdir(full_file_system) == ["filler"]


def _no_file_data() -> None:
    """Files may be made and not written (RLIMIT_FSIZE 0): a full disk, with no mount needed."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


@COMMANDS
def test_an_artifacts_dir_that_takes_no_data_stops_start_up(
    program: tuple[str, ...], migrated_database: str, tmp_path: Path
) -> None:
    store = tmp_path / "artifacts"
    [line] = _start(
        program,
        tmp_path,
        limits=_no_file_data,
        DATABASE_URL=migrated_database,
        ARTIFACTS_DIR=str(store),
    )
    assert line == f"error: cannot use ARTIFACTS_DIR {store}: File too large"
    assert list(store.iterdir()) == []


def test_a_missing_artifacts_dir_is_made(migrated_database: str, tmp_path: Path) -> None:
    store = tmp_path / "artifacts"
    port = free_port()
    with api_process(migrated_database, tmp_path, port, ARTIFACTS_DIR=str(store)):
        assert store.is_dir()
    assert list(store.iterdir()) == []  # the check leaves nothing behind


@COMMANDS
def test_an_artifacts_dir_whose_parent_is_missing_stops_start_up(
    program: tuple[str, ...], migrated_database: str, tmp_path: Path
) -> None:
    """A shared volume not mounted yet, or a typo: its files would go to the host's disk."""
    store = tmp_path / "shared" / "artifacts"
    [line] = _start(program, tmp_path, DATABASE_URL=migrated_database, ARTIFACTS_DIR=str(store))
    assert line == (
        f"error: cannot use ARTIFACTS_DIR {store}: {store.parent} does not exist (only the "
        "last directory is made)"
    )
    assert not store.parent.exists()


def test_a_port_in_use_stops_start_up(migrated_database: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        [line] = _start(API, tmp_path, DATABASE_URL=migrated_database, PORT=str(port))
    assert line == f"error: cannot listen on 127.0.0.1:{port} (HOST, PORT): Address already in use"


def test_a_host_that_is_no_address_stops_start_up(tmp_path: Path) -> None:
    [line] = _start(API, tmp_path, HOST="999.1.1.1")
    assert line.startswith("error: invalid setting HOST: '999.1.1.1': ")


def test_a_metrics_directory_that_cannot_be_made_stops_start_up(
    migrated_database: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    shared = tmp_path / "a-file" / "metrics"
    settings = {"METRICS_ENABLED": "1", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    [line] = _start(API, tmp_path, DATABASE_URL=migrated_database, **settings)
    assert line.startswith(f"error: cannot use PROMETHEUS_MULTIPROC_DIR {shared}: ")


def test_the_operator_console_names_the_file_its_port_came_from(
    migrated_database: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "operator.yaml").write_text(f"server:\n  port: {port}\n")
        done = subprocess.run(
            [sys.executable, "-m", "apps.api", "--op-console"],
            cwd=tmp_path,
            env=process_env(DATABASE_URL=migrated_database, OPERATOR_CONFIG="operator.yaml"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (HOST, PORT, or server.host and server.port "
        "of operator.yaml): Address already in use"
    ]


def test_a_database_with_no_schema_stops_an_install_without_its_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from a wheel, the migrations are not beside the code: a schema's revision
    cannot be compared, but a database never migrated is still none to serve."""
    monkeypatch.setattr(startup, "MIGRATIONS", tmp_path / "no-migrations")
    with pytest.raises(startup.StartupError, match="has no schema yet"):
        startup._check_revision(None, "sqlite+aiosqlite:///app.db")
    startup._check_revision("0099", "sqlite+aiosqlite:///app.db")  # nothing to compare it with
