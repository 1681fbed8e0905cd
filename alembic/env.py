"""Migrations run on the app's own metadata and an async engine, against ALEMBIC_DATABASE_URL
(falling back to DATABASE_URL). A URL put in the Alembic config's attributes (as tests do) wins."""

import asyncio
import sys
from collections.abc import Callable
from logging.config import fileConfig

from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Index
from sqlalchemy.engine import Connection, make_url

from alembic import context
from apps.core.database import create_migration_engine
from apps.core.settings import SettingsError, load_settings
from apps.orchestrator.model.models import ONLY_ON, Base, JSONDocument, UTCDateTime

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    given = config.attributes.get("database_url")
    if given:
        return given
    try:
        return load_settings().migrations_database_url
    except SettingsError as error:
        sys.exit(f"error: {error}")


def _render_item(kind: str, item: object, autogen: AutogenContext) -> str | bool:
    """Render the app's column types as plain SQLAlchemy ones, so revisions never import the app."""
    if kind != "type":
        return False
    if isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if item is JSONDocument:
        return "sa.JSON(none_as_null=True)"
    return False


# SQLite's title search index (migration 0005): an FTS5 table and the tables FTS5 keeps for it,
# which no model declares; and its runs' node counts, kept by triggers (0007).
SQLITE_ONLY_TABLES = ("runs_title_fts", "run_node_counts")


def _on_this_dialect(dialect: str) -> Callable[..., bool]:
    """Leave out of the comparison the indexes the models declare for another dialect only."""

    def include(item: object, name: str | None, kind: str, reflected: bool, _other: object) -> bool:
        if kind == "table" and (name or "").startswith(SQLITE_ONLY_TABLES):
            return False
        if kind != "index" or reflected or not isinstance(item, Index):
            return True
        return item.info.get(ONLY_ON, dialect) == dialect

    return include


def _configure(dialect: str, **options: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        render_item=_render_item,
        include_object=_on_this_dialect(dialect),
        **options,
    )


def run_migrations_offline() -> None:
    url = _database_url()
    dialect = make_url(url).get_backend_name()
    _configure(dialect, url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync_migrations(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_migration_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
