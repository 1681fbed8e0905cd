"""SQLite: no index on the nodes' status

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 22:45:00

A claim moves its nodes from ready to running in every index keyed by status, at a cost that
grows with the nodes waiting: on SQLite one claim with 10,000 ready nodes queued still cost
1.4 times one with 100 with `ix_nodes_status` alone (0008). Its readers there now read
elsewhere: the gauges sum the runs' node counts its triggers keep (`run_node_counts`, 0007), and
the runs with nodes to claim are found from the index on (run_id, status, position), run by run.
The lease take-back and a worker's heartbeat read the lease indexes (0008); recording several
successes at once must name the nodes' ids apart from their (id, attempt) pairs, which SQLite
looks up by no index.
PostgreSQL keeps the index: a claim there does not grow with the nodes waiting, and it keeps no
node counts (0007 says why).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_nodes_status", table_name="nodes")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_nodes_status", "nodes", ["status"])
