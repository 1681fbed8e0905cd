"""Per-request time zone: `X-Timezone: <IANA zone>` converts every timestamp in the response.

Timestamps are stored and compared in UTC; the zone only changes how they are written out (and how
a timestamp without an offset in a query is read).
"""

from datetime import UTC, datetime, tzinfo
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Header

from apps.core.errors import BadRequest, Unprocessable
from apps.wire.timestamps import response_zone, use_zone


def _parse_zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(
            f"X-Timezone {name!r} is not a known IANA time zone (e.g. Europe/Paris, UTC)"
        ) from None


async def use_request_timezone(
    x_timezone: Annotated[
        str | None,
        Header(description="IANA time zone in which to write the response's timestamps."),
    ] = None,
) -> None:
    """Read `X-Timezone` for the request; async so the zone is set in the request's own context."""
    use_zone(_parse_zone(x_timezone) if x_timezone else None)


def request_zone() -> tzinfo:
    return response_zone()


def as_utc(value: datetime, name: str) -> datetime:
    """A query timestamp in UTC; one given without an offset is read in the request's zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=request_zone())
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Unprocessable(
            f"query {name}: {value.isoformat()} is outside the years 1-9999 in UTC"
        ) from None
