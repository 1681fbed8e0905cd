from pathlib import Path

import httpx
import pytest

from apps.api.app import create_app
from apps.core.settings import load_settings


async def test_health_answers_without_a_key(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/healthz"):
        response = await client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": "ok"}


async def test_health_answers_head_with_the_status_alone(client: httpx.AsyncClient) -> None:
    """Uptime monitors ask with HEAD (UptimeRobot's by default): a 405 read as the API down."""
    for path in ("/health", "/healthz"):
        response = await client.head(path)
        assert (response.status_code, response.content) == (200, b"")
    assert (await client.delete("/health")).headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "unreachable_url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/app.db",
        "postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
    ],
)
async def test_health_is_503_with_a_reason_when_the_database_is_unreachable(
    unreachable_url: str,
) -> None:
    app = create_app(load_settings(_env_file=None, database_url=unreachable_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == "unavailable"
    # Unreachable at once, or no answer in time when the machine is busy: either is a reason.
    assert response.json()["database"].startswith(("unreachable", "no answer within"))


async def test_a_file_that_is_not_a_database_is_503_for_health_and_routes(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "app.db"
    broken.write_bytes(b"this is no SQLite database, whatever its name says" * 100)
    settings = load_settings(
        _env_file=None, database_url=f"sqlite+aiosqlite:///{broken}", api_key="test-key"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            health = await client.get("/health")
            runs = await client.get("/runs", headers={"X-API-Key": "test-key"})
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "unreachable (DatabaseError)"}
    assert runs.status_code == 503
    assert runs.json()["detail"] == "the database is unavailable; try again shortly"
