"""runs keep their list summary's JSON text, and SQLite their node counts, kept by triggers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 19:20:00

The runs list (`GET /runs`) is written by the database (apps/orchestrator/reading/run_pages.py).
Writing each run's JSON on every read was most of a page's cost: on SQLite per run a printf of the
id, five json_quote, five timestamps rewritten and checked; on PostgreSQL five to_char and a
concat. A run is read in many more pages than it is written, so its JSON is written here with the
row instead, as two texts around its node counts:
`summary_head` (`{"id":..` up to `"node_counts":`) and `summary_tail` (`,"usage":{..}}`), in
`RunSummary`'s shape in UTC (`tests/api/test_list_encoding.py` holds the list equal to it), the
cost as `GET /runs/{run_id}` writes it: by SQLite's JSON (15 significant digits), by PostgreSQL's
shortest exact text of the number (with `.0` when it is whole, as pydantic writes a float).

Triggers write them at every insert and update of a run, so that no code of the orchestrator
changes and what the previous version writes during a rollover (deploy.md: migrations come first)
is written too. On PostgreSQL a BEFORE trigger sets them in the row being written, on SQLite an
AFTER trigger writes them into it (SQLite's triggers cannot change the row being written): there
each update of a run (its usage is added once a pass) writes its row twice, spec and all, which
for a spec of megabytes doubles what the updates write. On SQLite a timestamp not in UTCDateTime's canonical text
leaves the head NULL, and the page is then encoded by the API (no row of this version has one).

On SQLite the node counts are kept too, in a table of their own, `run_node_counts` (like the
title search index, no model declares it): counting a run's nodes was most of what was left of a
page's cost there. Triggers on `nodes` keep them in step at every insert, change of status and
delete (SQLite has one writer at a time, so a trigger waits for no lock). Not on the run's row,
which holds the task spec: rewriting it at every move of a node would cost a spec's size each
time. Not on PostgreSQL: keeping counts there takes a row lock per run at every claim, which
claims otherwise never wait for (apps/orchestrator/model/locks.py); a claim would then wait for
a transaction holding the run that waits for the node being claimed (a cancel), a deadlock. There
the page counts the nodes (an index-only scan).

A later change of the summary's shape changes these triggers (and the texts already written) in a
migration of its own: the SQL below is this revision's, not the application's.
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "cancel_requested_at")
# The columns the texts are written from: an update naming none of them leaves them as they are.
SOURCES = (
    "id", "title", "status", "task_type", "error", "created_by", *TIMESTAMPS,
    "prompt_tokens", "completion_tokens", "total_tokens", "cost",
)  # fmt: skip
# NodeStatus's values as this revision knows them, in the order of the list's node_counts.
NODE_STATUSES = (
    "pending", "ready", "running", "waiting_approval", "succeeded", "failed", "cancelled",
    "skipped",
)  # fmt: skip
CANONICAL = "[0-9]" * 4 + "-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]." + "[0-9]" * 6


def head_parts(run_id: str, text: str, timestamp: Callable[[str], str], row: str) -> list[str]:
    """The head's SQL parts in order (string literals and expressions): the run's fields before
    its node counts, with `row` the prefix of the row's columns."""
    return [
        '\'{"id":"\'',
        run_id,
        '\'","title":\'',
        *(
            part
            for index, column in enumerate(("title", "status", "task_type", "error", "created_by"))
            for part in ((f"',\"{column}\":'",) if index else ()) + (text.format(row + column),)
        ),
        *(part for column in TIMESTAMPS for part in (f"',\"{column}\":'", timestamp(row + column))),
        "',\"node_counts\":'",
    ]


def tail_parts(integer: str, cost: str, row: str) -> list[str]:
    return [
        '\',"usage":{"prompt_tokens":\'',
        integer.format(row + "prompt_tokens"),
        "',\"completion_tokens\":'",
        integer.format(row + "completion_tokens"),
        "',\"total_tokens\":'",
        integer.format(row + "total_tokens"),
        "',\"cost\":'",
        cost,
        "'}}'",
    ]


def sqlite_printf(parts: list[str]) -> str:
    """One printf writing `parts`: a chain of || copies the text again at every step."""
    template, arguments = [], []
    for part in parts:
        if len(part) >= 2 and part[0] == part[-1] == "'" and "'" not in part[1:-1]:
            template.append(part[1:-1].replace("%", "%%"))
        else:
            template.append("%s")
            arguments.append(part)
    return f"printf('{''.join(template)}', {', '.join(arguments)})"


def sqlite_timestamp(value: str) -> str:
    # 2026-01-02 03:04:05.000120 -> "2026-01-02T03:04:05.000120Z"; no fraction when it is zero
    # (the text is canonical, so it has one ' ' and one '.'). NULL stays NULL through ||.
    text = f"replace(replace({value}, ' ', 'T'), '.000000', '')"
    return f"coalesce('\"' || {text} || 'Z\"', 'null')"


def sqlite_texts() -> tuple[str, str]:
    """SQLite's head and tail of the run in the row being updated (columns by their names)."""
    run_id = "lower(id)"
    dashed = (
        f"printf('%.8s-%.4s-%.4s-%.4s-%s', {run_id}, substr({run_id}, 9), "
        f"substr({run_id}, 13), substr({run_id}, 17), substr({run_id}, 21))"
    )
    head = sqlite_printf(head_parts(dashed, "json_quote({})", sqlite_timestamp, ""))
    canonical = " AND ".join(f"({c} IS NULL OR {c} GLOB '{CANONICAL}')" for c in TIMESTAMPS)
    tail = sqlite_printf(tail_parts("printf('%d', {})", "json_quote(cost)", ""))
    return f"CASE WHEN {canonical} THEN {head} END", tail


def postgres_timestamp(value: str) -> str:
    # One to_char with the fraction; a whole second drops it, as pydantic writes it (the text
    # has one '.', so the replace touches nothing else).
    text = f"to_char(({value} AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    return (
        f"CASE WHEN {value} IS NULL THEN 'null' "
        f"ELSE concat('\"', replace({text}, '.000000', ''), 'Z\"') END"
    )


def postgres_texts(row: str) -> tuple[str, str]:
    """PostgreSQL's head and tail of the run whose columns `row` prefixes."""
    text = "coalesce(CAST(to_json({}) AS TEXT), 'null')"
    head = head_parts(f"CAST({row}id AS TEXT)", text, postgres_timestamp, row)
    cost = f"CAST({row}cost AS TEXT)"
    # Whole numbers come back without a point ("2"); pydantic writes a float as 2.0.
    whole = f"CASE WHEN {cost} ~ '^-?[0-9]+$' THEN {cost} || '.0' ELSE {cost} END"
    tail = tail_parts("CAST({} AS TEXT)", whole, row)
    return f"concat({', '.join(head)})", f"concat({', '.join(tail)})"


def sqlite_statements() -> list[str]:
    head, tail = sqlite_texts()
    written = f"UPDATE runs SET summary_head = {head}, summary_tail = {tail} WHERE id = NEW.id"
    return [
        f"CREATE TRIGGER runs_summary_inserted AFTER INSERT ON runs BEGIN {written}; END",
        f"CREATE TRIGGER runs_summary_updated AFTER UPDATE OF {', '.join(SOURCES)} ON runs "
        f"BEGIN {written}; END",
    ]


def postgres_statements() -> list[str]:
    head, tail = postgres_texts("NEW.")
    return [
        "CREATE FUNCTION runs_text_of_summary() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"NEW.summary_head := {head}; NEW.summary_tail := {tail}; RETURN NEW; END $$",
        # BEFORE triggers run in the order of their names: this one after
        # runs_task_type_filled_in (0006), which fills in the type it writes.
        "CREATE TRIGGER runs_text_of_summary BEFORE INSERT OR UPDATE ON runs FOR EACH ROW "
        "EXECUTE FUNCTION runs_text_of_summary()",
    ]


def counted(added: str | None, taken: str | None) -> str:
    """SET terms counting one more node of the status `added` and one fewer of `taken` (SQL
    expressions, or None)."""
    terms = [
        " ".join(
            (s, "=", s)
            + ((f"+ ({added} = '{s}')",) if added else ())
            + ((f"- ({taken} = '{s}')",) if taken else ())
        )
        for s in NODE_STATUSES
    ]
    return ", ".join(terms)


def sqlite_node_counts() -> list[str]:
    columns = ", ".join(f"{s} INTEGER NOT NULL DEFAULT 0" for s in NODE_STATUSES)
    counts = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in NODE_STATUSES)
    first = ", ".join(f"NEW.status = '{s}'" for s in NODE_STATUSES)
    added = ", ".join(f"{s} = {s} + excluded.{s}" for s in NODE_STATUSES)
    change = (
        f"UPDATE run_node_counts SET {counted('NEW.status', 'OLD.status')} "
        "WHERE run_id = NEW.run_id"
    )
    return [
        "CREATE TABLE run_node_counts (run_id CHAR(32) NOT NULL PRIMARY KEY "
        f"REFERENCES runs (id) ON DELETE CASCADE, {columns}) WITHOUT ROWID",
        f"INSERT INTO run_node_counts (run_id, {', '.join(NODE_STATUSES)}) "
        f"SELECT run_id, {counts} FROM nodes GROUP BY run_id",
        # One statement: the run's first node makes its row.
        "CREATE TRIGGER nodes_counted_inserted AFTER INSERT ON nodes BEGIN "
        f"INSERT INTO run_node_counts (run_id, {', '.join(NODE_STATUSES)}) "
        f"VALUES (NEW.run_id, {first}) "
        f"ON CONFLICT (run_id) DO UPDATE SET {added}; END",
        "CREATE TRIGGER nodes_counted_moved AFTER UPDATE OF status ON nodes "
        f"WHEN OLD.status IS NOT NEW.status BEGIN {change}; END",
        "CREATE TRIGGER nodes_counted_deleted AFTER DELETE ON nodes BEGIN "
        f"UPDATE run_node_counts SET {counted(None, 'OLD.status')} WHERE run_id = OLD.run_id; END",
    ]


def backfill(dialect: str) -> str:
    head, tail = sqlite_texts() if dialect == "sqlite" else postgres_texts("")
    return f"UPDATE runs SET summary_head = {head}, summary_tail = {tail}"


REMOVE = {
    "sqlite": [
        "DROP TRIGGER nodes_counted_deleted",
        "DROP TRIGGER nodes_counted_moved",
        "DROP TRIGGER nodes_counted_inserted",
        "DROP TABLE run_node_counts",
        "DROP TRIGGER runs_summary_updated",
        "DROP TRIGGER runs_summary_inserted",
    ],
    "postgresql": [
        "DROP TRIGGER runs_text_of_summary ON runs",
        "DROP FUNCTION runs_text_of_summary()",
    ],
}


def upgrade() -> None:
    op.add_column("runs", sa.Column("summary_head", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("summary_tail", sa.Text(), nullable=True))
    dialect = op.get_bind().dialect.name
    # Before the triggers exist: on PostgreSQL the trigger would write each text a second time.
    op.execute(backfill(dialect))
    statements = [*sqlite_statements(), *sqlite_node_counts()]
    for statement in statements if dialect == "sqlite" else postgres_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in REMOVE[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_column("runs", "summary_tail")
    op.drop_column("runs", "summary_head")
