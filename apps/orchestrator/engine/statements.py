"""The statements of a worker's pass that run once per node: record a success, add its usage,
make its dependents ready, claim ready nodes with what their dependencies produced.

They are built once (per dialect where it matters) with bound parameters and run on the pass's
connection as Core statements: building and cache-keying a statement, and the ORM's bulk
machinery, cost more than the statement itself when a node's bookkeeping must take a few
milliseconds in all.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    Text,
    Update,
    Uuid,
    any_,
    bindparam,
    cast,
    column,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable, operators
from sqlalchemy.sql.expression import CTE, Subquery, UnaryExpression

from apps.core.database import JSON_SERIALIZER
from apps.orchestrator.model.clock import database_time, database_time_later, time_parameters
from apps.orchestrator.model.models import (
    ARTIFACTS,
    DEPENDENCIES,
    EVENTS,
    NODES,
    RUNS,
    UTCDateTime,
    utcnow,
)
from apps.orchestrator.model.prepared import (
    chunked,
    execute_many,
    fetch,
    listed,
    spread,
)
from apps.orchestrator.model.states import NODE_TERMINAL, NodeStatus, RunStatus
from apps.orchestrator.model.transitions import (
    MOVED_NODE_COLUMNS,
    MovedNode,
    moved_nodes,
    node_event_type,
    node_values,
    started_event_text,
)

UPSTREAM = NODES.alias("upstream")

# Runs whose nodes may start: a run waiting at one node's gate goes on with its other branches.
ACTIVE_RUNS = (RunStatus.RUNNING, RunStatus.WAITING)
MAX_POSITION = 2**31 - 1

NOW = bindparam("now", type_=UTCDateTime())
ARTIFACT_COLUMNS = (
    *("id", "run_id", "node_id", "name", "media_type", "size", "sha256"),
    *("storage_key", "sidecar", "created_at"),
)
# Each column bound by name: a statement that `prepared` runs sets every column it writes.
INSERT_ARTIFACTS = insert(ARTIFACTS).values(
    {name: bindparam(name, type_=ARTIFACTS.c[name].type) for name in ARTIFACT_COLUMNS}
)


def _run_is_going_on() -> ColumnElement[bool]:
    """The node's run is active and no cancel of it was asked for."""
    # The statuses as parameters of their own, not a list expanded at each execution.
    active = [literal(status, RUNS.c.status.type) for status in ACTIVE_RUNS]
    return exists(
        select(RUNS.c.id).where(
            RUNS.c.id == NODES.c.run_id,
            RUNS.c.status.in_(active),
            RUNS.c.cancel_requested_at.is_(None),
        )
    )


@cache
def _succeed(count: int) -> Update:
    """The nodes of `count` (node, attempt) pairs bound as `node_<i>` and `attempt_<i>`."""
    nodes = listed("node", count, Uuid())
    pairs = zip(nodes, listed("attempt", count, Integer()), strict=True)
    attempts = tuple_(NODES.c.id, NODES.c.attempt).in_([tuple_(*pair) for pair in pairs])
    # The ids on their own too: SQLite reads a list of several row values by no index, and has
    # no index on status to start from (migration 0009), so it would read every node.
    return (
        update(NODES)
        .where(
            NODES.c.status == NodeStatus.RUNNING,
            NODES.c.id.in_(nodes),
            attempts,
            _run_is_going_on(),
        )
        .values(node_values(NodeStatus.RUNNING, NodeStatus.SUCCEEDED, NOW))
        .returning(*MOVED_NODE_COLUMNS)
    )


def mark_succeeded(
    connection: Connection, attempts: Sequence[tuple[uuid.UUID, int]]
) -> list[MovedNode]:
    """Move the nodes still running these (node, attempt) pairs (at most `MAX_LISTED`), in
    runs going on, to succeeded."""
    nodes, tries = zip(*attempts, strict=True) if attempts else ((), ())
    parameters = spread("node", nodes) | spread("attempt", tries) | {"now": utcnow()}
    return moved_nodes(fetch(connection, _succeed(len(attempts)), parameters))


def add_artifacts(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    execute_many(connection, INSERT_ARTIFACTS, rows)


@cache
def _add_usage() -> Update:
    return (
        update(RUNS)
        .where(RUNS.c.id == bindparam("run"))
        .values(
            prompt_tokens=RUNS.c.prompt_tokens + bindparam("prompt", type_=BigInteger()),
            completion_tokens=RUNS.c.completion_tokens
            + bindparam("completion", type_=BigInteger()),
            total_tokens=RUNS.c.total_tokens + bindparam("tokens", type_=BigInteger()),
            cost=RUNS.c.cost + bindparam("spent", type_=Float()),
            # What the ORM's `onupdate` does for a statement of its own.
            updated_at=NOW,
        )
        .returning(RUNS.c.status, RUNS.c.total_tokens, RUNS.c.cost)
    )


class Usage(NamedTuple):
    """A run's status and totals once its new calls are added."""

    status: RunStatus
    total_tokens: int
    cost: float


def add_usage(
    connection: Connection, run_id: uuid.UUID, prompt: int, completion: int, cost: float
) -> Usage:
    """Add a run's new calls to its totals; its status, total tokens and cost now."""
    parameters = {
        "run": run_id,
        "prompt": prompt,
        "completion": completion,
        "tokens": prompt + completion,
        "spent": cost,
        "now": utcnow(),
    }
    [(status, tokens, spent)] = fetch(connection, _add_usage(), parameters)
    return Usage(status, tokens, spent)


@dataclass(frozen=True, slots=True)
class Output:
    """A success to record: the attempt that produced it, its artifact's row and what its call
    cost."""

    attempt: int
    artifact: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost: float

    @property
    def node_id(self) -> uuid.UUID:
        node_id: uuid.UUID = self.artifact["node_id"]
        return node_id

    @property
    def run_id(self) -> uuid.UUID:
        run_id: uuid.UUID = self.artifact["run_id"]
        return run_id


def usage_totals(outputs: Iterable[Output]) -> dict[uuid.UUID, tuple[int, int, float]]:
    """Per run, the prompt tokens, completion tokens and cost of `outputs`."""
    totals: dict[uuid.UUID, tuple[int, int, float]] = {}
    for output in outputs:
        prompt, completion, cost = totals.get(output.run_id, (0, 0, 0.0))
        totals[output.run_id] = (
            prompt + output.prompt_tokens,
            completion + output.completion_tokens,
            cost + output.cost,
        )
    return totals


class RecordedSuccesses(NamedTuple):
    """What `record_successes` did: the nodes it moved to succeeded (in plan order), their
    runs' usage now, and the rows of the nodes it made ready (with their gates; None when it
    left that to `promote`)."""

    succeeded: list[MovedNode]
    usage: dict[uuid.UUID, Usage]
    promoted: list[Any] | None = None


def record_successes(
    connection: Connection, outputs: Sequence[Output], *, promote: bool = False
) -> RecordedSuccesses:
    """Move the nodes still running the attempts of `outputs`, in runs going on, to succeeded,
    with the artifacts of those outputs and their usage added to their runs.

    On PostgreSQL one statement (`_record_successes`) does it all, one round trip rather than
    three, and with `promote` makes their dependents ready too (as `promote` would after it).
    """
    if connection.dialect.name == "postgresql":
        parameters = _output_arrays(outputs) | {"now": utcnow()}
        rows = fetch(connection, _record_successes(promote), parameters)
        succeeded = [row for row in rows if row.promoted is None]
        usage = {row.run_id: Usage(row.status, row.total_tokens, row.cost) for row in succeeded}
        promoted = [row for row in rows if row.promoted] if promote else None
        return RecordedSuccesses(moved_nodes(succeeded), usage, promoted)
    attempts = [(output.node_id, output.attempt) for output in outputs]
    moved = moved_nodes(
        node for part in chunked(attempts) for node in mark_succeeded(connection, part)
    )
    recorded = {node.id for node in moved}
    kept = [output for output in outputs if output.node_id in recorded]
    if not kept:
        return RecordedSuccesses(moved, {})
    add_artifacts(connection, [output.artifact for output in kept])
    usage = {
        run_id: add_usage(connection, run_id, *totals)
        for run_id, totals in usage_totals(kept).items()
    }
    return RecordedSuccesses(moved, usage)


# The columns of `Output` that `_record_successes` is given, one array each, and their types.
OUTPUT_ARRAYS: tuple[tuple[str, Any], ...] = (
    ("node_id", Uuid()),
    ("attempt", Integer()),
    ("artifact_id", Uuid()),
    ("name", Text()),
    ("media_type", Text()),
    ("size", BigInteger()),
    ("sha256", Text()),
    ("storage_key", Text()),
    ("sidecar", Text()),
    ("created_at", DateTime(timezone=True)),
    ("prompt_tokens", BigInteger()),
    ("completion_tokens", BigInteger()),
    ("cost", Float()),
)


def _output_arrays(outputs: Sequence[Output]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {f"outputs_{name}": [] for name, _ in OUTPUT_ARRAYS}
    for output in outputs:
        row = output.artifact
        values = {
            "node_id": output.node_id,
            "attempt": output.attempt,
            "artifact_id": row["id"],
            "name": row["name"],
            "media_type": row["media_type"],
            "size": row["size"],
            "sha256": row["sha256"],
            "storage_key": row["storage_key"],
            # As the engine's serializer writes a JSON column (the column keeps the text).
            "sidecar": JSON_SERIALIZER(row["sidecar"]),
            "created_at": row["created_at"],
            "prompt_tokens": output.prompt_tokens,
            "completion_tokens": output.completion_tokens,
            "cost": output.cost,
        }
        for name, value in values.items():
            columns[f"outputs_{name}"].append(value)
    return columns


@cache
def _record_successes(promote: bool) -> Executable:
    """`record_successes` on PostgreSQL: data-modifying CTEs over the outputs given as arrays
    (one text of the statement, prepared once, however many outputs a pass records). Every
    part sees the nodes the first one moved, and only those. Its rows are the nodes moved to
    succeeded, with their run's usage, then (with `promote`) those made ready, with their gate
    (`promoted` says which a row is)."""
    # Named apart from the columns: a parameter named as a column of an INSERT or UPDATE would
    # be taken for that column's value.
    arrays = [bindparam(f"outputs_{name}", type_=ARRAY(type_)) for name, type_ in OUTPUT_ARRAYS]
    unnested = (
        func.unnest(*arrays)
        .table_valued(*(column(name, type_) for name, type_ in OUTPUT_ARRAYS))
        .render_derived(name="unnested")
    )
    outputs = select(unnested).cte("outputs")
    moved = (
        update(NODES)
        .where(
            NODES.c.status == NodeStatus.RUNNING,
            NODES.c.id == outputs.c.node_id,
            NODES.c.attempt == outputs.c.attempt,
            _run_is_going_on(),
        )
        .values(node_values(NodeStatus.RUNNING, NodeStatus.SUCCEEDED, NOW))
        .returning(*MOVED_NODE_COLUMNS)
        .cte("moved")
    )
    kept = outputs.join(moved, moved.c.id == outputs.c.node_id)
    artifacts = select(
        outputs.c.artifact_id,
        moved.c.run_id,
        outputs.c.node_id,
        outputs.c.name,
        outputs.c.media_type,
        outputs.c.size,
        outputs.c.sha256,
        outputs.c.storage_key,
        cast(outputs.c.sidecar, JSON()),
        outputs.c.created_at,
    ).select_from(kept)
    columns = ["id", "run_id", "node_id", "name", "media_type", "size", "sha256"]
    columns += ["storage_key", "sidecar", "created_at"]
    added = insert(ARTIFACTS).from_select(columns, artifacts).cte("added")
    totals = (
        select(
            moved.c.run_id,
            func.sum(outputs.c.prompt_tokens).label("prompt"),
            func.sum(outputs.c.completion_tokens).label("completion"),
            func.sum(outputs.c.cost).label("cost"),
        )
        .select_from(kept)
        .group_by(moved.c.run_id)
        .subquery("totals")
    )
    usage = (
        update(RUNS)
        .where(RUNS.c.id == totals.c.run_id)
        .values(
            prompt_tokens=RUNS.c.prompt_tokens + totals.c.prompt,
            completion_tokens=RUNS.c.completion_tokens + totals.c.completion,
            total_tokens=RUNS.c.total_tokens + totals.c.prompt + totals.c.completion,
            cost=RUNS.c.cost + totals.c.cost,
            # What the ORM's `onupdate` does for a statement of its own.
            updated_at=NOW,
        )
        .returning(RUNS.c.id, RUNS.c.status, RUNS.c.total_tokens, RUNS.c.cost)
        .cte("usage")
    )
    gate_type = NODES.c.gate.type
    succeeded = (
        select(
            *moved.c,
            usage.c.status,
            usage.c.total_tokens,
            usage.c.cost,
            type_coerce(null(), gate_type).label("gate"),
            type_coerce(null(), Boolean()).label("promoted"),
        )
        .select_from(moved.join(usage, usage.c.id == moved.c.run_id))
        .add_cte(added)
    )
    if not promote:
        return succeeded
    # The dependents as one array, computed first: the plan then starts from them. As a join,
    # planned from the nodes' status index instead (which stale statistics make look as cheap),
    # it read every pending node of every run in each pass.
    dependents = select(func.array_agg(DEPENDENCIES.c.node_id)).where(
        DEPENDENCIES.c.depends_on_id.in_(select(moved.c.id))
    )
    # (An array's expression, not a subquery: `= ANY (SELECT ...)` would compare each row.)
    in_scope = NODES.c.id == any_(cast(dependents.scalar_subquery(), ARRAY(Uuid())))
    ready = _promotion(in_scope, select(moved.c.id)).cte("ready")
    promoted = select(
        *(ready.c[name] for name in ("id", "run_id", "position", "attempt")),
        null(),
        null(),
        null(),
        ready.c.gate,
        true(),
    )
    return union_all(succeeded, promoted)


@cache
def _promote(dialect: str, scope: str, count: int) -> Update:
    """Pending nodes of active runs with every dependency succeeded, among the dependents of
    the `count` nodes bound as `after_<i>` (scope "after") or the nodes of the runs bound as
    `runs_<i>`."""
    ids = listed(scope, count, Uuid())
    if scope == "after":
        dependents = select(DEPENDENCIES.c.node_id).where(DEPENDENCIES.c.depends_on_id.in_(ids))
        return _promotion(NODES.c.id.in_(dependents), by_scope=dialect == "sqlite")
    return _promotion(NODES.c.run_id.in_(ids))


def _promotion(
    in_scope: ColumnElement[bool], succeeding: Select[Any] | None = None, by_scope: bool = False
) -> Update:
    """Make ready the pending nodes of `in_scope` in active runs whose dependencies have all
    succeeded, or are among the nodes `succeeding` selects (which the same statement moves to
    succeeded, and which it therefore still sees running). `by_scope` (SQLite) has the plan
    find the nodes from `in_scope` alone."""
    not_succeeded = UPSTREAM.c.status != NodeStatus.SUCCEEDED
    if succeeding is not None:
        not_succeeded &= UPSTREAM.c.id.not_in(succeeding)
    blocked = (
        select(DEPENDENCIES.c.node_id)
        .join(UPSTREAM, UPSTREAM.c.id == DEPENDENCIES.c.depends_on_id)
        .where(DEPENDENCIES.c.node_id == NODES.c.id, not_succeeded)
    )
    status: ColumnElement[Any] = NODES.c.status
    if by_scope:
        # SQLite's unary + keeps the index on status out of the plan: without statistics it
        # preferred it, and read every pending node of every run to find a few dependents.
        status = UnaryExpression(status, operator=operators.custom_op("+"), type_=status.type)
    return (
        update(NODES)
        .where(status == NodeStatus.PENDING, in_scope, ~exists(blocked), _run_is_going_on())
        .values(node_values(NodeStatus.PENDING, NodeStatus.READY, NOW))
        .returning(*MOVED_NODE_COLUMNS, NODES.c.gate)
    )


def promote(
    connection: Connection,
    *,
    after: Sequence[uuid.UUID] = (),
    runs: Sequence[uuid.UUID] = (),
) -> list[Any]:
    """Make ready the nodes whose dependencies have all succeeded, among the dependents of the
    nodes `after` and the nodes of `runs`; their rows, with their gates, in plan order."""
    rows: list[Any] = []
    for scope, ids in (("after", after), ("runs", runs)):
        for part in chunked(ids):
            parameters = spread(scope, part) | {"now": utcnow()}
            statement = _promote(connection.dialect.name, scope, len(part))
            rows += fetch(connection, statement, parameters)
    return sorted(rows, key=lambda row: (row.run_id, row.position))


@cache
def _finished_runs(count: int) -> Select[Any]:
    final = [literal(status, NODES.c.status.type) for status in NODE_TERMINAL]
    unfinished = select(NODES.c.id).where(NODES.c.run_id == RUNS.c.id, NODES.c.status.not_in(final))
    return select(
        RUNS.c.id,
        RUNS.c.status,
        RUNS.c.task_spec["budget"].label("budget"),
        RUNS.c.total_tokens,
        RUNS.c.cost,
        RUNS.c.cancel_requested_at.is_not(None).label("cancelling"),
    ).where(
        RUNS.c.id.in_(listed("runs", count, Uuid())),
        RUNS.c.status.in_([literal(status, RUNS.c.status.type) for status in ACTIVE_RUNS]),
        ~exists(unfinished),
    )


def finished_runs(connection: Connection, run_ids: Sequence[uuid.UUID]) -> list[Any]:
    """Those of the active `run_ids` whose nodes are all final, with their budget, usage and
    whether a cancel was asked for."""
    return [
        row
        for part in chunked(run_ids)
        for row in fetch(connection, _finished_runs(len(part)), spread("runs", part))
    ]


CLAIMED_COLUMNS = (
    NODES.c.key,
    NODES.c.role,
    NODES.c.prompt,
    NODES.c.provider,
    NODES.c.model,
    NODES.c.max_attempts,
    NODES.c.timeout_seconds,
    NODES.c.gate,
    select(RUNS.c.title).where(RUNS.c.id == NODES.c.run_id).scalar_subquery().label("title"),
)


# SQLAlchemy writes a RETURNING clause's columns on SQLite without their tables, which leaves the
# columns of a subquery's joins ambiguous; and SQLite before 3.44 has no ORDER BY in an aggregate,
# so it aggregates an ordered subquery, in that subquery's order.
SQLITE_UPSTREAM_OUTPUTS = f"""(SELECT json_group_array(json_array(o."key", o.storage_key, o.size))
FROM (SELECT u."key" AS "key", a.storage_key AS storage_key, a.size AS size
FROM {DEPENDENCIES.name} AS d JOIN {NODES.name} AS u ON u.id = d.depends_on_id
JOIN {ARTIFACTS.name} AS a ON a.node_id = u.id
WHERE d.node_id = {NODES.name}.id ORDER BY u.position, a.created_at) AS o)"""


def _upstream_outputs(dialect: str) -> ColumnElement[Any]:
    """The claimed node's inputs, for the claim to return with it rather than in a statement
    of its own: `[key, storage key, size]` of each artifact of its dependencies, in plan
    order, each dependency's oldest first (so that its latest is the one a reader keeps)."""
    if dialect != "postgresql":
        return type_coerce(literal_column(SQLITE_UPSTREAM_OUTPUTS), JSON()).label("upstream")
    outputs = DEPENDENCIES.join(UPSTREAM, UPSTREAM.c.id == DEPENDENCIES.c.depends_on_id).join(
        ARTIFACTS, ARTIFACTS.c.node_id == UPSTREAM.c.id
    )
    entry = func.json_build_array(UPSTREAM.c.key, ARTIFACTS.c.storage_key, ARTIFACTS.c.size)
    listed = func.json_agg(aggregate_order_by(entry, UPSTREAM.c.position, ARTIFACTS.c.created_at))
    found = (
        select(listed)
        .select_from(outputs)
        .where(DEPENDENCIES.c.node_id == NODES.c.id)
        .scalar_subquery()
    )
    return type_coerce(found, JSON()).label("upstream")


def upstream_of(row: Any) -> dict[str, tuple[str, int]]:
    """A claimed row's inputs (see `_upstream_outputs`): per dependency's key, the storage key
    and size of its latest artifact, in plan order."""
    return {key: (storage_key, size) for key, storage_key, size in row.upstream or ()}


@dataclass(frozen=True, slots=True)
class RunScope:
    """The runs a pass may touch: every run (the default), one run only, or all but some."""

    only: uuid.UUID | None = None
    excluded: frozenset[uuid.UUID] = frozenset()

    def where(self, run_id: ColumnElement[uuid.UUID]) -> list[ColumnElement[bool]]:
        """The condition on `run_id` for a statement built per call."""
        if self.only is not None:
            return [run_id == self.only]
        return [run_id.not_in(self.excluded)] if self.excluded else []

    @property
    def kind(self) -> str:
        """What a statement built once needs to know of the scope (see `_runs_in_scope`)."""
        if self.only is not None:
            return "only"
        return "excluding" if self.excluded else "every"

    def parameters(self) -> dict[str, Any]:
        """The values the statement of `_runs_in_scope(self.kind)` is bound to."""
        if self.only is not None:
            return {"run": self.only}
        return {"excluded": list(self.excluded)} if self.excluded else {}


EVERY_RUN = RunScope()


def _runs_in_scope(kind: str) -> list[ColumnElement[bool]]:
    if kind == "only":
        return [RUNS.c.id == bindparam("run")]
    if kind == "excluding":
        return [RUNS.c.id.not_in(bindparam("excluded", expanding=True))]
    return []


def _due(nodes: Any, dialect: str) -> ColumnElement[bool]:
    """The node is ready and its backoff, if any, is over."""
    now = database_time(dialect)
    ready_now: ColumnElement[bool] = (nodes.c.status == NodeStatus.READY) & (
        nodes.c.next_attempt_at.is_(None) | (nodes.c.next_attempt_at <= now)
    )
    return ready_now


@cache
def _claim(dialect: str, scope: str, with_events: bool = False) -> Executable:
    """Claim up to `slots` due ready nodes of active runs (of the runs `scope` names), oldest
    run first, leaving each run at most `per_run` running nodes; `with_events` on PostgreSQL
    inserts the events (see `_with_events`).

    It looks only at the `slots` oldest active runs with a due ready node and room to run it,
    and at the first `per_run` such nodes of each (in plan order, from the index on run, status
    and position): a claim costs what the slots need, however many nodes wait behind them.
    """
    chosen = _chosen_postgresql(scope) if dialect == "postgresql" else _chosen_sqlite(scope)
    # Materialized: the choice is made once. As an IN (subquery) PostgreSQL may plan it as the
    # inner side of a nested loop, run again per ready row, each time past the rows already
    # claimed, and so claim every ready node whatever the slots.
    chosen_once = chosen.cte("chosen").prefix_with("MATERIALIZED")
    values = node_values(NodeStatus.READY, NodeStatus.RUNNING, NOW) | {
        "attempt": NODES.c.attempt + 1,
        "lease_owner": bindparam("worker"),
        "lease_expires_at": database_time_later(dialect),
        "next_attempt_at": None,
    }
    claimed = (
        update(NODES)
        .where(NODES.c.status == NodeStatus.READY, NODES.c.id == chosen_once.c.id)
        .values(values)
        .returning(*MOVED_NODE_COLUMNS, *CLAIMED_COLUMNS, _upstream_outputs(dialect))
    )
    return _with_events(claimed) if with_events else claimed


def _oldest_runs(dialect: str, status: RunStatus, busy: Any, scope: str) -> Select[Any]:
    """The active runs of `status` with a due ready node and room to run it (`busy`, their
    running nodes, under `per_run`), oldest first, at most `slots` of them: read from the index
    on status and creation, which stops there (the runs behind them are never looked at)."""
    ready = NODES.alias("ready")
    return (
        select(RUNS.c.id, RUNS.c.created_at)
        .where(RUNS.c.status == status, RUNS.c.cancel_requested_at.is_(None))
        .where(exists().where(ready.c.run_id == RUNS.c.id, _due(ready, dialect)))
        .where(busy < bindparam("per_run"), *_runs_in_scope(scope))
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(bindparam("slots"))
    )


def _candidates(per_status: Sequence[Subquery]) -> CTE:
    """The `slots` oldest of the runs found per active status (`_oldest_runs`), chosen once."""
    both = union_all(*(select(oldest) for oldest in per_status)).subquery("oldest")
    return (
        select(both)
        .order_by(both.c.created_at)
        .limit(bindparam("slots"))
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )


def _chosen_postgresql(scope: str) -> Select[Any]:
    """The nodes a claim takes on PostgreSQL (see `_claim`), locked.

    Each candidate run's running nodes are counted once (a lateral count), and its first due
    ready nodes are read by a lateral query limited to the room it has: no ranking of the rows,
    no join back to the runs. A chain's claim takes about a fifth less server time than with
    SQLite's choice (which ranks them), a wide plan's the same."""
    running = NODES.alias("running")
    busy = (
        select(func.count().label("busy"))
        .where(running.c.run_id == RUNS.c.id, running.c.status == NodeStatus.RUNNING)
        .lateral("counted")
    )
    per_status = [
        _oldest_runs("postgresql", status, busy.c.busy, scope)
        .add_columns(busy.c.busy)
        .select_from(RUNS.join(busy, true()))
        .subquery(f"oldest_{status}")
        for status in ACTIVE_RUNS
    ]
    candidates = _candidates(per_status)
    ready = NODES.alias("ready")
    # The status bounded as a range, and the order asked for by status, then position: compared
    # for equality, the status drops out of the order the plan must give, and a planner without
    # statistics (a new database) read the index on run and position, every node of the run
    # before its ready ones (a chain's whole length at each claim). Now it reads the run's range
    # of the index on run, status and position, or without statistics the ready nodes from the
    # index on status, and sorts those.
    now = database_time("postgresql")
    first_ready = (
        select(ready.c.id, ready.c.position)
        .where(
            ready.c.run_id == candidates.c.id,
            ready.c.status.between(NodeStatus.READY, NodeStatus.READY),
            ready.c.next_attempt_at.is_(None) | (ready.c.next_attempt_at <= now),
        )
        .order_by(ready.c.status, ready.c.position)
        .limit(bindparam("per_run", type_=Integer()) - candidates.c.busy)
        .lateral("first_ready")
    )
    # The rows to lock found by id alone: with a condition on their status too, a planner
    # without statistics read them from the index on status, every ready node once per node
    # chosen. The update checks the status of each row it claims.
    return (
        select(NODES.c.id)
        .select_from(
            candidates.join(first_ready, true()).join(NODES, NODES.c.id == first_ready.c.id)
        )
        .order_by(candidates.c.created_at, first_ready.c.position)
        .limit(bindparam("slots"))
        # Workers on other hosts pass over the rows this one is claiming instead of queueing.
        .with_for_update(of=NODES, skip_locked=True)
    )


def _chosen_sqlite(scope: str) -> Select[Any]:
    """The nodes a claim takes on SQLite (see `_claim`)."""
    ready = NODES.alias("ready")
    running = NODES.alias("running")
    busy = (
        select(func.count())
        .select_from(running)
        .where(running.c.run_id == RUNS.c.id, running.c.status == NodeStatus.RUNNING)
        .scalar_subquery()
    )
    # The position of the run's `per_run`-th due ready node, if it has that many: its nodes up
    # to there are all a claim can take from it, read as one range of the index.
    last_position = (
        select(ready.c.position)
        .where(ready.c.run_id == RUNS.c.id, _due(ready, "sqlite"))
        .order_by(ready.c.position)
        .limit(1)
        .offset(bindparam("per_run_before"))
        .scalar_subquery()
    )
    per_status = [
        _oldest_runs("sqlite", status, busy, scope)
        .add_columns(
            busy.label("busy"),
            func.coalesce(last_position, MAX_POSITION).label("last_position"),
        )
        .subquery(f"oldest_{status}")
        for status in ACTIVE_RUNS
    ]
    candidates = _candidates(per_status)
    rank = func.row_number().over(partition_by=NODES.c.run_id, order_by=NODES.c.position)
    first_nodes = candidates.join(
        NODES,
        (NODES.c.run_id == candidates.c.id)
        & (NODES.c.status == NodeStatus.READY)
        & (NODES.c.position <= candidates.c.last_position),
    )
    ranked = (
        select(NODES.c.id, rank.label("rank"), candidates.c.busy)
        .select_from(first_nodes)
        .where(_due(NODES, "sqlite"))
        .subquery("ranked")
    )
    free = select(ranked.c.id).where(ranked.c.rank + ranked.c.busy <= bindparam("per_run"))
    return (
        select(NODES.c.id)
        .select_from(NODES.join(RUNS, RUNS.c.id == NODES.c.run_id))
        .where(NODES.c.id.in_(free))
        .order_by(RUNS.c.created_at, NODES.c.position)
        .limit(bindparam("slots"))
    )


# The columns of the events `_with_events` is given, one array each, and their types.
EVENT_ARRAYS: tuple[tuple[str, Any], ...] = (
    ("run_id", Uuid()),
    ("node_id", Uuid()),
    ("type", Text()),
    ("ts", DateTime(timezone=True)),
    ("data", Text()),
)


def _with_events(claim: Update) -> Executable:
    """`claim` (PostgreSQL), inserting the pass's events in the same statement: those given as
    arrays, then the `node.started` of each node it claims, in plan order. A pass that claims
    after recording saves the round trip of the events' insert; events stay last in the pass,
    so the lock that orders them (migration 0002) is taken as late as before."""
    claimed = claim.cte("claimed")
    arrays = [bindparam(f"events_{name}", type_=ARRAY(type_)) for name, type_ in EVENT_ARRAYS]
    given = (
        func.unnest(*arrays)
        .table_valued(
            *(column(name, type_) for name, type_ in EVENT_ARRAYS), with_ordinality="ordinal"
        )
        .render_derived(name="given")
    )
    plan_order = func.row_number().over(order_by=(claimed.c.run_id, claimed.c.position))
    data = (
        bindparam("started_before", type_=Text())
        + cast(claimed.c.attempt, Text())
        + bindparam("started_after", type_=Text())
    )
    started = select(
        claimed.c.run_id,
        claimed.c.id,
        literal(node_event_type(NodeStatus.READY, NodeStatus.RUNNING), Text()),
        cast(NOW, DateTime(timezone=True)),
        data,
        plan_order + bindparam("events_given", type_=BigInteger()),
    )
    events = union_all(select(given), started).subquery("events")
    rows = select(
        events.c.run_id, events.c.node_id, events.c.type, events.c.ts, cast(events.c.data, JSON())
    ).order_by(events.c.ordinal)
    logged = insert(EVENTS).from_select(["run_id", "node_id", "type", "ts", "data"], rows)
    return select(claimed).add_cte(logged.cte("logged"))


def claim(
    connection: Connection,
    *,
    worker: str,
    slots: int,
    per_run: int,
    lease_seconds: float,
    scope: RunScope = EVERY_RUN,
    events: Sequence[dict[str, Any]] = (),
) -> list[Any]:
    """Claim ready nodes of the runs of `scope` for `worker` under a lease of `lease_seconds`;
    their rows. On PostgreSQL, given `events` (rows of `record_event`), the statement inserts
    them, then each claimed node's `node.started`; elsewhere `events` must be empty."""
    dialect = connection.dialect.name
    parameters = {
        "worker": worker,
        "slots": slots,
        "per_run": per_run,
        "per_run_before": per_run - 1,
        **time_parameters(dialect, lease_seconds),
        **scope.parameters(),
    }
    if events:
        assert dialect == "postgresql", "events go in the claim on PostgreSQL only"
        before, after = started_event_text("claimed", {"worker": worker})
        parameters |= _event_arrays(events) | {"started_before": before, "started_after": after}
    rows = fetch(connection, _claim(dialect, scope.kind, bool(events)), parameters)
    return sorted(rows, key=lambda row: (row.run_id, row.position))


def _event_arrays(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    arrays: dict[str, Any] = {f"events_{name}": [] for name, _ in EVENT_ARRAYS}
    for event in events:
        for name, _ in EVENT_ARRAYS:
            value = event[name]
            # As the engine's serializer writes a JSON column (the column keeps the text).
            arrays[f"events_{name}"].append(JSON_SERIALIZER(value) if name == "data" else value)
    return arrays | {"events_given": len(events)}
