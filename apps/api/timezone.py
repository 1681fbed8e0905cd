"""Per-request time zone: `X-Timezone: <IANA zone>` converts every timestamp in the response.

Timestamps are stored and compared in UTC; the zone only changes how they are written out (and how
a timestamp without an offset in a query is read).
"""

import re
from datetime import UTC, datetime, tzinfo
from importlib import resources
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Header
from pydantic import BeforeValidator

from apps.core.errors import BadRequest, Unprocessable
from apps.wire.timestamps import response_zone, use_zone

# The zones of the pinned tzdata package, the same on every host, so the OpenAPI document can list
# them; the host's own zone files may hold more (`posixrules`, `right/...`), which are refused.
ZONE_NAMES: tuple[str, ...] = tuple(
    sorted(resources.files("tzdata").joinpath("zones").read_text().split())
)
_ZONES = frozenset(ZONE_NAMES)


def _parse_zone(name: str) -> tzinfo:
    try:
        if name not in _ZONES:
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(
            f"X-Timezone {name!r} is not a known IANA time zone (e.g. Europe/Paris, UTC)"
        ) from None


async def use_request_timezone(
    x_timezone: Annotated[
        str | None,
        Header(
            description="IANA time zone in which to write the response's timestamps (and read "
            "query timestamps without an offset); an unknown one is a 400.",
            json_schema_extra={"enum": list(ZONE_NAMES)},
        ),
    ] = None,
) -> None:
    """Read `X-Timezone` for the request; async so the zone is set in the request's own context."""
    # An empty X-Timezone names no zone: a 400 like any other unknown one.
    use_zone(None if x_timezone is None else _parse_zone(x_timezone))


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


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _written_as_iso_8601(value: object) -> object:
    # Pydantic would also read a number (`0`) as seconds since 1970: a query's timestamp is
    # written as the document says, in ISO 8601.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("a timestamp is written in ISO 8601, e.g. 2026-01-05T10:00:00Z")
    return value


QueryTimestamp = Annotated[datetime, BeforeValidator(_written_as_iso_8601)]
"""A timestamp in a query: ISO 8601, with an offset or read in the request's zone."""
