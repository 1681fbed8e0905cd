"""What a process loads that it does not use: without a DSN an API process never imports Sentry's
SDK, and on SQLite it never imports asyncpg (4 MB and 2.6 MB of its memory). Each is checked in
a new interpreter that serves a task through the API with its worker, its events and a fault."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, process_env

PROGRAM = """
import asyncio, sys
import httpx
from apps.api.app import create_app
from apps.core.settings import load_settings

HEADERS = {"X-API-Key": "test-key"}
TASK = {"title": "footprint", "task_spec": {"type": "demo"}}


async def serve(settings):
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test", headers=HEADERS) as client,
    ):
        run = (await client.post("/tasks", json=TASK)).json()
        for _ in range(300):
            status = (await client.get(f"/runs/{run['id']}")).json()["status"]
            if status == "succeeded":
                break
            await asyncio.sleep(0.05)
        events = await client.get(f"/runs/{run['id']}/events")
        fault = await client.get("/sentry-debug")
        assert (await client.get("/runs")).status_code == 200
    return status, events.status_code, fault.status_code


url, artifacts, dsn = sys.argv[1:]
settings = load_settings(
    _env_file=None,
    api_key="test-key",
    database_url=url,
    alembic_database_url=None,
    artifacts_dir=artifacts,
    sentry_dsn=dsn or None,
    worker_in_api=True,
    demo_latency_ms=0,
    gate_policy_file=None,
)
print(*asyncio.run(serve(settings)), *(name in sys.modules for name in ("sentry_sdk", "asyncpg")))
"""


def loaded_while_serving(database_url: str, tmp_path: Path, dsn: str = "") -> list[str]:
    """What the program printed: the run's status, the events' and the fault's HTTP statuses,
    then whether the SDK and asyncpg were loaded."""
    served = subprocess.run(
        [sys.executable, "-c", PROGRAM, database_url, str(tmp_path / "artifacts"), dsn],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=process_env(),
    )
    assert served.returncode == 0, served.stderr
    return served.stdout.split()


def test_without_a_dsn_the_sdk_is_never_loaded(migrated_database: str, tmp_path: Path) -> None:
    status, events, fault, sentry, asyncpg = loaded_while_serving(migrated_database, tmp_path)

    assert (status, events, fault) == ("succeeded", "200", "500")
    assert sentry == "False"
    assert asyncpg == str(migrated_database.startswith("postgresql"))


def test_given_a_dsn_the_sdk_is_loaded_and_asyncpg_is_not_on_sqlite(
    migrated_database: str, tmp_path: Path
) -> None:
    dsn = "http://public@127.0.0.1:9/1"

    *_, sentry, asyncpg = loaded_while_serving(migrated_database, tmp_path, dsn)

    assert sentry == "True"
    assert asyncpg == str(migrated_database.startswith("postgresql"))
