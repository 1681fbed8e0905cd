"""The one place that builds database engines and sessions, and the one unit of work that commits.

Engines are built by whoever runs (the API's lifespan, the worker, the CLI), never at import time.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from apps.core.settings import Settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5_000
# Execution option naming how a SQLite transaction begins ("immediate" for writers).
SQLITE_BEGIN = "sqlite_begin"

SessionFactory = async_sessionmaker[AsyncSession]


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _tune_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # SQLite's LIKE and lower() fold ASCII letters only; titles are written in every language.
    dbapi_connection.create_function("casefold", 1, _casefold, deterministic=True)
    # The driver's own implicit BEGIN is off: `_begin_sqlite_transaction` says how each begins.
    dbapi_connection.isolation_level = None
    # WAL lets readers run beside the one writer; NORMAL is durable at checkpoints under WAL.
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "synchronous=NORMAL",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    """Writers take the write lock when they begin; reads run without a transaction.

    A deferred transaction that reads and then writes fails at once with "database is locked"
    when another connection wrote in between (SQLite cannot upgrade a stale read snapshot), and
    the worker and the API write side by side. A read connection issues single SELECTs, which
    need no BEGIN, and must not take the write lock.
    """
    if connection.get_execution_options().get(SQLITE_BEGIN) == "immediate":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """Build the engine for `url` (the settings' DATABASE_URL by default)."""
    url = url or settings.database_url
    if is_sqlite(url):
        # Each aiosqlite connection is a thread of its own and SQLite admits one writer at a
        # time: connections beyond the pool would only add threads contending for the GIL.
        engine = _create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine.sync_engine, "connect", _tune_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        return engine
    return _create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
    )


def create_migration_engine(url: str) -> AsyncEngine:
    """An engine for Alembic.

    SQLite gets no `foreign_keys=ON` here: batch migrations rebuild a table by dropping it, which
    with foreign keys on would cascade into the rows that refer to it.
    """
    return _create_async_engine(url, poolclass=NullPool)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions are units of work that write: on SQLite they begin holding the write lock."""
    writer = engine.execution_options(**{SQLITE_BEGIN: "immediate"})
    return async_sessionmaker(writer, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed when the block ends and rolled back if it raises.

    Domain functions only add and flush; this is where their work becomes durable.
    """
    async with sessions() as session:
        yield session
        await session.commit()


HEALTH_CHECK_SECONDS = 2.0


async def check_database(engine: AsyncEngine) -> str | None:
    """None when the database answers a query in time, else why it does not."""
    try:
        async with asyncio.timeout(HEALTH_CHECK_SECONDS), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return f"no answer within {HEALTH_CHECK_SECONDS:g}s"
    except (OSError, SQLAlchemyError) as error:
        logger.warning("database check failed: %s", error)
        return f"unreachable ({type(error).__name__})"
    return None
