"""Migrations run on the app's own metadata and an async engine, against ALEMBIC_DATABASE_URL
(falling back to DATABASE_URL). A URL put in the Alembic config's attributes (as tests do) wins.

One process migrates a database at a time (`_migrating_alone`): the API and workers each run
`alembic upgrade head` as they start, and two upgrades of a database still to migrate would both
create its first tables."""

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from logging.config import fileConfig
from typing import Any

from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Index, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from alembic import context
from apps.core.database import CONNECT_TIMEOUT_SECONDS, create_migration_engine, describe_fault
from apps.core.settings import SettingsError, load_settings
from apps.orchestrator.model.models import ONLY_ON, Base, JSONDocument, UTCDateTime

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

logger = logging.getLogger("alembic.env")

# The PostgreSQL advisory lock a migration holds (docs/deploy.md): "crewmigr" in ASCII.
MIGRATION_LOCK_KEY = 0x637265776D696772
# How long a migration on SQLite waits for the write lock, which another one holds to its end.
SQLITE_MIGRATION_WAIT_MS = 3_600_000


def _database_url() -> str:
    given = config.attributes.get("database_url")
    if given:
        return given
    try:
        return load_settings().migrations_database_url
    except SettingsError as error:
        sys.exit(f"error: {error}")


def _unreachable(url: str, reason: str) -> SystemExit:
    """One line saying which database could not be reached and why, its password hidden."""
    variable = "ALEMBIC_DATABASE_URL" if load_settings().alembic_database_url else "DATABASE_URL"
    if config.attributes.get("database_url"):
        variable = "the database URL given"
    shown = make_url(url).render_as_string(hide_password=True)
    return SystemExit(f"error: cannot reach the database to migrate, {variable} {shown}: {reason}")


async def _connect(engine: AsyncEngine, url: str) -> AsyncConnection:
    """A connection, or the one line that says why there is none. A server that accepts the
    connection and then says nothing (a partition, a failover dropping packets) is given what
    start-up gives it, not the driver's minute; the migrations themselves are not timed, as a
    large table's may take long."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            return await engine.connect()
    except TimeoutError:
        raise _unreachable(url, f"no answer within {CONNECT_TIMEOUT_SECONDS:g}s") from None
    except (OSError, SQLAlchemyError) as error:
        raise _unreachable(url, describe_fault(error)) from None


def _render_item(kind: str, item: object, autogen: AutogenContext) -> str | bool:
    """Render the app's column types as plain SQLAlchemy ones, so revisions never import the app."""
    if kind != "type":
        return False
    if isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if item is JSONDocument:
        return "sa.JSON(none_as_null=True)"
    return False


# SQLite's title search index (migration 0005): an FTS5 table and the tables FTS5 keeps for it,
# which no model declares; and its runs' node counts, kept by triggers (0007).
SQLITE_ONLY_TABLES = ("runs_title_fts", "run_node_counts")


def _on_this_dialect(dialect: str) -> Callable[..., bool]:
    """Leave out of the comparison the indexes the models declare for another dialect only."""

    def include(item: object, name: str | None, kind: str, reflected: bool, _other: object) -> bool:
        if kind == "table" and (name or "").startswith(SQLITE_ONLY_TABLES):
            return False
        if kind != "index" or reflected or not isinstance(item, Index):
            return True
        return item.info.get(ONLY_ON, dialect) == dialect

    return include


def _configure(dialect: str, **options: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        render_item=_render_item,
        include_object=_on_this_dialect(dialect),
        **options,
    )


def run_migrations_offline() -> None:
    url = _database_url()
    dialect = make_url(url).get_backend_name()
    _configure(dialect, url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync_migrations(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


@asynccontextmanager
async def _postgresql_advisory_lock(connection: AsyncConnection) -> AsyncIterator[None]:
    """Hold `MIGRATION_LOCK_KEY` for the session, across the migrations' own transaction. Should
    they fail, closing the connection ends the session and so releases the lock."""
    key = {"key": MIGRATION_LOCK_KEY}
    if not await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
        logger.info("Another process is migrating this database; waiting for it to finish.")
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
    await connection.commit()
    yield
    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    await connection.commit()


def _begin_sqlite_write(connection: Connection) -> None:
    """Take SQLite's write lock: the migrations then run in this one transaction, which the
    caller commits. The driver's implicit BEGIN (before writes only, never before DDL) is off."""
    driver: Any = connection.connection.dbapi_connection
    driver.isolation_level = None
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_MIGRATION_WAIT_MS}")
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@asynccontextmanager
async def _migrating_alone(connection: AsyncConnection) -> AsyncIterator[None]:
    """Keep other migrations of the database out from before Alembic reads `alembic_version` to
    after the migrations commit, so that one started meanwhile waits, then finds the schema at
    head and does nothing."""
    if connection.dialect.name == "postgresql":
        async with _postgresql_advisory_lock(connection):
            yield
        return
    if connection.dialect.name == "sqlite":
        await connection.run_sync(_begin_sqlite_write)
    yield


async def run_migrations_online() -> None:
    url = _database_url()
    engine = create_migration_engine(url)
    try:
        connection = await _connect(engine, url)
        try:
            async with _migrating_alone(connection):
                await connection.run_sync(_run_sync_migrations)
                await connection.commit()
        finally:
            await connection.close()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
