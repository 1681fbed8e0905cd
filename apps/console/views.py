"""Run rows as the pages show them: JSON parts parsed, progress and duration worked out."""

import json
import uuid
from datetime import datetime
from typing import Any

# A node in one of these is done with: what "progress" counts.
DONE = frozenset({"succeeded", "failed", "cancelled", "skipped"})
FINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})


def _parsed(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _duration(started: datetime | None, finished: datetime | None) -> str:
    if started is None or finished is None:
        return ""
    seconds = (finished - started).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """`row` (from `reading.runs`) with counts, usage, progress and duration ready to show."""
    counts = _parsed(row["node_counts"])
    usage = _parsed(row["usage"])
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in DONE)
    return row | {
        # SQLite's driver gives the id as bare hex; the live stream's events name runs in the
        # canonical form, which the runs page matches its rows by.
        "id": str(uuid.UUID(str(row["id"]))),
        "status": str(row["status"]),
        "node_counts": counts,
        "usage": usage,
        "done": done,
        "total": total,
        "duration": _duration(row["started_at"], row["finished_at"]),
        "final": str(row["status"]) in FINAL_RUN,
    }


def budget_of(run: dict[str, Any]) -> dict[str, float]:
    """The run's budget limits that are set, by name (max_cost, max_tokens)."""
    spec = run.get("task_spec") or {}
    budget = spec.get("budget") if isinstance(spec, dict) else None
    if not isinstance(budget, dict):
        return {}
    return {name: float(budget[name]) for name in ("max_cost", "max_tokens") if budget.get(name)}
