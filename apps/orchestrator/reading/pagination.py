"""Keyset pagination, the one way every list pages: a page of rows and the opaque cursor that
continues after its last row.

A list is ordered by a key that is unique within it: a `Keyset`, its columns, ascending or
descending. A cursor is the key of the last row returned, tagged with the name of the list (and,
for a list within one parent, the parent's id), as URL-safe base64 of a JSON array. A page resumes
with `key > cursor` (`<` descending) in the row-value form the list's index serves, so a page
deep in a million rows costs what the first page costs. Anything this API did not issue for the
list is a `BadRequest`.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Column,
    CompoundSelect,
    DateTime,
    Integer,
    Result,
    Select,
    Uuid,
    bindparam,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

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


@dataclass(frozen=True, slots=True)
class _Codec:
    """How one column of a key is written into a cursor and read back from one."""

    encode: Callable[[Any], str | int]
    decode: Callable[[object], Any]


def _parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("cursor timestamps carry their offset")
    return parsed.astimezone(UTC)


def _parse_uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError("not a UUID")
    return uuid.UUID(hex=value)


def _int_up_to(high: int) -> Callable[[object], int]:
    """A parser of integers from 0 to `high`, the range of the column the cursor is on."""

    def parse(value: object) -> int:
        if type(value) is not int or not 0 <= value <= high:
            raise ValueError("not an integer in range")
        return value

    return parse


def _codec(column: Column[Any]) -> _Codec:
    kind = column.type
    if isinstance(kind, Uuid):
        # The id as the row holds it: a UUID, or its text where a list reads ids as text.
        return _Codec(lambda value: uuid.UUID(str(value)).hex, _parse_uuid)
    if isinstance(kind, BigInteger):
        return _Codec(int, _int_up_to(MAX_INT64))
    if isinstance(kind, Integer):
        return _Codec(int, _int_up_to(MAX_INT32))
    if isinstance(getattr(kind, "impl", kind), DateTime):
        return _Codec(lambda value: value.isoformat(), _parse_timestamp)
    raise TypeError(f"no cursor codec for column {column.key} of type {kind}")


class Keyset:
    """The order of one list: the columns of its key, unique together, and its direction.

    `page` cuts rows read with `limit + 1` to a page with the cursor of its last row; `bounds`
    gives a statement its order, its limit and where to resume after a cursor. A list whose
    statement is built once binds `resume_after` and `cursor_parameters` itself.
    """

    def __init__(self, name: str, *columns: Column[Any], descending: bool = False) -> None:
        self.name = name
        self.columns = columns
        self.descending = descending
        self._codecs = [_codec(column) for column in columns]
        self._positions: list[BindParameter[Any]] = [
            bindparam(f"{name}_cursor_{index}", type_=column.type)
            for index, column in enumerate(columns)
        ]

    def order_by(self, union: CompoundSelect[Any] | None = None) -> list[UnaryExpression[Any]]:
        """The list's order; of `union`'s columns of the key's names when given (a union is
        ordered by its own columns, not by those of a table it reads)."""
        columns: Sequence[ColumnElement[Any]] = self.columns
        if union is not None:
            columns = [union.selected_columns[column.key] for column in self.columns]
        return [column.desc() if self.descending else column.asc() for column in columns]

    def resume_after(self) -> ColumnElement[bool]:
        """The rows after the position `cursor_parameters` binds."""
        key, position = tuple_(*self.columns), tuple_(*self._positions)
        return key < position if self.descending else key > position

    def cursor_parameters(self, cursor: str, scope: str = "") -> dict[str, Any]:
        """The position inside `cursor`, as the parameters `resume_after` binds; `BadRequest`
        for a cursor this list (of `scope`, when it has one) did not issue."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            tag, *key = json.loads(raw)
            if tag != self._tag(scope) or len(key) != len(self._codecs):
                raise ValueError(tag)
            return {
                parameter.key: codec.decode(part)
                for parameter, codec, part in zip(self._positions, self._codecs, key, strict=True)
            }
        except (ValueError, TypeError, OverflowError, binascii.Error):
            raise BadRequest(f"cursor {cursor!r} is not a cursor of this list") from None

    def bounds(
        self, statement: Select[*tuple[Any, ...]], limit: int, cursor: str | None, scope: str = ""
    ) -> tuple[Select[*tuple[Any, ...]], dict[str, Any]]:
        """`statement` in the list's order, `limit + 1` rows after `cursor`; and the parameters
        to execute it with."""
        statement = statement.order_by(*self.order_by()).limit(limit + 1)
        if cursor is None:
            return statement, {}
        return statement.where(self.resume_after()), self.cursor_parameters(cursor, scope)

    def page(
        self, rows: Sequence[dict[str, Any]], limit: int, scope: str = ""
    ) -> Page[dict[str, Any]]:
        """`rows` (read with `limit + 1`) cut to a page, with a cursor if more rows follow."""
        if len(rows) <= limit:
            return Page(items=list(rows), next_cursor=None)
        items = list(rows[:limit])
        return Page(items=items, next_cursor=self.cursor_of(items[-1], scope))

    def cursor_of(self, row: Mapping[str, Any], scope: str = "") -> str:
        """The cursor that resumes the list after `row`."""
        key = [
            codec.encode(row[column.key])
            for column, codec in zip(self.columns, self._codecs, strict=True)
        ]
        raw = json.dumps([self._tag(scope), *key], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _tag(self, scope: str) -> str:
        return f"{self.name}:{scope}" if scope else self.name


def as_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """The rows of `result` as plain dicts, the input the response models validate fastest."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]
