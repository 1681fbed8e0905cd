"""What the commands share when they start: their name as the user typed it, the settings of a
command that runs the service, and the checks that the world those settings name is usable.

A process that would start and then fail every request (a database not migrated, a port taken,
an artifacts directory it cannot write) stops here instead, with one line naming the problem.
"""

import asyncio
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from apps.core.database import (
    CONNECT_TIMEOUT_SECONDS,
    create_migration_engine,
    describe_fault,
    is_sqlite,
)
from apps.core.settings import Settings, load_settings, startup_warnings
from apps.orchestrator.plans.gate_policy import gate_policy_of

# What the artifacts directory's check writes: a block of the file system.
_WRITE_CHECK_BYTES = 4096
# The migrations of this checkout (alembic.ini's script_location), which say the schema it needs.
MIGRATIONS = Path(__file__).resolve().parents[2] / "alembic"


class StartupError(Exception):
    """The process cannot serve as configured; the message is one line, naming the setting."""


def invoked_as(script: str, module: str) -> str:
    """The command as the user called it, for its usage lines: the installed script
    (`crew-keys`), or the documented `python -m` form."""
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"


def load_checked_settings(*, operator_console: bool = False, **overrides: Any) -> Settings:
    """The settings, with the gate policy file they name read now: a `SettingsError` names the
    variable whose value cannot be used, at start-up rather than at the first submission. What
    is odd but not fatal (an operator-file key nothing reads, an OpenAI agent without its key)
    is printed as a warning."""
    settings = load_settings(operator_console=operator_console, **overrides)
    gate_policy_of(settings)
    for warning in startup_warnings(settings):
        warn(warning)
    return settings


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check_can_start(settings: Settings) -> None:
    """Raise `StartupError` unless the artifact store and the database are usable: the
    database answers and its schema is the one this version's migrations end at."""
    _check_artifacts_dir(settings)
    asyncio.run(_check_database(settings.database_url))


def check_can_listen(settings: Settings) -> None:
    """Raise `StartupError` unless HOST is an address of this machine where PORT is free,
    binding as uvicorn does (SO_REUSEADDR) and letting go at once."""
    host, port = settings.host, settings.port
    host_named, named = "HOST", "HOST, PORT"
    if settings.listens_as_operator_console and settings.operator_config is not None:
        host_named += f" (or server.host of {settings.operator_config})"
        named += f", or server.host and server.port of {settings.operator_config}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise StartupError(f"invalid setting {host_named}: {host!r}: {reason}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise StartupError(
                f"cannot listen on {host}:{port} ({named}): {error.strerror or error}"
            ) from None


def _check_artifacts_dir(settings: Settings) -> None:
    """The local store's directory takes a new file, and data in it: a full file system still
    makes an empty file while it has inodes, so the check writes a block and syncs it (which a
    network file system may be the first to refuse). Only its last directory is made when
    missing (`./artifacts` on a fresh clone): a missing parent is more likely a typo, or a
    shared volume not mounted, whose files would go to the host's own disk instead."""
    if settings.artifact_store != "local":
        return
    directory = settings.artifacts_dir
    try:
        directory.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".crew-write-check-") as probe:
            probe.write(bytes(_WRITE_CHECK_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except FileNotFoundError:
        raise StartupError(
            f"cannot use ARTIFACTS_DIR {directory}: {directory.parent} does not exist (only "
            "the last directory is made)"
        ) from None
    except OSError as error:
        raise StartupError(
            f"cannot use ARTIFACTS_DIR {directory}: {error.strerror or error}"
        ) from None


async def _check_database(url: str) -> None:
    shown = make_url(url).render_as_string(hide_password=True)
    if is_sqlite(url):
        _check_sqlite_file(url, shown)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS * 2):
            revision = await _schema_revision(url)
    except TimeoutError:
        raise StartupError(
            f"cannot reach the database of DATABASE_URL {shown}: no answer within "
            f"{CONNECT_TIMEOUT_SECONDS * 2:g}s"
        ) from None
    except (OSError, SQLAlchemyError) as error:
        raise StartupError(
            f"cannot reach the database of DATABASE_URL {shown}: {describe_fault(error)}"
        ) from None
    _check_revision(revision, shown)


def _check_sqlite_file(url: str, shown: str) -> None:
    """A SQLite file that is not there would be created empty by connecting: say so instead."""
    database = make_url(url).database or ":memory:"
    in_a_file = database != ":memory:" and not database.startswith("file:")
    if in_a_file and not os.path.exists(database):
        raise StartupError(
            f"the database of DATABASE_URL {shown} does not exist: create it with "
            "`make db-upgrade` (alembic upgrade head)"
        )


async def _schema_revision(url: str) -> str | None:
    """The revision in `alembic_version`, None when the database has none."""
    engine = create_migration_engine(url)
    try:
        async with engine.connect() as connection:
            migrated = await connection.run_sync(
                lambda sync: inspect(sync).has_table("alembic_version")
            )
            if not migrated:
                return None
            revision: str | None = await connection.scalar(
                text("SELECT version_num FROM alembic_version")
            )
            return revision
    finally:
        await engine.dispose()


def _check_revision(revision: str | None, shown: str) -> None:
    """Stop on a schema older than this version's; only warn on one newer than it knows, which
    an older version is meant to keep running on during a rollover (migrations add before they
    remove)."""
    migrate = "migrate it first: `make db-upgrade` (alembic upgrade head)"
    if revision is None:
        raise StartupError(f"the database of DATABASE_URL {shown} has no schema yet; {migrate}")
    if not MIGRATIONS.is_dir():
        return  # installed without its migrations: whoever migrates knows the schema
    # Imported here: only the processes that serve read the migrations.
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    scripts = ScriptDirectory(str(MIGRATIONS))
    head = scripts.get_current_head()
    if revision == head:
        return
    try:
        scripts.get_revision(revision)
    except CommandError:
        warn(
            f"the database of DATABASE_URL {shown} is at schema revision {revision}, which this "
            f"version (at {head}) does not know: a newer version migrated it"
        )
        return
    raise StartupError(
        f"the database of DATABASE_URL {shown} is at schema revision {revision} and this "
        f"version needs {head}; {migrate}"
    )
