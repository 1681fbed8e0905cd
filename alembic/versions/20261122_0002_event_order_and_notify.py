"""events are inserted in commit order and announced with NOTIFY (PostgreSQL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 11:25:00

On PostgreSQL event ids come from a sequence, handed out in insert order, not commit order: a
reader could see id 11 committed before id 10 and, reading "after 11", miss 10 for good. A
statement-level trigger takes a transaction-scoped advisory lock before every insert into
`events`, held until commit, so ids are commit-ordered whoever inserts. A second one sends
NOTIFY crew_events with the highest id inserted, delivered at commit, which wakes the event
streams of every API process. SQLite has one writer at a time and needs neither.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Any constant, the same in every process: the key of the lock that orders event ids.
EVENT_ORDER_LOCK = 0x63726577


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION crew_events_in_commit_order() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({EVENT_ORDER_LOCK});
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_in_commit_order BEFORE INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION crew_events_in_commit_order()
        """
    )
    op.execute(
        """
        CREATE FUNCTION crew_events_announce() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('crew_events', (SELECT max(id)::text FROM inserted));
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_announce AFTER INSERT ON events
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION crew_events_announce()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER events_announce ON events")
    op.execute("DROP FUNCTION crew_events_announce()")
    op.execute("DROP TRIGGER events_in_commit_order ON events")
    op.execute("DROP FUNCTION crew_events_in_commit_order()")
