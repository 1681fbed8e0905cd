"""The database schema: runs, their nodes and dependency edges, artifacts, events, gates, API keys,
console sessions.

Timestamps are stored in UTC and come back timezone-aware on every backend. Relationships raise on
lazy load: a query says what it loads.
"""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from apps.orchestrator.model.states import GateStatus, NodeStatus, RunStatus

# A word of the API too (`apps.wire`); the domain imports it from here.
from apps.wire.statuses import KeyRole as KeyRole

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# An index whose `info` names a dialect under this key exists only on that dialect.
ONLY_ON = "only_on_dialect"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored in UTC: SQLite keeps it as naive UTC text, so values
    compare and sort correctly there too, and it is read back aware on both backends."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        # One parse of SQLite's text instead of the generic parse plus a conversion: timestamps
        # are most of what a list page reads.
        if dialect.name == "sqlite":
            return _parse_sqlite_utc
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON on both backends keeps documents as written (JSONB would reorder keys), and a None
# is stored as SQL NULL rather than a JSON null.
def _parse_sqlite_utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00")


JSONDocument = JSON(none_as_null=True)
EventId = BigInteger().with_variant(Integer(), "sqlite")


def _status_type(enum: type[StrEnum]) -> Enum:
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


def _spec_type(context: DefaultExecutionContext) -> Any:
    """A run's `task_type` from the `task_spec` it is inserted with."""
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]
    spec = parameters.get("task_spec")
    return spec.get("type") if isinstance(spec, dict) else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDocument,
    }


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        # Serves the title-contains filter on PostgreSQL; SQLite has no index for it and scans
        # in created_at order until a page is full.
        Index(
            "ix_runs_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
            info={ONLY_ON: "postgresql"},
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[RunStatus] = mapped_column(_status_type(RunStatus), default=RunStatus.QUEUED)
    task_spec: Mapped[dict[str, Any]]
    # The spec's type, written with it (never changed after), so a list of runs shows it
    # without parsing each run's spec, which may be megabytes. Null where the stored spec has
    # no type SQLite can read (migration 0006).
    task_type: Mapped[str | None] = mapped_column(Text, default=_spec_type)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    # The run's JSON in the runs list, before and after its node counts, written by the
    # database's triggers as the row changes (migration 0007). Not loaded with the run.
    summary_head: Mapped[str | None] = mapped_column(Text, deferred=True)
    summary_tail: Mapped[str | None] = mapped_column(Text, deferred=True)

    nodes: Mapped[list["Node"]] = relationship(
        back_populates="run", lazy="raise", order_by="Node.position"
    )


class NodeDependency(Base):
    """An edge of a run's DAG: `node_id` may start only after `depends_on_id` has succeeded."""

    __tablename__ = "node_dependencies"
    __table_args__ = (Index(None, "depends_on_id"),)

    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )


# Not `status = 'running'`: SQLite plans a statement comparing status with a bound parameter
# against such an index from the parameter's value, preparing it again at every execution.
LEASED = text("lease_expires_at IS NOT NULL")
HELD = text("lease_owner IS NOT NULL")


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        UniqueConstraint("run_id", "position"),
        # The claim reads a run's first ready nodes in plan order from it (migration 0005).
        Index(None, "run_id", "status", "position"),
        # The reads of nodes by status (the gauges, the runs with nodes to claim). A claim moves
        # its nodes from ready to running in every index keyed by status, at a cost that grows
        # with the nodes waiting: one such index, and the leases indexed only where held (0008);
        # none on SQLite, whose readers use the runs' node counts and the index above (0009).
        Index(None, "status", info={ONLY_ON: "postgresql"}),
        Index(None, "lease_expires_at", sqlite_where=LEASED, postgresql_where=LEASED),
        Index(None, "lease_owner", sqlite_where=HELD, postgresql_where=HELD),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[NodeStatus] = mapped_column(_status_type(NodeStatus), default=NodeStatus.PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    gate: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="nodes", lazy="raise")
    depends_on: Mapped[list["Node"]] = relationship(
        secondary="node_dependencies",
        primaryjoin="Node.id == NodeDependency.node_id",
        secondaryjoin="Node.id == NodeDependency.depends_on_id",
        lazy="raise",
        order_by="Node.position",
        viewonly=True,
    )


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "run_id", "created_at", "id"),
        Index(None, "node_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    sidecar: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """One thing that happened. The id only grows: it is the cursor of polling and streaming."""

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "run_id", "id"),
        Index(None, "type", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Gate(Base):
    """One opening of a human gate on a node, and the decision that closed it."""

    __tablename__ = "gates"
    __table_args__ = (
        Index(None, "status", "opened_at", "id"),
        Index(None, "status", "expires_at"),
        Index(None, "run_id"),
        Index(
            "uq_gates_node_id_pending",
            "node_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    artifact_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="SET NULL")
    )
    status: Mapped[GateStatus] = mapped_column(_status_type(GateStatus), default=GateStatus.PENDING)
    when: Mapped[str] = mapped_column(String(8), default="after")
    on_timeout: Mapped[str | None] = mapped_column(String(8))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(100))
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    action: Mapped[str | None] = mapped_column(String(8))
    notes: Mapped[str | None] = mapped_column(Text)
    patch: Mapped[dict[str, Any] | None]


class ApiKey(Base):
    """A named key with a role. Only the key's SHA-256 is stored; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[KeyRole] = mapped_column(_status_type(KeyRole))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A browser's sign-in to the web console with a key. Only the cookie's SHA-256 is stored.

    A stored key's session ends with the key (the lookup joins it unrevoked); a session of the
    API_KEY setting (`key_id` null) keeps that setting's hash and ends when the setting changes.
    """

    __tablename__ = "console_sessions"
    __table_args__ = (Index(None, "key_id"), Index(None, "expires_at"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[KeyRole] = mapped_column(_status_type(KeyRole))
    settings_key_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


# The Core tables, for statements built without the ORM. Mapped classes type `__table__` as any
# FromClause; these are the Tables declared above.
RUNS = cast(Table, Run.__table__)
NODES = cast(Table, Node.__table__)
DEPENDENCIES = cast(Table, NodeDependency.__table__)
ARTIFACTS = cast(Table, Artifact.__table__)
EVENTS = cast(Table, Event.__table__)
GATES = cast(Table, Gate.__table__)
