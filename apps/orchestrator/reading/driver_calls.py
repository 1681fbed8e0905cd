"""Reads that call the driver itself with a statement SQLAlchemy compiled once: the list pages.

A page read through SQLAlchemy builds its statement, looks up the compiled form, and processes
each value of each row; on SQLite a cursor hands each step to aiosqlite's thread. A page read
here is a `DriverStatement` its module compiles once per shape of its filters, its parameters
are passed as the driver takes them, and the driver is called once: aiosqlite hands the
statement and the fetch of every row to its thread in one go, asyncpg prepares the statement
once per connection. A driver's error is raised as SQLAlchemy raises one of its own statements'
(an asyncpg error as `core.database.asyncpg_error` translates it), its parameters hidden.
"""

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CompoundSelect, Dialect, Select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

from apps.core.database import asyncpg_error
from apps.core.read_connections import DriverReads, sqlite_error


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement compiled for one dialect: its SQL in the driver's own parameter style, and
    the names of its parameters in the order the driver takes them."""

    sql: str
    names: tuple[str, ...]
    compiled: SQLCompiler

    @classmethod
    def of(
        cls, statement: Select[*tuple[Any, ...]] | CompoundSelect[Any], dialect: Dialect
    ) -> "DriverStatement":
        compiled = statement.compile(dialect=dialect)
        return cls(str(compiled), tuple(compiled.positiontup or ()), compiled)

    def parameters(self, given: Mapping[str, Any]) -> list[Any]:
        """The statement's parameters in order: `given`, and its own constants' values; on
        SQLite each as the column holds it (`as_stored`)."""
        if self.compiled.dialect.name == "sqlite":
            given = {name: as_stored(value) for name, value in given.items()}
        values = self.compiled.construct_params(dict(given))
        return [values[name] for name in self.names]


# Every row of a statement, given its parameters by name.
Reader = Callable[[DriverStatement, Mapping[str, Any]], Awaitable[list[Any]]]


def as_stored(value: Any) -> Any:
    """A parameter as SQLite holds the column: naive UTC text, or a UUID's hex."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    if isinstance(value, uuid.UUID):
        return value.hex
    return value


async def fetch_all(connection: AsyncConnection, sql: str, parameters: list[Any]) -> list[Any]:
    """Every row of `sql` on `connection`'s driver, called once."""
    driver = cast(Any, (await connection.get_raw_connection()).driver_connection)
    try:
        if connection.dialect.name == "sqlite":
            return list(await driver.execute_fetchall(sql, parameters))
        return list(await driver.fetch(sql, *parameters))
    except sqlite3.Error as error:
        raise sqlite_error(sql, parameters, error) from error
    except Exception as error:
        if connection.dialect.name == "postgresql":
            raise await connection.run_sync(asyncpg_error, sql, parameters, error) from error
        raise


@asynccontextmanager
async def reading(reads: DriverReads) -> AsyncIterator[Reader]:
    """A `Reader` of every row of a statement, given its parameters: on SQLite's readers when
    `reads` has them, else on one connection of the read engine, held for the block."""
    readers = reads.sqlite
    if readers is not None:

        async def read_on_readers(
            statement: DriverStatement, given: Mapping[str, Any]
        ) -> list[Any]:
            return await readers.fetch_all(statement.sql, statement.parameters(given))

        yield read_on_readers
        return
    async with reads.engine.connect() as connection:

        async def read(statement: DriverStatement, given: Mapping[str, Any]) -> list[Any]:
            return await fetch_all(connection, statement.sql, statement.parameters(given))

        yield read
