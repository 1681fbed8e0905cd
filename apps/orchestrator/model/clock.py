"""The database's clock. Every time the engine compares across processes (a lease, when a retry
is due, when a gate expires, how long it waited) is taken from it, never from a host's, so that
hosts whose clocks disagree still agree on what has expired.

PostgreSQL's is `now()` (the transaction's start); SQLite's is its own `'now'`, computed by the
process running the statement, as text in the format the schema stores timestamps in there.
Timestamps that only record when something happened (events, `started_at`) are the host's.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, String, bindparam, func, select, type_coerce
from sqlalchemy.engine import Connection

from apps.orchestrator.model.models import UTCDateTime, utcnow

DELAY = bindparam("delay", type_=Interval())
# SQLite adds a delay to a time with a modifier: "+30.000000 seconds".
DELAY_MODIFIER = bindparam("delay_modifier", type_=String())
# SQLite's time as the schema stores timestamps there (naive UTC text, which sorts as time does).
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%f"


def database_time(dialect: str) -> ColumnElement[datetime]:
    """The database's clock, as an expression of a statement."""
    if dialect == "postgresql":
        return type_coerce(func.now(), UTCDateTime())
    return type_coerce(func.strftime(SQLITE_TIME_FORMAT, "now"), UTCDateTime())


def database_time_later(dialect: str) -> ColumnElement[datetime]:
    """`database_time` plus the delay given to `time_parameters`."""
    if dialect == "postgresql":
        return type_coerce(func.now() + DELAY, UTCDateTime())
    return type_coerce(func.strftime(SQLITE_TIME_FORMAT, "now", DELAY_MODIFIER), UTCDateTime())


def time_parameters(dialect: str, delay_seconds: float = 0.0) -> dict[str, Any]:
    """The values the statements of `database_time_later` are bound to, and `now`: the host's
    time, which statements built once record where nothing compares it (`updated_at`)."""
    if dialect == "postgresql":
        return {"now": utcnow(), "delay": timedelta(seconds=delay_seconds)}
    return {"now": utcnow(), "delay_modifier": f"{delay_seconds:+.6f} seconds"}


def database_now(connection: Connection) -> datetime:
    """What the database's clock says now (see `database_time`)."""
    now: datetime | None = connection.scalar(select(database_time(connection.dialect.name)))
    assert now is not None
    return now
