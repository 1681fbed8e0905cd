"""Migrations run on the app's own metadata and an async engine, against ALEMBIC_DATABASE_URL
(falling back to DATABASE_URL). A URL put in the Alembic config's attributes (as tests do) wins."""

import asyncio
import sys

from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from alembic import context
from apps.core.database import create_migration_engine, is_sqlite
from apps.core.settings import SettingsError, load_settings
from apps.orchestrator.models import Base, JSONDocument, UTCDateTime

config = context.config


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
        autogen.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _configure(sqlite: bool, **options: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
        render_item=_render_item,
        **options,
    )


def run_migrations_offline() -> None:
    url = _database_url()
    _configure(is_sqlite(url), url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync_migrations(connection: Connection) -> None:
    _configure(connection.dialect.name == "sqlite", connection=connection)
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
