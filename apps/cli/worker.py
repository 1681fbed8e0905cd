"""Run a standalone worker process until SIGINT or SIGTERM.

    crew-worker            (also: python -m apps.orchestrator.worker, make worker)

For PostgreSQL deployments with several hosts: set WORKER_IN_API=0 on the API processes and start
workers on their own. A stopping worker hands its nodes back as ready. With WORKER_METRICS_PORT
set, it serves its Prometheus metrics on HOST:WORKER_METRICS_PORT.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from apps.cli.startup import StartupError, check_can_start, invoked_as, load_checked_settings
from apps.core.database import open_database
from apps.core.error_reporting import init_sentry
from apps.core.logs import configure_logging
from apps.core.metrics import serving_recorded_metrics
from apps.core.settings import Settings, SettingsError
from apps.core.supervision import start_supervised
from apps.orchestrator.worker.loop import Worker

# Its lines are the worker's, under the name they have always had.
logger = logging.getLogger("apps.orchestrator.worker")


async def serve(settings: Settings) -> None:
    """Run one worker process until SIGINT or SIGTERM, then hand its nodes back."""
    async with open_database(settings) as database:
        worker = Worker(database.transactions, settings)
        task = start_supervised("worker", worker.run)
        loop = asyncio.get_running_loop()
        for stop in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop, task.cancel)
        logger.info("worker %s started", worker.name)
        try:
            await task
        except asyncio.CancelledError:
            logger.info("worker %s stopped", worker.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=invoked_as("crew-worker", "apps.orchestrator.worker"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = load_checked_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    with contextlib.ExitStack() as stack:
        port = settings.worker_metrics_port
        if port is not None:
            _serve_metrics(stack, settings.host, port)
        try:
            check_can_start(settings)
        except StartupError as error:
            sys.exit(f"error: {error}")
        configure_logging(settings)
        init_sentry(settings)
        if port is not None:
            logger.info("metrics on http://%s:%d/metrics", settings.host, port)
        asyncio.run(serve(settings))


def _serve_metrics(stack: contextlib.ExitStack, host: str, port: int) -> None:
    """This process's metrics on `host`:`port` until `stack` closes; one line if it cannot."""
    try:
        stack.enter_context(serving_recorded_metrics(host, port))
    except OSError as error:
        sys.exit(f"error: cannot serve metrics on {host}:{port}: {error.strerror or error}")


if __name__ == "__main__":
    main()
