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

A trigger fills it in for a run inserted without it: the previous version keeps serving while
the processes are rolled over (migrations come first, deploy.md), and what it submits meanwhile
would otherwise show no type in lists for good.
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


FILL_IN = {
    "sqlite": [
        "CREATE TRIGGER runs_task_type_filled_in AFTER INSERT ON runs "
        "WHEN NEW.task_type IS NULL AND json_valid(NEW.task_spec) BEGIN "
        "UPDATE runs SET task_type = CAST(json_extract(NEW.task_spec, '$.\"type\"') AS TEXT) "
        "WHERE id = NEW.id; END"
    ],
    "postgresql": [
        "CREATE FUNCTION runs_task_type_filled_in() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.task_type := NEW.task_spec ->> 'type'; RETURN NEW; END $$",
        "CREATE TRIGGER runs_task_type_filled_in BEFORE INSERT ON runs FOR EACH ROW "
        "WHEN (NEW.task_type IS NULL) EXECUTE FUNCTION runs_task_type_filled_in()",
    ],
}
REMOVE_FILL_IN = {
    "sqlite": ["DROP TRIGGER runs_task_type_filled_in"],
    "postgresql": [
        "DROP TRIGGER runs_task_type_filled_in ON runs",
        "DROP FUNCTION runs_task_type_filled_in()",
    ],
}


def upgrade() -> None:
    op.add_column("runs", sa.Column("task_type", sa.Text(), nullable=True))
    dialect = op.get_bind().dialect.name
    op.execute(f"UPDATE runs SET task_type = {SPEC_TYPE[dialect]}")
    for statement in FILL_IN[dialect]:
        op.execute(statement)


def downgrade() -> None:
    for statement in REMOVE_FILL_IN[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_column("runs", "task_type")
