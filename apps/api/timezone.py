"""Per-request time zone: `X-Timezone: <IANA zone>` converts every timestamp in the response.

Timestamps are stored and compared in UTC; the zone only changes how they are written out (and how
a timestamp without an offset in a query is read).
"""

from contextvars import ContextVar
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Header
from pydantic import PlainSerializer

from apps.core.errors import BadRequest, Unprocessable

_response_zone: ContextVar[tzinfo | None] = ContextVar("response_zone", default=None)


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
    _response_zone.set(_parse_zone(x_timezone) if x_timezone else None)


def request_zone() -> tzinfo:
    return _response_zone.get() or UTC


def _in_response_zone(value: datetime) -> datetime:
    zone = _response_zone.get()
    return value if zone is None else value.astimezone(zone)


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


Timestamp = Annotated[datetime, PlainSerializer(_in_response_zone, return_type=datetime)]


def _zoned_text(text: str, zone: tzinfo) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return text if moment.tzinfo is None else moment.astimezone(zone).isoformat()


def _zoned(value: Any, zone: tzinfo) -> Any:
    if isinstance(value, dict):
        return {
            key: _zoned_text(item, zone)
            if isinstance(item, str) and str(key).endswith("_at")
            else _zoned(item, zone)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_zoned(item, zone) for item in value]
    return value


def _document_in_response_zone(document: dict[str, Any]) -> dict[str, Any]:
    zone = _response_zone.get()
    return document if zone is None else dict(_zoned(document, zone))


# A JSON document the API returns (an event's `data`, a sidecar): each timestamp in it, at any
# depth, is a string under a key ending in `_at` (`expires_at`, `timestamps.started_at`), and is
# written in the request's zone as `Timestamp` fields are.
ZonedDocument = Annotated[
    dict[str, Any], PlainSerializer(_document_in_response_zone, return_type=dict[str, Any])
]
