"""Timestamps as the API writes them: in UTC, or in the zone a request asked for with
`X-Timezone` (the edge sets it per request with `use_zone`)."""

from contextvars import ContextVar
from datetime import UTC, datetime, tzinfo
from typing import Annotated

from pydantic import PlainSerializer

_response_zone: ContextVar[tzinfo | None] = ContextVar("response_zone", default=None)


def use_zone(zone: tzinfo | None) -> None:
    """Write this context's timestamps in `zone` (None: as they are, in UTC)."""
    _response_zone.set(zone)


def response_zone() -> tzinfo:
    return _response_zone.get() or UTC


def _in_response_zone(value: datetime) -> datetime:
    zone = _response_zone.get()
    return value if zone is None else value.astimezone(zone)


Timestamp = Annotated[datetime, PlainSerializer(_in_response_zone, return_type=datetime)]
