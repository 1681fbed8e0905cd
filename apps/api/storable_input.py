"""Input the database cannot store faithfully is refused before anything reads it.

JSON admits numbers that no column holds as sent: Python reads `1e400` as infinity and takes the
`NaN` and `Infinity` literals, and SQLite's JSON functions then reject the stored text; integers
past 64 bits come back from them as approximate reals. Text may carry NUL characters, which
PostgreSQL refuses in any text. Any of these, anywhere in a JSON body, a query string or a path,
is a 422 naming where it is: the request changes nothing, and no stored row can stop the worker.
"""

import itertools
import math
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from apps.api.errors import MAX_REPORTED_ERRORS

INT64 = range(-(2**63), 2**63)
_NUL_MESSAGE = "Text may not contain NUL characters (\\u0000)"
Location = tuple[str | int, ...]


def _problem(location: Location, kind: str, message: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": location, "msg": message, "input": value}


def _nul(location: Location, text: str) -> dict[str, Any]:
    return _problem(location, "string_nul", _NUL_MESSAGE, text)


def _scalar_problem(item: Any) -> tuple[str, str, str] | None:
    """The kind, message and shown input of what is wrong with a scalar, or None."""
    if isinstance(item, str):
        return ("string_nul", _NUL_MESSAGE, item) if "\x00" in item else None
    if isinstance(item, bool):
        return None
    if isinstance(item, float) and not math.isfinite(item):
        return "finite_number", "Input should be a finite number", str(item)
    if isinstance(item, int) and item not in INT64:
        return "int64", "Input should fit in a 64-bit integer", str(item)
    return None


def _children(container: dict[str, Any] | list[Any]) -> Iterator[tuple[str | int, Any]]:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _nul_keys(where: Location, container: dict[str, Any] | list[Any]) -> Iterator[dict[str, Any]]:
    if isinstance(container, dict):
        yield from (_nul(where, key) for key in container if "\x00" in key)


def unstorable_values(value: Any, location: Location) -> Iterator[dict[str, Any]]:
    """Every non-finite number, integer past 64 bits and text with a NUL in `value` (a parsed
    JSON document), in document order, as validation errors located under `location`."""
    if not isinstance(value, dict | list):
        if (found := _scalar_problem(value)) is not None:
            yield _problem(location, *found)
        return
    yield from _nul_keys(location, value)
    # Iterative, one iterator per open container: a deeply nested document must not exhaust
    # the stack, nor a list of millions of numbers cost a location for each of them.
    open_containers = [(location, _children(value))]
    while open_containers:
        where, children = open_containers[-1]
        for key, child in children:
            if isinstance(child, dict | list):
                inner = (*where, key)
                yield from _nul_keys(inner, child)
                open_containers.append((inner, _children(child)))
                break
            if (found := _scalar_problem(child)) is not None:
                yield _problem((*where, key), *found)
        else:
            open_containers.pop()


def _text_problems(source: str, items: Iterator[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    for name, value in items:
        text = str(value)
        if "\x00" in name or "\x00" in text:
            yield _nul((source, name), text)


async def _json_body(request: Request) -> Any:
    """The body FastAPI parsed for the route (read from its cache), or None when it has none."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return None
    try:
        return await request.json()
    except ValueError:
        # Not JSON: the route's own validation answers for it.
        return None


async def refuse_unstorable_input(request: Request) -> None:
    """A 422 listing the values of the request that could not be stored as they were sent (the
    first `MAX_REPORTED_ERRORS` of them: the walk stops there)."""
    found = itertools.chain(
        _text_problems("path", iter(request.path_params.items())),
        _text_problems("query", iter(request.query_params.multi_items())),
        unstorable_values(await _json_body(request), ("body",)),
    )
    problems = list(itertools.islice(found, MAX_REPORTED_ERRORS))
    if problems:
        raise RequestValidationError(problems)
