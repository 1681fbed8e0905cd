"""Timestamps as the API writes them: in UTC, or in the zone a request asked for with
`X-Timezone` (the edge sets it per request with `use_zone`)."""

from contextvars import ContextVar
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any

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


def _iso(moment: datetime) -> str:
    """ISO 8601 as pydantic writes an answer's timestamps: a zero offset is Z."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def utc_text(moment: datetime) -> str:
    """`moment` as the API writes a timestamp in UTC: what the writers of event data and
    sidecars use, so that their timestamps read as the rest of an answer's."""
    return _iso(moment.astimezone(UTC))


def _zoned_text(text: str, zone: tzinfo) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return text if moment.tzinfo is None else _iso(moment.astimezone(zone))


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


def document_in_zone(document: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """`document` with each timestamp in it (see `ZonedDocument`) written in `zone`."""
    return dict(_zoned(document, zone))


def _document_in_response_zone(document: dict[str, Any]) -> dict[str, Any]:
    zone = _response_zone.get()
    return document if zone is None else document_in_zone(document, zone)


# A JSON document the API returns (an event's `data`, a sidecar): each timestamp in it, at any
# depth, is a string under a key ending in `_at` (`expires_at`, `timestamps.started_at`), and is
# written in the request's zone as `Timestamp` fields are.
ZonedDocument = Annotated[
    dict[str, Any], PlainSerializer(_document_in_response_zone, return_type=dict[str, Any])
]
