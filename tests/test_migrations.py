import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from alembic import command
from apps.core.database import create_migration_engine
from apps.orchestrator.model.models import Base
from tests.conftest import ROOT, alembic_config, process_env


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_migration_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


# SQLite's title search index (0005) and the tables FTS5 keeps for it, and its runs' node
# counts (0007); no model declares them.
SEARCH_INDEX = "runs_title_fts"
NODE_COUNTS = "run_node_counts"


def _tables_of_the_models(url: str) -> set[str]:
    """The tables of `url` but those there on SQLite only."""
    tables = _tables(url)
    sqlite_only = {t for t in tables if t.startswith(SEARCH_INDEX)} | ({NODE_COUNTS} & tables)
    on_sqlite = url.startswith("sqlite")
    assert {SEARCH_INDEX, NODE_COUNTS} <= sqlite_only if on_sqlite else not sqlite_only
    return tables - sqlite_only


def test_upgrade_downgrade_upgrade_round_trips(empty_database: str) -> None:
    config = alembic_config(empty_database)
    schema = set(Base.metadata.tables)

    command.upgrade(config, "head")
    assert _tables_of_the_models(empty_database) == schema | {"alembic_version"}
    command.downgrade(config, "base")
    assert _tables(empty_database) == {"alembic_version"}
    command.upgrade(config, "head")
    assert _tables_of_the_models(empty_database) == schema | {"alembic_version"}


def _versions(url: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_migration_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return [version for (version,) in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_upgrades_started_together_migrate_once(empty_database: str, tmp_path: Path) -> None:
    """The API and every worker run `alembic upgrade head` as they start: started together on a
    new database, one migrates it, the others wait for it and then find nothing to do."""
    alembic = [str(Path(sys.executable).parent / "alembic"), "-c", str(ROOT / "alembic.ini")]
    upgrades = [
        subprocess.Popen(
            [*alembic, "upgrade", "head"],
            cwd=tmp_path,
            env=process_env(ALEMBIC_DATABASE_URL=empty_database),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        logs = [upgrade.communicate(timeout=120)[1] for upgrade in upgrades]
    finally:
        for upgrade in upgrades:
            upgrade.kill()

    assert [upgrade.returncode for upgrade in upgrades] == [0] * 4, "\n".join(logs)
    assert "\n".join(logs).count("Running upgrade  -> 0001") == 1
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    assert _versions(empty_database) == [head]
    assert _tables_of_the_models(empty_database) == set(Base.metadata.tables) | {"alembic_version"}


def test_the_models_and_the_migrations_agree(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    command.check(config)


def test_stored_json_with_infinities_is_repaired_on_upgrade(tmp_path: Path) -> None:
    """Before 0003 SQLite stored `Infinity` and `NaN` from task specs, which its JSON functions
    reject; the upgrade rewrites them as null (no limit), and leaves valid JSON as it was."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0002")
    broken = '{"type": "demo", "budget": {"max_cost": Infinity, "max_tokens": NaN}}'
    fine = '{"type": "demo", "budget": {"max_cost": 1.5}}'
    with sqlite3.connect(tmp_path / "old.db") as connection:
        for run_id, spec in (("a" * 32, broken), ("b" * 32, fine)):
            connection.execute(
                "INSERT INTO runs (id, title, status, task_spec, prompt_tokens, "
                "completion_tokens, total_tokens, cost, created_at, updated_at) "
                "VALUES (?, 't', 'queued', ?, 0, 0, 0, 0, '2026-01-01', '2026-01-01')",
                (run_id, spec),
            )

    command.upgrade(config, "head")

    with sqlite3.connect(tmp_path / "old.db") as connection:
        specs = dict(connection.execute("SELECT id, task_spec FROM runs").fetchall())
    assert json.loads(specs["a" * 32]) == {
        "type": "demo",
        "budget": {"max_cost": None, "max_tokens": None},
    }
    assert specs["b" * 32] == fine


def test_the_runs_stored_before_0006_get_their_specs_type(empty_database: str) -> None:
    """0006 fills in the type of every run already stored, from its spec: null where the spec
    names none; and of every run the previous version inserts afterwards, without a type."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0005")
    before = {"a" * 32: '{"type": "report", "topic": "x"}', "b" * 32: '{"nodes": []}'}
    after = {"c" * 32: '{"type": "demo"}', "d" * 32: '{"type": 7}', "e" * 32: "{}"}

    async def insert(specs: dict[str, str]) -> None:
        engine = create_migration_engine(empty_database)
        try:
            async with engine.begin() as connection:
                for run_id, spec in specs.items():
                    await connection.execute(
                        text(
                            "INSERT INTO runs (id, title, status, task_spec, prompt_tokens, "
                            "completion_tokens, total_tokens, cost, created_at, updated_at) "
                            "VALUES (:id, 't', 'queued', :spec, 0, 0, 0, 0, "
                            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                        ),
                        {"id": run_id, "spec": spec},
                    )
        finally:
            await engine.dispose()

    async def types() -> dict[str, str | None]:
        engine = create_migration_engine(empty_database)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT id, task_type FROM runs"))
                return {str(run_id).replace("-", ""): task_type for run_id, task_type in rows}
        finally:
            await engine.dispose()

    asyncio.run(insert(before))
    command.upgrade(config, "head")
    asyncio.run(insert(after))

    assert asyncio.run(types()) == {
        "a" * 32: "report",
        "b" * 32: None,
        "c" * 32: "demo",
        "d" * 32: "7",
        "e" * 32: None,
    }


def _node_indexes(url: str) -> dict[str, list[str]]:
    async def read() -> list[dict[str, Any]]:
        engine = create_migration_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda c: inspect(c).get_indexes("nodes"))
        finally:
            await engine.dispose()

    return {index["name"]: index["column_names"] for index in asyncio.run(read())}


def test_at_most_one_index_on_nodes_is_keyed_by_status(empty_database: str) -> None:
    """A claim moves its nodes from ready to running in every index keyed by status, at a cost
    that grows with the nodes waiting (0008): one on status alone on PostgreSQL, none on SQLite
    (0009), the leases indexed apart; a downgrade to 0008 puts SQLite's back."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")

    indexes = _node_indexes(empty_database)
    by_status = {name: columns for name, columns in indexes.items() if columns[0] == "status"}
    on_sqlite = empty_database.startswith("sqlite")
    assert by_status == ({} if on_sqlite else {"ix_nodes_status": ["status"]})
    assert indexes["ix_nodes_lease_expires_at"] == ["lease_expires_at"]
    assert indexes["ix_nodes_lease_owner"] == ["lease_owner"]

    command.downgrade(config, "0008")
    assert _node_indexes(empty_database)["ix_nodes_status"] == ["status"]
