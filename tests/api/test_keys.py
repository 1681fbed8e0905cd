"""The keys CLI as a user runs it: a real process on a migrated database of its own."""

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Row, select

from apps.api.app import create_app
from apps.core.database import create_engine
from apps.core.settings import Settings, load_settings
from apps.orchestrator.model.models import ApiKey
from tests.conftest import process_env

CLI = [sys.executable, "-m", "apps.api.keys"]


def _keys(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=tmp_path,
        env=process_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(database_url: str, tmp_path: Path) -> Settings:
    # Built here rather than by the `settings` fixture, which would pair every backend of
    # `migrated_database` with every backend of the session's database.
    return load_settings(
        _env_file=None,
        database_url=database_url,
        artifacts_dir=tmp_path / "artifacts",
        worker_in_api=False,
    )


async def _statuses(database_url: str, tmp_path: Path, key: str) -> tuple[int, int]:
    """What GET /runs and POST /tasks answer `key` on the API serving `database_url`."""
    app = create_app(_settings(database_url, tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": key}
        ) as client:
            read = await client.get("/runs")
            write = await client.post("/tasks", json={"title": "T", "task_spec": {"type": "demo"}})
    return read.status_code, write.status_code


async def _stored_rows(database_url: str, tmp_path: Path) -> list[Row[Any]]:
    engine = create_engine(_settings(database_url, tmp_path))
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(select(ApiKey.__table__)))
    finally:
        await engine.dispose()


def _create(database_url: str, tmp_path: Path, name: str, role: str) -> str:
    created = _keys(database_url, tmp_path, "create", "--name", name, "--role", role)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


async def test_a_created_key_works_over_http_until_it_is_revoked(
    migrated_database: str, tmp_path: Path
) -> None:
    created = _keys(migrated_database, tmp_path, "create", "--name", "alice", "--role", "viewer")
    key = created.stdout.strip()
    operator_key = _create(migrated_database, tmp_path, "bob", "operator")

    assert created.returncode == 0, created.stderr
    assert created.stdout == key + "\n" and key.startswith("crew_")
    assert created.stderr == (
        "created the viewer key 'alice'; store it now: it will not be shown again\n"
    )
    assert await _statuses(migrated_database, tmp_path, key) == (200, 403)
    assert await _statuses(migrated_database, tmp_path, operator_key) == (200, 202)

    revoked = _keys(migrated_database, tmp_path, "revoke", "--name", "alice")

    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("revoked the viewer key 'alice'")
    assert await _statuses(migrated_database, tmp_path, key) == (401, 401)
    assert await _statuses(migrated_database, tmp_path, operator_key) == (200, 202)


async def test_keys_are_listed_and_stored_without_their_secrets(
    migrated_database: str, tmp_path: Path
) -> None:
    secrets = [
        _create(migrated_database, tmp_path, "alice", "operator"),
        _create(migrated_database, tmp_path, "bob", "admin"),
    ]
    await _statuses(migrated_database, tmp_path, secrets[0])
    _keys(migrated_database, tmp_path, "revoke", "--name", "bob")

    listed = _keys(migrated_database, tmp_path, "list")

    assert listed.returncode == 0, listed.stderr
    header, alice, bob = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "PREFIX", "CREATED", "LAST", "USED", "REVOKED"]
    assert alice.split()[:3] == ["alice", "operator", secrets[0][:12]]
    assert alice.split()[4] != "-" and alice.split()[5] == "-"  # used, not revoked
    assert bob.split()[:3] == ["bob", "admin", secrets[1][:12]]
    assert bob.split()[4] == "-" and bob.split()[5] != "-"  # never used, revoked
    rows = await _stored_rows(migrated_database, tmp_path)
    hashes = {hashlib.sha256(secret.encode()).hexdigest() for secret in secrets}
    assert {row.key_hash for row in rows} == hashes
    for secret in secrets:
        assert all(secret not in str(value) for row in rows for value in row)
    assert not any(digest in listed.stdout for digest in hashes)
    assert not any(secret in listed.stdout for secret in secrets)


async def test_mistakes_are_one_line_and_a_non_zero_exit(
    migrated_database: str, tmp_path: Path
) -> None:
    _create(migrated_database, tmp_path, "alice", "viewer")

    duplicate = _keys(migrated_database, tmp_path, "create", "--name", "alice", "--role", "admin")
    cased = _keys(migrated_database, tmp_path, "create", "--name", "Alice", "--role", "admin")
    unknown = _keys(migrated_database, tmp_path, "revoke", "--name", "carol")
    bad_role = _keys(migrated_database, tmp_path, "create", "--name", "x", "--role", "root")

    assert (duplicate.returncode, duplicate.stdout) == (1, "")
    assert duplicate.stderr == (
        "error: an API key named 'alice' already exists (revoked keys keep their names); "
        "choose another name\n"
    )
    assert (cased.returncode, cased.stdout) == (1, "")
    assert cased.stderr == (
        "error: an API key named 'alice' already exists, and 'Alice' differs from it only in "
        "case; choose another name (names are compared ignoring case, and revoked keys keep "
        "theirs)\n"
    )
    assert (unknown.returncode, unknown.stderr) == (1, "error: no API key named 'carol'\n")
    assert bad_role.returncode == 2
    assert bad_role.stderr.startswith("error: argument --role: invalid choice: 'root'")
    assert bad_role.stderr.count("\n") == 1


def test_bad_settings_or_an_unmigrated_database_are_one_line(tmp_path: Path) -> None:
    bad_url = _keys("mysql://nope", tmp_path, "list")
    unmigrated = _keys(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", tmp_path, "list")

    assert bad_url.returncode == 2
    assert bad_url.stderr.startswith("error: invalid setting DATABASE_URL: unsupported database")
    assert unmigrated.returncode == 1
    assert unmigrated.stderr.startswith("error: database error: no such table: api_keys;")
    for result in (bad_url, unmigrated):
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_help_documents_every_command_and_role(tmp_path: Path) -> None:
    overview = _keys("sqlite+aiosqlite:///unused.db", tmp_path, "--help")
    create = _keys("sqlite+aiosqlite:///unused.db", tmp_path, "create", "--help")

    assert overview.returncode == 0
    for word in ("create", "list", "revoke", "--database-url", "viewer", "operator", "admin"):
        assert word in overview.stdout
    for word in ("--name", "--role", "not be shown again"):
        assert word in " ".join(create.stdout.split())


def test_the_cli_never_prints_a_database_password(tmp_path: Path) -> None:
    refused = _keys(
        "sqlite+aiosqlite:///unused.db",
        tmp_path,
        "list",
        "--database-url",
        "postgresql://crew:Hunter2-db-pass@127.0.0.1:1",
    )
    unreachable = _keys(
        "postgresql+asyncpg://crew:Hunter2-db-pass@127.0.0.1:1/crew?password=Hunter2-db-pass",
        tmp_path,
        "list",
    )
    assert (refused.returncode, unreachable.returncode) == (2, 1)
    for result in (refused, unreachable):
        assert result.stderr.startswith("error: ")
        assert "Hunter2-db-pass" not in result.stderr + result.stdout
