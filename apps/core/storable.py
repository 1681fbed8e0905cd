"""Values the database cannot store faithfully: numbers no column holds as sent (`Infinity`,
`NaN`, `1e400`, integers past 64 bits) and text with a NUL, which PostgreSQL refuses. Found in
a parsed JSON document before anything stores it, by the API's requests (`storable_input`) and
the console's task check alike."""

import math
from collections.abc import Iterator
from typing import Any

INT64 = range(-(2**63), 2**63)
_NUL_MESSAGE = "Text may not contain NUL characters (\\u0000)"
Location = tuple[str | int, ...]


def _problem(location: Location, kind: str, message: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": location, "msg": message, "input": value}


def nul_problem(location: Location, text: str) -> dict[str, Any]:
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
        yield from (nul_problem(where, key) for key in container if "\x00" in key)


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
