"""Reading artifacts: metadata with sidecars, in the order they were written, and their files.

A sidecar's `prompts` hold what the node was asked, its dependencies' outputs included, so they
may be megabytes: lists leave them in the database, and one artifact's metadata has them.
"""

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, ColumnElement, case, cast, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from apps.core.errors import NotFound
from apps.orchestrator.infra.storage.base import ArtifactStore, StoredContent, store_io
from apps.orchestrator.model.models import ARTIFACTS, Artifact
from apps.orchestrator.reading.pagination import Keyset, Page, as_dicts
from apps.orchestrator.reading.runs import require_run

ARTIFACT_COLUMNS = (
    Artifact.id,
    Artifact.run_id,
    Artifact.node_id,
    Artifact.name,
    Artifact.media_type,
    Artifact.size,
    Artifact.sha256,
    Artifact.created_at,
    Artifact.sidecar,
)


@dataclass(frozen=True, slots=True)
class ArtifactContent:
    stored: StoredContent
    media_type: str
    name: str


def _sidecar_without_prompts(dialect: str) -> ColumnElement[Any]:
    removed: ColumnElement[Any]
    if dialect == "postgresql":
        # JSON has no key removal of its own; JSONB's orders the keys by length.
        removed = cast(Artifact.sidecar, JSONB).op("-")(literal("prompts"))
    else:
        # A sidecar SQLite's JSON functions refuse (NaN, written by an older version) would fail
        # the whole page: it is listed whole instead.
        removed = case(
            (
                func.json_valid(Artifact.sidecar) == 1,
                func.json_remove(Artifact.sidecar, "$.prompts"),
            ),
            else_=Artifact.sidecar,
        )
    return type_coerce(removed, JSON).label("sidecar")


def _listed_columns(dialect: str) -> tuple[Any, ...]:
    return (*ARTIFACT_COLUMNS[:-1], _sidecar_without_prompts(dialect))


# In the order they were written.
ARTIFACT_ORDER = Keyset("artifacts", ARTIFACTS.c.created_at, ARTIFACTS.c.id)


async def list_artifacts(
    connection: AsyncConnection,
    *,
    run_id: uuid.UUID | None,
    node_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """Artifacts oldest first, of one run and/or node when given (`NotFound` for an unknown run),
    their sidecars without `prompts`."""
    statement = select(*_listed_columns(connection.dialect.name))
    if run_id is not None:
        await require_run(connection, run_id)
        statement = statement.where(Artifact.run_id == run_id)
    if node_id is not None:
        statement = statement.where(Artifact.node_id == node_id)
    statement, parameters = ARTIFACT_ORDER.bounds(statement, limit, cursor)
    rows = as_dicts(await connection.execute(statement, parameters))
    return ARTIFACT_ORDER.page(rows, limit)


async def get_artifact(connection: AsyncConnection, artifact_id: uuid.UUID) -> dict[str, Any]:
    """One artifact's metadata and whole sidecar, or `NotFound`."""
    statement = select(*ARTIFACT_COLUMNS).where(Artifact.id == artifact_id)
    rows = as_dicts(await connection.execute(statement))
    if not rows:
        raise NotFound(f"artifact {artifact_id} not found")
    return rows[0]


async def get_artifact_content(
    connection: AsyncConnection, store: ArtifactStore, artifact_id: uuid.UUID
) -> ArtifactContent:
    """The content of an artifact, opened in its store: `NotFound` if the artifact or its
    content is not there, `ServiceUnavailable` if the store failed."""
    statement = select(Artifact.storage_key, Artifact.media_type, Artifact.name).where(
        Artifact.id == artifact_id
    )
    row = (await connection.execute(statement)).first()
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    stored = await store_io(store, 0, functools.partial(store.open, row.storage_key))
    return ArtifactContent(stored=stored, media_type=row.media_type, name=row.name)
