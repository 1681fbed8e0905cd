"""How `crew` prints: a table on a terminal, tab-separated lines in a pipe, the API's JSON with
`--json`; errors as one line on stderr.

Writing stdout raises `OSError` when it cannot be written (a reader gone, a full disk), from
`console` as from `sys.stdout`; `commands` turns that into an exit status. Nothing written to
stderr can fail a command: there is nowhere left to say so.
"""

import errno
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from operator import attrgetter
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from crew_client import Page


class _Console(Console):
    """A console whose reader went away raises `BrokenPipeError`, as a plain write does (rich
    would exit 1 on its own)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


console = _Console()

Column = str | Callable[[Any], Any]
"""What a column of a listing shows of each item: an attribute (dotted for a nested one:
`usage.total_tokens`), or a function of the item."""


def as_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    """The API's JSON of `value`, for `jq`."""
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    sys.stdout.write(json.dumps(data, indent=2 if console.is_terminal else None) + "\n")


def json_line(value: BaseModel) -> None:
    sys.stdout.write(value.model_dump_json() + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Rows as a table on a terminal, as tab-separated text (no header) in a pipe."""
    if not console.is_terminal:
        for row in rows:
            sys.stdout.write("\t".join(cell(value) for value in row) + "\n")
        return
    shown = Table(*columns, title=title, title_justify="left")
    for row in rows:
        shown.add_row(*(cell(value) for value in row))
    console.print(shown)


def listing(
    found: Page[Any] | Sequence[BaseModel], columns: Mapping[str, Column], *, json: bool
) -> None:
    """What a listing command prints: `found` as the API's JSON with --json (a page whole, its
    cursor included), else a `table` of its items under `columns`' headings."""
    if json:
        as_json(found)
        return
    items = found.items if isinstance(found, Page) else found
    cells = [attrgetter(c) if isinstance(c, str) else c for c in columns.values()]
    table(tuple(columns), ([cell_of(item) for cell_of in cells] for item in items))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Name: value lines, aligned."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        sys.stdout.write(f"{name.ljust(width)}  {cell(value)}\n")


def fail(message: str) -> None:
    note(f"error: {message}")


def note(message: str) -> None:
    """`message` on stderr, as one line. While `crew watch` shows its live view, stderr is
    rich's stand-in, which prints the line above the view rather than through it."""
    with suppress(OSError):  # stderr cannot be written either: nowhere to say it
        sys.stderr.write(message + "\n")


def silence() -> None:
    """Send what is left for stdout to /dev/null, once stdout cannot be written: else Python
    fails again at exit, flushing it, with a message on stderr and status 120."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
