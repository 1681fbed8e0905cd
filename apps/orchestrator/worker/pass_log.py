"""The log lines and counts of what a worker's pass recorded, once it has committed: each failed
attempt, retried or not (counted by cause too), and each run it ended. Starts and successes are
left to the events: a line each would be most of a busy worker's log.

A failure that the deployment must fix (the artifact store cannot be written, a provider is not
set up) is logged as an error, and so reaches Sentry through its logging integration, tagged with
the run and the node. A failure of the call itself (a provider's 429, a timeout) is a warning:
the retry policy deals with it. A node handed back by a stopping worker is only noted.
"""

import logging

from apps.core.logs import log_context
from apps.core.metrics import record_failed_attempt
from apps.orchestrator.engine.outcomes import FailedAttempt
from apps.orchestrator.engine.passes import PassResult
from apps.orchestrator.engine.scheduling import HANDED_BACK, EndedRun
from apps.orchestrator.model.states import RunStatus

logger = logging.getLogger(__name__)

LEVEL_OF_CAUSE = {
    "artifact_store": logging.ERROR,
    "config": logging.ERROR,
    HANDED_BACK: logging.INFO,
}


def log_pass(result: PassResult) -> None:
    """Log the failed attempts and the ended runs of a committed pass, and count the attempts."""
    for attempt in result.failed:
        record_failed_attempt(attempt.failure.cause)
        _log_failed_attempt(attempt)
    for run in result.ended:
        _log_ended_run(run)


def _log_failed_attempt(attempt: FailedAttempt) -> None:
    failure = attempt.failure
    work = failure.work
    level = LEVEL_OF_CAUSE.get(failure.cause, logging.WARNING)
    then = "it will be retried" if attempt.retried else "the node failed"
    with log_context(run_id=work.run_id, node_id=work.id):
        logger.log(
            level,
            "attempt %d of %d of node %r failed (%s), %s: %s",
            work.attempt,
            work.max_attempts,
            work.key,
            failure.cause,
            then,
            failure.message,
        )


def _log_ended_run(run: EndedRun) -> None:
    with log_context(run_id=run.id):
        if run.status is RunStatus.FAILED:
            logger.warning("run failed: %s", run.error)
        else:
            logger.info("run %s", run.status.value)
