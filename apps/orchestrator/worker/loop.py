"""The worker: runs the Manager's loop and executes claimed nodes with their agents.

It runs inside the API process by default (the lifespan starts and stops it) or on its own
(`python -m apps.orchestrator.worker`, `make worker`). Several may share one database: nodes are
claimed under a lease the worker's heartbeat renews, and a node whose worker died is taken back
when its lease expires and retried.
"""

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping

from sqlalchemy.exc import SQLAlchemyError

from apps.core.database import Transactions, describe_fault
from apps.core.error_reporting import report_run_error
from apps.core.errors import CrewError
from apps.core.logs import log_context
from apps.core.metrics import record_leases_taken_back, record_llm_usage, record_node_duration
from apps.core.settings import Settings
from apps.core.supervision import MAX_DELAY_SECONDS, start_supervised
from apps.orchestrator.engine import leases
from apps.orchestrator.engine.executor import Ended, Executor, Failed, NodeWork, Succeeded, Unstored
from apps.orchestrator.engine.gates import count_gate_decision
from apps.orchestrator.engine.outcomes import output_recorded
from apps.orchestrator.engine.scheduling import HANDED_BACK
from apps.orchestrator.infra.providers.base import Provider
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.infra.providers.openai_compatible import OpenAICompatibleProvider
from apps.orchestrator.infra.storage import open_artifact_store
from apps.orchestrator.infra.storage.base import ArtifactStore, sidecar_key, store_changes
from apps.orchestrator.worker.gate_timer import GateTimer
from apps.orchestrator.worker.pass_log import log_pass
from apps.orchestrator.worker.pass_runner import PassRunner

logger = logging.getLogger(__name__)

IDLE_SECONDS = 0.5
# How often a worker checks that the nodes it runs are still its own (a cancel elsewhere).
WATCH_SECONDS = 0.5
# How long a stopping worker tries to hand its nodes back.
STOP_SECONDS = 10.0
# How long a pass with outcomes to record waits for the outputs being stored at that moment.
STORING_WAIT_SECONDS = 0.02


def default_providers(settings: Settings) -> dict[str, Provider]:
    """The providers a worker offers, configured by the settings."""
    openai_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    timeout = settings.llm_timeout_seconds
    return {
        "demo": DemoProvider(settings.demo_latency_ms / 1000),
        "openai": OpenAICompatibleProvider("openai", settings.openai_base_url, openai_key, timeout),
        "ollama": OpenAICompatibleProvider("ollama", settings.ollama_base_url, None, timeout),
    }


class Worker:
    """Runs the Manager's passes and executes the nodes they claim, until stopped.

    A pass is one transaction: it records the attempts that ended since the last one, starts
    queued runs, makes ready what they unblocked, finishes runs and claims what the free slots
    allow. A pass runs as soon as an attempt ends or a task is submitted in this process, and
    at least every `IDLE_SECONDS` for what other processes did (submissions, retries now due).
    """

    def __init__(
        self,
        transactions: Transactions,
        settings: Settings,
        providers: Mapping[str, Provider] | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.transactions = transactions
        self.settings = settings
        providers = providers if providers is not None else default_providers(settings)
        self.store = store if store is not None else open_artifact_store(settings)
        self.executor = Executor(providers, self.store, settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._passes = PassRunner(transactions, settings, self.name, self.executor)
        self._gate_timer = GateTimer(transactions, self.store, settings)
        self._wake = asyncio.Event()
        # Whether the next pass looks for queued runs: at start, on a submission in this
        # process, and at least every IDLE_SECONDS (for runs other processes queued, even
        # while this worker is busy).
        self._look_for_runs = True
        self._looked_at = float("-inf")
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._outcomes: list[Ended] = []
        # Attempts stopped because someone else ended their node (a lease taken back): they
        # end silently; and because their run is being cancelled: their stop is recorded.
        self._released: set[uuid.UUID] = set()
        self._cancelled: set[uuid.UUID] = set()

    def wake(self) -> None:
        """Look for work now (a task was submitted in this process)."""
        self._look_for_runs = True
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled; in-flight nodes are handed back as ready when it stops.

        Its loops run supervised (`supervise`): one that fails is logged, reported and
        restarted, and the others go on meanwhile."""
        # The leases' loop tries again within a renewal period (a short lease expires sooner
        # than the supervisor's bound), and never later than the other loops.
        leases_within = min(self.settings.lease_seconds / 3, MAX_DELAY_SECONDS)
        loops = [
            start_supervised("worker passes", self._pass_loop),
            start_supervised("worker cancel watch", self._watch_loop),
            start_supervised("worker leases", self._lease_loop, max_delay=leases_within),
            start_supervised("worker gate timer", self._gate_loop),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            try:
                # A stop must not hang on a database that does not answer: the leases of what
                # could not be handed back expire, and the nodes are retried then.
                async with asyncio.timeout(STOP_SECONDS):
                    await asyncio.gather(*loops, return_exceptions=True)
                    await self._stop()
            except TimeoutError:
                logger.warning("worker %s stopped without handing its nodes back", self.name)

    async def step(self) -> bool:
        """One pass of the Manager; whether it changed anything."""
        await self._join_outputs_being_stored()
        self._wake.clear()
        outcomes, self._outcomes = self._outcomes, []
        now = asyncio.get_running_loop().time()
        look_for_runs = self._look_for_runs or now - self._looked_at >= IDLE_SECONDS
        self._look_for_runs = False
        slots = max(0, self.settings.worker_concurrency - len(self._running))
        try:
            done = await self._passes.run(outcomes, slots=slots, start_queued=look_for_runs)
        except BaseException:
            # Nothing was recorded: the outcomes wait for the next pass.
            self._outcomes[:0] = outcomes
            self._look_for_runs |= look_for_runs
            raise
        self._outcomes[:0] = done.postponed
        log_pass(done)
        if look_for_runs:
            self._looked_at = now
        for refused in done.refused:
            logger.info("node %s of run %s ended meanwhile", refused.work.key, refused.work.run_id)
            await self._discard(refused)
        for work in done.claimed:
            self._running[work.id] = asyncio.create_task(self._attempt(work), name=work.key)
        return done.changed

    async def drain(self) -> None:
        """Pass until nothing is left to do and no node is running (for the CLI and tests)."""
        while True:
            changed = await self.step()
            if self._running and not self._outcomes:
                await self._wake.wait()
            elif not (changed or self._outcomes):
                return

    async def _join_outputs_being_stored(self) -> None:
        """Have the attempts that are writing their output now (their call has answered) end
        before a pass records the outcomes that are in, so that one pass records them all. Only
        outputs their attempts write themselves count (a remote store's, or big ones): the rest
        are written by the pass that records them (`pass_runner`).

        Attempts claimed together end together: without this the first to end passes alone,
        and the rest wait for the pass after. A pass costs about as much whether it records one
        outcome or eight (and on SQLite passes run one at a time), while a write takes a
        fraction of a pass; the wait is bounded for a store that is slow to answer. A lone
        attempt (a chain) never waits, nor does an attempt still waiting for its call."""
        if not self._outcomes or not self.executor.storing:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STORING_WAIT_SECONDS):
                while self.executor.storing:
                    self._wake.clear()
                    await self._wake.wait()

    async def _pass_loop(self) -> None:
        while True:
            await self.step()
            await self._pause(IDLE_SECONDS)

    async def _discard(self, refused: Succeeded) -> None:
        """Remove the files of an output nobody will record: its attempt was no longer the
        node's (an attempt's files are its own, see `describe_output`)."""
        key = refused.output.storage_key
        discard = functools.partial(_delete_files, self.store, (key, sidecar_key(key)))
        try:
            if not await self.transactions.run(output_recorded, refused):
                await store_changes(discard)
        except (CrewError, OSError, SQLAlchemyError) as error:
            logger.warning("kept the files of an unrecorded output: %s", error)

    async def _pause(self, seconds: float) -> None:
        if self._outcomes:
            return
        # A timeout around the wait, not `wait_for`: that runs the wait as a task of its own,
        # a loop iteration more before every pass that an ended attempt wakes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _attempt(self, work: NodeWork) -> None:
        outcome: Ended | None = None
        try:
            outcome = await self._execute(work)
        except asyncio.CancelledError:
            if work.id in self._cancelled:
                outcome = Failed(work, "the run was cancelled", retryable=False, cause="cancel")
                return
            outcome = Failed(work, "the worker stopped", retryable=True, cause=HANDED_BACK)
            raise
        finally:
            self._running.pop(work.id, None)
            if outcome is not None and work.id not in self._released:
                self._outcomes.append(outcome)
            self._released.discard(work.id)
            self._cancelled.discard(work.id)
            self._wake.set()

    async def _execute(self, work: NodeWork) -> Ended:
        """The attempt, measured, with the node named in its logs and error reports. Its files
        may be left for the pass that records it to write (`pass_runner`)."""
        started = time.perf_counter()
        with log_context(run_id=work.run_id, node_id=work.id):
            try:
                outcome = await self.executor.call(work)
            except Exception as error:
                # Reported first, tagged: the error tracker keeps an exception's first report.
                report_run_error(error, run_id=work.run_id, node_id=work.id)
                logger.exception("node %s of run %s failed unexpectedly", work.key, work.run_id)
                message = f"unexpected error: {error}"
                outcome = Failed(work, message, retryable=False, cause="error")
            finally:
                record_node_duration(work.role, time.perf_counter() - started)
        succeeded = outcome.succeeded if isinstance(outcome, Unstored) else outcome
        if isinstance(succeeded, Succeeded):
            output = succeeded.output
            record_llm_usage(
                work.provider,
                work.model,
                prompt_tokens=output.prompt_tokens,
                completion_tokens=output.completion_tokens,
                cost=output.cost,
            )
        return outcome

    async def _watch_loop(self) -> None:
        """Stop the attempts this worker should no longer run (their run is being cancelled,
        or their node was taken back)."""
        while True:
            await self._stop_attempts()
            await asyncio.sleep(WATCH_SECONDS)

    async def _lease_loop(self) -> None:
        """Renew this worker's leases and take back expired ones (at start-up too)."""
        while True:
            await self._renew_and_take_back_leases()
            await asyncio.sleep(self.settings.lease_seconds / 3)

    async def _gate_loop(self) -> None:
        """Carry out what timed-out gates decide."""
        while True:
            decided = await self._gate_timer.decide_expired()
            for gate in decided:
                count_gate_decision(gate)
            if decided:
                self.wake()
            await asyncio.sleep(WATCH_SECONDS)

    async def _renew_and_take_back_leases(self) -> None:
        taken_back = await self.transactions.run(
            leases.renew_and_take_back_leases,
            worker=self.name,
            lease_seconds=self.settings.lease_seconds,
        )
        if taken_back:
            logger.warning("took back %d running node(s) whose worker's lease expired", taken_back)
            record_leases_taken_back(taken_back)
            self.wake()

    async def _stop_attempts(self) -> None:
        if not self._running:
            return
        stopping = await self.transactions.run(
            leases.attempts_to_stop, worker=self.name, node_ids=list(self._running)
        )
        for node_id, still_held in stopping.items():
            task = self._running.get(node_id)
            if task is not None:
                (self._cancelled if still_held else self._released).add(node_id)
                task.cancel()

    async def _stop(self) -> None:
        """Stop the attempts in flight and record them, so their nodes are retried at once
        rather than after their leases expire."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not self._outcomes:
            return
        try:
            log_pass(await self._passes.run(self._outcomes, slots=0))
        except (OSError, SQLAlchemyError) as error:
            logger.warning(
                "could not hand nodes back, their leases will expire: %s", describe_fault(error)
            )


def _delete_files(store: ArtifactStore, keys: tuple[str, ...]) -> None:
    for key in keys:
        store.delete(key)
