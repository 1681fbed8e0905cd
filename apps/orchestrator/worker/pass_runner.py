"""Running a worker's passes, and isolating a run whose rows a pass cannot process.

A pass covers every run in one transaction. One that fails for a reason of the data rather than
of the database (`is_transient`) is passed again run by run: a run whose own pass fails twice,
while a pass of every other run succeeds, is at fault. It is failed with the reason, reported
and logged, and every other run goes on; one row can no longer stop every run. When the pass of
the others fails too, the fault is not the runs' (the schema, this code): nobody is failed, and
the next pass tries again.
"""

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from apps.core.database import Transactions, describe_fault, is_transient
from apps.core.error_reporting import report_run_error
from apps.core.logs import log_context
from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings
from apps.orchestrator.engine import passes
from apps.orchestrator.engine.budgets import RunBudgets
from apps.orchestrator.engine.executor import Ended, Failed, Outcome, Unstored
from apps.orchestrator.engine.statements import EVERY_RUN, RunScope

logger = logging.getLogger(__name__)


class _Unwritten(Exception):
    """Raised in a pass some of whose outputs' files could not be written, to roll it back."""


def _once_written(
    session: Session,
    run_pass: Callable[[Session, Sequence[Outcome]], passes.PassResult],
    outcomes: Sequence[Outcome],
    writes: Sequence[Future[Outcome]],
) -> passes.PassResult:
    """`run_pass` of `outcomes`, as they are once their files are written; then, before its
    transaction commits, the wait for those files. An output whose files could not be written
    rolls the pass back (`_Unwritten`)."""
    result = run_pass(session, outcomes)
    if any(isinstance(_wait(write), Failed) for write in writes):
        raise _Unwritten
    return result


async def _written(ended: Sequence[Ended], writes: Sequence[Future[Outcome]]) -> list[Outcome]:
    """`ended` once the files of its unstored outputs are written (`writes`, in order), an
    attempt whose files could not be written failed."""
    left = iter(writes)
    return [await asyncio.wrap_future(next(left)) if isinstance(e, Unstored) else e for e in ended]


def _wait(write: Future[Outcome]) -> Outcome:
    """What `write` gave, waited for where the pass runs: on a thread of its own (SQLite's
    writer) by blocking it; in a greenlet on the event loop (PostgreSQL's transactions) by
    awaiting it, so that the loop goes on meanwhile."""
    if write.done():
        return write.result()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return write.result()
    return await_(asyncio.wrap_future(write))


class PassRunner:
    """Runs `passes.run_pass` for the worker named `worker`, each in a transaction of its own,
    which commits once the files of the outputs it records are written (`writing` gives the
    writing of an unstored output's files, see `Executor.call`)."""

    def __init__(
        self,
        transactions: Transactions,
        settings: Settings,
        worker: str,
        writing: Callable[[Unstored], Future[Outcome]],
    ) -> None:
        self.transactions = transactions
        self.settings = settings
        self.worker = worker
        self.writing = writing
        self.budgets = RunBudgets()

    async def run(
        self,
        ended: Sequence[Ended],
        *,
        slots: int,
        start_queued: bool = True,
        scope: RunScope = EVERY_RUN,
    ) -> passes.PassResult:
        """One pass; one that fails on a run's data is passed again run by run (see `passes`).

        Raises only when nothing was recorded: what a pass committed is always returned, so
        that no claimed node is left without an attempt. The files of unstored outputs are
        written off the event loop while the pass runs, and the pass commits once they are
        written; when one could not be, the pass is rolled back and made again with its
        attempt failed."""
        run_pass = functools.partial(
            passes.run_pass,
            worker=self.worker,
            slots=slots,
            settings=self.settings,
            start_queued=start_queued,
            scope=scope,
            budgets=self.budgets,
        )
        writes = [self.writing(e) for e in ended if isinstance(e, Unstored)]
        expected = [e.succeeded if isinstance(e, Unstored) else e for e in ended]
        try:
            if writes:
                return await self.transactions.run(_once_written, run_pass, expected, writes)
            return await self.transactions.run(run_pass, expected)
        except Exception as error:
            # Raises what writing a file raised, if anything: the pass recorded nothing.
            outcomes = await _written(ended, writes)
            if isinstance(error, _Unwritten):
                return await self.run(outcomes, slots=slots, start_queued=start_queued, scope=scope)
            if scope != EVERY_RUN or is_transient(error):
                raise
            logger.warning("worker pass failed, passing run by run: %s", describe_fault(error))
        return await self._pass_run_by_run(outcomes, slots=slots, start_queued=start_queued)

    async def _pass_run_by_run(
        self, outcomes: Sequence[Outcome], *, slots: int, start_queued: bool
    ) -> passes.PassResult:
        """Pass each run in play on its own; a run whose pass fails twice while the pass of
        every other run succeeds is at fault, and is failed with the reason."""
        runs = await self.transactions.run(
            passes.runs_in_play, outcomes, start_queued=start_queued, claiming=slots > 0
        )
        result = passes.PassResult()
        at_fault: dict[uuid.UUID, Exception] = {}
        for index, run_id in enumerate(runs):
            own = [outcome for outcome in outcomes if outcome.work.run_id == run_id]
            for _ in range(2):
                try:
                    part = await self.run(
                        own,
                        slots=slots - len(result.claimed),
                        start_queued=start_queued,
                        scope=RunScope(only=run_id),
                    )
                except Exception as error:
                    if is_transient(error):
                        later = set(runs[index:])
                        result.postponed += [o for o in outcomes if o.work.run_id in later]
                        return result
                    at_fault[run_id] = error
                else:
                    result.add(part)
                    at_fault.pop(run_id, None)
                    break
        if at_fault:
            await self._fail_runs_at_fault(at_fault, outcomes, result, slots, start_queued)
        return result

    async def _fail_runs_at_fault(
        self,
        at_fault: dict[uuid.UUID, Exception],
        outcomes: Sequence[Outcome],
        result: passes.PassResult,
        slots: int,
        start_queued: bool,
    ) -> None:
        """Fail the runs at fault, once a pass of every other run has shown that the database
        and this code work: otherwise the fault is not theirs, and they wait."""
        try:
            rest = await self.run(
                [],
                slots=slots - len(result.claimed),
                start_queued=start_queued,
                scope=RunScope(excluded=frozenset(at_fault)),
            )
        except Exception as error:
            logger.error("worker pass failed without the runs it failed on: %s", error)
            result.postponed += [o for o in outcomes if o.work.run_id in at_fault]
            return
        result.add(rest)
        secrets = configured_secrets(self.settings)
        for run_id, fault in at_fault.items():
            with log_context(run_id=run_id):
                report_run_error(fault, run_id=run_id)
                logger.error("run %s failed: the worker cannot process it", run_id, exc_info=fault)
                try:
                    await self.transactions.run(
                        passes.fail_run_at_fault, run_id, redact(describe_fault(fault), secrets)
                    )
                except Exception:
                    logger.exception("could not fail run %s; its outcomes wait", run_id)
                    result.postponed += [o for o in outcomes if o.work.run_id == run_id]
        result.changed = True
