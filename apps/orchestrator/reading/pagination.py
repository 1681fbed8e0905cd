"""Keyset pagination: a page of rows and the opaque cursor that continues after its last row.

A cursor is the sort key of the last row returned, tagged with the list it belongs to and encoded
as URL-safe base64, so a page deep in a million rows costs what the first page costs.
"""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import Result

from apps.core.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(kind: str, *key: str | int) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, kind: str, *parsers: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The sort key inside `token`, each part parsed by the matching parser.

    Raises `BadRequest` for anything this API did not issue for the `kind` list.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        tag, *key = json.loads(raw)
        if tag != kind or len(key) != len(parsers):
            raise ValueError(tag)
        return tuple(parse(part) for parse, part in zip(parsers, key, strict=True))
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise BadRequest(f"cursor {token!r} is not a cursor of this list") from None


def parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("cursor timestamps carry their offset")
    return parsed.astimezone(UTC)


def parse_uuid(value: object) -> UUID:
    if not isinstance(value, str):
        raise TypeError("not a UUID")
    return UUID(hex=value)


def int_between(low: int, high: int) -> Callable[[object], int]:
    """A parser of integers from `low` to `high`, the range of the column the cursor is on."""

    def parse(value: object) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ValueError("not an integer in range")
        return value

    return parse


def as_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """The rows of `result` as plain dicts, the input the response models validate fastest."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def paginate(rows: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """Cut `rows` (fetched with `limit + 1`) to a page, with a cursor if more rows follow."""
    if len(rows) <= limit:
        return Page(items=list(rows), next_cursor=None)
    items = list(rows[:limit])
    return Page(items=items, next_cursor=cursor_of(items[-1]))
