"""Runs' budgets as a worker reads them for the nodes it claims: once per run, not per claim.

A budget is part of its run's task spec, which never changes once submitted. Read in the claim,
it parsed the whole spec (a JSON document the size of the plan: 0.27 ms on PostgreSQL for a
500-node plan) for every node claimed, so that a claim cost more the bigger the runs behind it.
"""

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.engine import Connection

from apps.orchestrator.model.models import RUNS

# Runs whose budgets a worker keeps: far more than it runs at once.
KEPT = 4096

Budget = dict[str, Any] | None


@cache
def _budgets() -> Select[Any]:
    return select(RUNS.c.id, RUNS.c.task_spec["budget"]).where(
        RUNS.c.id.in_(bindparam("runs", expanding=True))
    )


class RunBudgets:
    """The budgets of the runs a worker claimed nodes of, the most recent `KEPT` of them."""

    def __init__(self) -> None:
        self._known: OrderedDict[uuid.UUID, Budget] = OrderedDict()

    def of(self, connection: Connection, run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Budget]:
        """Each run's budget (None when it has none), read from the database the first time."""
        wanted = set(run_ids)
        missing = [run_id for run_id in wanted if run_id not in self._known]
        if missing:
            for run_id, budget in connection.execute(_budgets(), {"runs": missing}):
                self._known[run_id] = budget
            while len(self._known) > KEPT:
                self._known.popitem(last=False)
        return {run_id: self._known.get(run_id) for run_id in wanted}
