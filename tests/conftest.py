"""Shared fixtures: a migrated database per backend and test session, the app, an HTTP client.

Every test that uses the database runs on SQLite and on PostgreSQL. PostgreSQL needs
TEST_POSTGRES_URL; without it those tests skip, unless REQUIRE_POSTGRES is set (as in CI).
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import sentry_sdk
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from alembic import command
from apps.api.app import create_app
from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings, load_settings
from apps.orchestrator.model.models import Base

# The local S3-compatible server's fixtures: `s3_endpoint`, `s3_bucket`.
pytest_plugins = ("tests.s3_server",)
ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key"
POSTGRES_HELP = (
    "PostgreSQL tests skipped: set TEST_POSTGRES_URL to run them, e.g. "
    "TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test make test"
)


def process_env(**variables: str) -> dict[str, str]:
    """The environment of a process a test starts: a plain PATH, the checkout on PYTHONPATH,
    `variables`, and of this process's environment only coverage's variables, so that `make
    coverage` measures the processes too."""
    measured = {name: value for name, value in os.environ.items() if name.startswith("COVERAGE_")}
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **measured, **variables}


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def postgres_server_url() -> str:
    """The PostgreSQL server to test on, or a skip (a failure under REQUIRE_POSTGRES)."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("REQUIRE_POSTGRES"):
        pytest.fail("REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not")
    pytest.skip(POSTGRES_HELP)


def postgres_dsn(url: str) -> str:
    """`url` as asyncpg takes it: without SQLAlchemy's driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _postgres_admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(postgres_dsn(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_postgres_database(server_url: str) -> str:
    """A new empty database on the test server, so parallel sessions never share one."""
    name = f"crew_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(server_url, f'CREATE DATABASE "{name}"'))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    asyncio.run(_postgres_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def empty_database_url(backend: str, directory: Path) -> Iterator[str]:
    """A fresh, unmigrated database of `backend`, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'test.db'}"
        return
    server = postgres_server_url()
    url = create_postgres_database(server)
    try:
        yield url
    finally:
        drop_postgres_database(server, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no tables, for tests of the migrations themselves."""
    yield from empty_database_url(request.param, tmp_path)


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    """A database of its own, migrated, for tests whose writes others must not see."""
    command.upgrade(alembic_config(empty_database), "head")
    return empty_database


@pytest.fixture
def postgres_database(tmp_path: Path) -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own, for what only PostgreSQL does."""
    for url in empty_database_url("postgresql", tmp_path):
        command.upgrade(alembic_config(url), "head")
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A database built by `alembic upgrade head`, one per backend for the whole session."""
    for url in empty_database_url(request.param, tmp_path_factory.mktemp(request.param)):
        command.upgrade(alembic_config(url), "head")
        yield url


def settings_for(database_url: str, tmp_path: Path) -> Settings:
    """The settings of a test's app on `database_url`: no `.env`, no worker, no metrics."""
    return load_settings(
        _env_file=None,
        api_key=API_KEY,
        database_url=database_url,
        alembic_database_url=None,
        artifacts_dir=tmp_path / "artifacts",
        cors_origins=[],
        metrics_enabled=False,
        sentry_dsn=None,
        worker_in_api=False,
        demo_latency_ms=0,
        # The gates of the repository's conf/operator.yaml are the Operator Console's example,
        # not the tests': each test that gates a node says so.
        gate_policy_file=None,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return settings_for(database_url, tmp_path)


async def empty_tables(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(delete(table))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running; the tables are emptied after each test."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        try:
            yield application
        finally:
            await empty_tables(application.state.sessions)


@pytest.fixture
def sessions(app: FastAPI) -> SessionFactory:
    return app.state.sessions


@pytest.fixture
def transactions(app: FastAPI) -> Transactions:
    return app.state.transactions


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `app`, sending the admin key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-Key": API_KEY}
    ) as http:
        yield http


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app of `settings` whose lifespan runs meanwhile, for a test that needs an
    app of its own (a database it built itself)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_of(app) as http:
        yield http


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, sending the admin key."""
    async with client_of(app) as http:
        yield http


@pytest.fixture(autouse=True)
def _error_reporting_stops_with_its_test() -> Iterator[None]:
    """A test whose app reports to Sentry (a DSN in its settings) leaves no client behind for
    the tests after it: Sentry is set up once per process."""
    yield
    if sentry_sdk.is_initialized():
        sentry_sdk.get_client().close(timeout=0)
        sentry_sdk.get_global_scope().set_client(None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say once, not per test, why the PostgreSQL half did not run and how to run it."""
    skipped = terminalreporter.stats.get("skipped", [])
    postgres = [report for report in skipped if POSTGRES_HELP in str(report.longrepr)]
    if postgres:
        terminalreporter.write_line(f"{len(postgres)} {POSTGRES_HELP}", yellow=True)
