"""GET /runs?q=: title contains, ignoring case beyond ASCII, served by the title index (SQLite's
FTS5 trigram table past the search window, PostgreSQL's pg_trgm) with the results of a scan."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.model.models import Run
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.reading.runs import SEARCH_WINDOW
from tests.api.pages import every_page

NEWEST = datetime(2026, 1, 1, tzinfo=UTC)
# Older than the search window: only the index finds these on SQLite.
RARE_TITLES = (
    "Émile's ÉTUDE of Отчёт",
    "ωμέγα release",
    '100% of 10_000 "quoted" items',
    "ab",
    "x",
)
# Within the window, and a few past it.
COMMON_TITLES = ("Quarterly report", "ΩΜΈΓΑ draft", "Отчёт за квартал", "étude de marché")
QUERIES = (
    "report",
    "REPORT",
    "étude",
    "ÉTUDE",
    "отчёт",
    "ОТЧЁТ",
    "Ωμέγα",
    "ΩΜΈΓΑ RELEASE",
    "100%",
    "10_0",
    '"quoted"',
    "ab",
    "x",
    "é",
    "émile's",
    "not in any title",
)


async def seed_titles(sessions: SessionFactory) -> list[Run]:
    """SEARCH_WINDOW + 100 runs, newest first: common titles throughout, rare ones at the end."""
    count = SEARCH_WINDOW + 100
    titles = [COMMON_TITLES[index % len(COMMON_TITLES)] for index in range(count)]
    titles[-len(RARE_TITLES) :] = RARE_TITLES
    titles[5] = "A quarterly REPORT, newest"
    runs = [
        Run(
            title=title,
            status=RunStatus.SUCCEEDED if index % 3 else RunStatus.FAILED,
            task_spec={"type": "demo"},
            created_at=NEWEST - timedelta(seconds=index),
        )
        for index, title in enumerate(titles)
    ]
    async with unit_of_work(sessions) as session:
        session.add_all(runs)
    return runs


def expected_ids(runs: list[Run], query: str, status: RunStatus | None = None) -> list[str]:
    """What a scan finds: the runs whose casefolded title contains the casefolded query."""
    return [
        str(run.id)
        for run in runs
        if query.casefold() in run.title.casefold() and status in (None, run.status)
    ]


async def searched_ids(client: httpx.AsyncClient, query: str, **params: object) -> list[str]:
    return [run["id"] for run in await every_page(client, "/runs", 50, q=query, **params)]


async def test_search_finds_what_a_scan_finds_beyond_ascii(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    runs = await seed_titles(sessions)

    for query in QUERIES:
        assert await searched_ids(client, query) == expected_ids(runs, query), query


async def test_search_with_a_status_and_deep_in_the_list(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    runs = await seed_titles(sessions)

    for query in ("report", "étude", "ОТЧЁТ", "ab"):
        found = await searched_ids(client, query, status="failed")
        assert found == expected_ids(runs, query, RunStatus.FAILED), query


async def test_a_renamed_run_is_found_by_its_new_title(
    client: httpx.AsyncClient, sessions: SessionFactory, database_url: str
) -> None:
    runs = await seed_titles(sessions)
    oldest = runs[-1]
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(Run).where(Run.id == oldest.id).values(title="Ünïcode RENAMED")
        )

    assert await searched_ids(client, "ünïcode renamed") == [str(oldest.id)]
    assert await searched_ids(client, "x") == []


@pytest.mark.parametrize("query", ["straße", "STRASSE", "ss"])
async def test_search_folds_as_casefold_does_on_sqlite(
    client: httpx.AsyncClient, sessions: SessionFactory, database_url: str, query: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's ILIKE folds letter by letter: ß is not ss there")
    runs = await seed_titles(sessions)
    async with unit_of_work(sessions) as session:
        await session.execute(update(Run).where(Run.id == runs[-2].id).values(title="Straße"))
        await session.execute(update(Run).where(Run.id == runs[-3].id).values(title="STRASSE"))

    assert await searched_ids(client, query) == [str(runs[-3].id), str(runs[-2].id)]
