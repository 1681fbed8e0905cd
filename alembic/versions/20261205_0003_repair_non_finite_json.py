"""stored JSON with NaN or infinities is repaired (SQLite)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 07:00:00

Before 0.2 the API accepted numbers such as `1e400` and `NaN` in a task spec and SQLite stored
them as `Infinity` and `NaN`, which is not JSON: its JSON functions then failed on the row, and
every worker pass with it (PostgreSQL refused the insert). Each such number is rewritten as
null, which is what it meant: a budget of infinity, or of NaN (no spend exceeds it), sets no
limit. Only rows SQLite reports as invalid JSON are read. Nothing to undo on downgrade.
"""

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_COLUMNS = (
    ("runs", "task_spec"),
    ("nodes", "gate"),
    ("artifacts", "sidecar"),
    ("events", "data"),
    ("gates", "patch"),
)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    for table, column in JSON_COLUMNS:
        invalid = connection.execute(
            sa.text(
                f"SELECT rowid, {column} FROM {table} "
                f"WHERE {column} IS NOT NULL AND json_valid({column}) = 0"
            )
        ).all()
        for rowid, stored in invalid:
            try:
                repaired = json.dumps(_finite(json.loads(stored)), allow_nan=False)
            except (ValueError, RecursionError):
                # Not a number this repair knows: left for a person to look at.
                continue
            connection.execute(
                sa.text(f"UPDATE {table} SET {column} = :repaired WHERE rowid = :rowid"),
                {"repaired": repaired, "rowid": rowid},
            )


def downgrade() -> None:
    pass
