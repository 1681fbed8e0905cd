"""the nodes' indexes a claim keeps: one on status, the lease expiry's only where one is held

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 20:25:00

A claim moves its nodes from ready to running in every index keyed by status, and that costs
more the more nodes wait: on SQLite one claim with 10,000 ready nodes queued cost 1.4-1.6 times
one with 100, most of it in the two indexes on (status, next_attempt_at) and
(status, lease_expires_at). No query reads nodes by next_attempt_at but through the claim's index
on (run_id, status, position); the lease take-back reads running nodes by lease expiry, which
only a held lease has. So: one index on status alone, for the reads of nodes by status (the
gauges, the runs with work to claim, the leases a worker renews), and the lease expiry indexed
only where it is set, a handful of rows.

The partial index is on `lease_expires_at IS NOT NULL`, not `status = 'running'`: SQLite plans a
statement comparing status with a bound parameter against such an index from the parameter's
value, and so prepares the statement again at every execution (0.5 ms a claim).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEASED = sa.text("lease_expires_at IS NOT NULL")
HELD = sa.text("lease_owner IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_nodes_lease_expires_at",
        "nodes",
        ["lease_expires_at"],
        sqlite_where=LEASED,
        postgresql_where=LEASED,
    )
    op.create_index(
        "ix_nodes_lease_owner", "nodes", ["lease_owner"], sqlite_where=HELD, postgresql_where=HELD
    )
    op.drop_index("ix_nodes_status_next_attempt_at", table_name="nodes")
    op.drop_index("ix_nodes_status_lease_expires_at", table_name="nodes")


def downgrade() -> None:
    op.create_index("ix_nodes_status_lease_expires_at", "nodes", ["status", "lease_expires_at"])
    op.create_index("ix_nodes_status_next_attempt_at", "nodes", ["status", "next_attempt_at"])
    op.drop_index("ix_nodes_lease_owner", table_name="nodes")
    op.drop_index("ix_nodes_lease_expires_at", table_name="nodes")
