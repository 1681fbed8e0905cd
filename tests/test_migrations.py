import asyncio

from sqlalchemy import inspect

from alembic import command
from apps.core.database import create_migration_engine
from apps.orchestrator.model.models import Base
from tests.conftest import alembic_config


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_migration_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_upgrade_downgrade_upgrade_round_trips(empty_database: str) -> None:
    config = alembic_config(empty_database)
    schema = set(Base.metadata.tables)

    command.upgrade(config, "head")
    assert _tables(empty_database) == schema | {"alembic_version"}
    command.downgrade(config, "base")
    assert _tables(empty_database) == {"alembic_version"}
    command.upgrade(config, "head")
    assert _tables(empty_database) == schema | {"alembic_version"}


def test_the_models_and_the_migrations_agree(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    command.check(config)
