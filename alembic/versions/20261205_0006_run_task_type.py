"""runs keep their spec's type in a column of its own

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 16:15:00

The runs list shows each run's task type. Read from the spec, it cost a parse of the whole
document per run and page (SQLite checks and walks it: a sixth of its time on a page of
bench.read_api's runs; PostgreSQL's `json` is text, parsed too, a smaller share there and more
for larger specs). The type is written with the run from now on (the model's default takes it
from the spec) and is filled in here for the runs already stored: the spec's `type` as text,
or null where SQLite cannot read the spec as JSON (as the list showed it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPEC_TYPE = {
    "sqlite": "CASE WHEN json_valid(task_spec) "
    "THEN CAST(json_extract(task_spec, '$.\"type\"') AS TEXT) END",
    "postgresql": "task_spec ->> 'type'",
}


def upgrade() -> None:
    op.add_column("runs", sa.Column("task_type", sa.Text(), nullable=True))
    spec_type = SPEC_TYPE[op.get_bind().dialect.name]
    op.execute(f"UPDATE runs SET task_type = {spec_type}")


def downgrade() -> None:
    op.drop_column("runs", "task_type")
