"""The worker's gate timer: carries out what their policy says for gates past their `expires_at`.

Each gate is decided in a transaction of its own, through the same `decide_gate` as an operator's
decision: one that an operator decided meanwhile is left to that decision, and one whose decision
fails (the artifact store is down, the outline to plan from is missing) is logged, tried again
later with a growing delay, and holds up no other gate.
"""

import asyncio
import logging
import uuid
from typing import Any

from apps.core.database import Transactions, describe_fault, is_transient
from apps.core.error_reporting import report_run_error
from apps.core.errors import CrewError
from apps.core.settings import Settings
from apps.orchestrator.control import decisions
from apps.orchestrator.infra.storage.base import ArtifactStore

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 600.0


class GateTimer:
    """Decides expired gates for one worker; see the module's docstring."""

    def __init__(
        self, transactions: Transactions, store: ArtifactStore, settings: Settings
    ) -> None:
        self.transactions = transactions
        self.store = store
        self.settings = settings
        # Gates whose timeout could not be carried out: failures in a row, and when to retry.
        self._deferred: dict[uuid.UUID, tuple[int, float]] = {}

    async def decide_expired(self) -> list[dict[str, Any]]:
        """Decide the gates that timed out; the gates decided."""
        now = asyncio.get_running_loop().time()
        waiting = {gate for gate, (_, retry_at) in self._deferred.items() if retry_at > now}
        expired = await self.transactions.run(decisions.expired_gates, excluded=waiting)
        retried = {gate for gate in self._deferred if gate not in waiting}
        for gone in retried - {gate.id for gate in expired}:
            del self._deferred[gone]
        decided = []
        for gate in expired:
            try:
                decided.append(await self._decide(gate))
            except Exception as error:
                self._defer(gate, error)
            else:
                self._deferred.pop(gate.id, None)
        return decided

    async def _decide(self, gate: decisions.ExpiredGate) -> dict[str, Any]:
        return await decisions.decide_gate(
            self.transactions,
            self.store,
            self.settings,
            gate.run_id,
            gate.node_id,
            gate.decision(),
        )

    def _defer(self, gate: decisions.ExpiredGate, error: Exception) -> None:
        failures = self._deferred.get(gate.id, (0, 0.0))[0] + 1
        delay = min(FIRST_RETRY_SECONDS * 2 ** (failures - 1), MAX_RETRY_SECONDS)
        self._deferred[gate.id] = (failures, asyncio.get_running_loop().time() + delay)
        if isinstance(error, decisions.GateDecided):
            logger.info("gate %s was decided as it timed out: %s", gate.id, error.detail)
        elif isinstance(error, CrewError) or is_transient(error):
            message = error.detail if isinstance(error, CrewError) else describe_fault(error)
            logger.warning(
                "gate %s timed out but could not be decided, retrying in %gs: %s",
                gate.id,
                delay,
                message,
            )
        else:
            report_run_error(error, run_id=gate.run_id, node_id=gate.node_id)
            logger.error(
                "gate %s timed out but its decision failed, retrying in %gs",
                gate.id,
                delay,
                exc_info=error,
            )
