"""`output.listing`, what every listing command of `crew` prints: the API's JSON with --json, else
its columns, as a table on a terminal and as tab-separated lines in a pipe. The commands
themselves, against a served API: tests/cli/test_crew.py."""

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from apps.cli.crew import output
from crew_client import Page


class _Usage(BaseModel):
    tokens: int


class _Item(BaseModel):
    name: str
    usage: _Usage
    tags: list[str]
    seen_at: datetime | None


_SEEN = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
ITEMS = [
    _Item(name="a", usage=_Usage(tokens=12), tags=["x", "y"], seen_at=_SEEN),
    _Item(name="b", usage=_Usage(tokens=0), tags=[], seen_at=None),
]
# A heading, and the attribute (dotted for a nested one) or function its cells show.
COLUMNS: dict[str, output.Column] = {
    "name": "name",
    "tokens": "usage.tokens",
    "tags": lambda item: ",".join(item.tags) or "-",
    "seen": "seen_at",
}


def test_in_a_pipe_each_item_is_a_line_of_its_cells(capsys: pytest.CaptureFixture[str]) -> None:
    output.listing(ITEMS, COLUMNS, json=False)
    assert capsys.readouterr().out == "a\t12\tx,y\t2026-03-01 12:30:05\nb\t0\t-\t-\n"


def test_with_json_the_api_json_and_no_table(capsys: pytest.CaptureFixture[str]) -> None:
    output.listing(ITEMS, COLUMNS, json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == [item.model_dump(mode="json") for item in ITEMS]


def test_a_page_prints_whole_as_json_and_its_items_as_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = Page[_Item](items=ITEMS, next_cursor="next")
    output.listing(page, COLUMNS, json=True)
    assert json.loads(capsys.readouterr().out) == page.model_dump(mode="json")
    output.listing(page, COLUMNS, json=False)
    assert capsys.readouterr().out.splitlines()[0] == "a\t12\tx,y\t2026-03-01 12:30:05"


def test_on_a_terminal_a_table_under_the_headings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = output._Console(force_terminal=True, width=60, color_system=None)
    monkeypatch.setattr(output, "console", terminal)
    output.listing(ITEMS, COLUMNS, json=False)
    lines = capsys.readouterr().out.splitlines()
    assert [cell.strip() for cell in lines[1].strip("┃").split("┃")] == list(COLUMNS)
    assert [cell.strip() for cell in lines[3].strip("│").split("│")] == [
        "a",
        "12",
        "x,y",
        "2026-03-01 12:30:05",
    ]
