"""title search served by an index on SQLite; the claim's index on nodes by run, status, position

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:30:00

`GET /runs?q=` matches titles containing the text, ignoring case beyond ASCII (Python's
`casefold` on both sides). Without an index that is a scan of every title, seconds at millions of
runs. PostgreSQL already has one (`ix_runs_title_trgm`, pg_trgm, since 0001); this gives SQLite
an FTS5 table with the trigram tokenizer, holding each run's casefolded title under the run's
rowid, which triggers keep in step with `runs`. The triggers call `casefold`, the function every
connection of the app registers (`apps.core.database`): a connection without it cannot write a
run, rather than leave the index behind. A later migration that rebuilds `runs` (a batch
operation) drops the triggers with the table and must create them again, and rebuild the index.

The nodes' index on (run_id, status) gains `position`, on both backends: a claim reads the first
ready nodes of a run in plan order from it, without sorting all of the run's ready nodes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = (
    """CREATE TRIGGER runs_title_fts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO runs_title_fts (rowid, title) VALUES (new.rowid, casefold(new.title));
    END""",
    """CREATE TRIGGER runs_title_fts_update AFTER UPDATE OF title ON runs BEGIN
        UPDATE runs_title_fts SET title = casefold(new.title) WHERE rowid = new.rowid;
    END""",
    """CREATE TRIGGER runs_title_fts_delete AFTER DELETE ON runs BEGIN
        DELETE FROM runs_title_fts WHERE rowid = old.rowid;
    END""",
)


def upgrade() -> None:
    op.create_index(
        "ix_nodes_run_id_status_position", "nodes", ["run_id", "status", "position"]
    )
    op.drop_index("ix_nodes_run_id_status", table_name="nodes")
    if op.get_bind().dialect.name != "sqlite":
        return
    # The titles are casefolded before they are indexed, so the index compares them as exactly
    # as the query does; folding again inside FTS5 would only cost time.
    op.execute(
        "CREATE VIRTUAL TABLE runs_title_fts USING fts5(title, tokenize = 'trigram case_sensitive 1')"
    )
    op.execute("INSERT INTO runs_title_fts (rowid, title) SELECT rowid, casefold(title) FROM runs")
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.create_index("ix_nodes_run_id_status", "nodes", ["run_id", "status"])
    op.drop_index("ix_nodes_run_id_status_position", table_name="nodes")
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER runs_title_fts_{name}")
    op.execute("DROP TABLE runs_title_fts")
