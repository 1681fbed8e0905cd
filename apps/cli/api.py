"""Serve the API: `python -m apps.api [--reload | --prod | --op-console]`, on HOST:PORT from the
settings; as the Operator Console (`make op-console`, `run_server.py`), conf/operator.yaml's
`server:` section gives them where the environment and `.env` do not (127.0.0.1:8008).

Settings are checked here first, then the address, the artifact store and the database (reachable,
migrated to this version's schema: `apps.cli.startup`), so a bad value stops start-up with one line
instead of a trace, or of a server answering 500s.
With metrics on and several worker processes (`--prod`), their metrics are shared through
PROMETHEUS_MULTIPROC_DIR, which is prepared here before any worker starts.
"""

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from apps.cli.startup import (
    StartupError,
    check_can_listen,
    check_can_start,
    invoked_as,
    load_checked_settings,
)
from apps.core.logs import logging_config
from apps.core.settings import Settings, SettingsError

_PLACEHOLDER_KEYS = frozenset({"test-key", "change-me", "changeme", "secret", "dev", ""})
# Requests in progress when the server stops get this long to finish; then what still runs is
# cancelled. Event streams end at once (`apps.api.stopping`), so they do not wait for it.
SHUTDOWN_GRACE_SECONDS = 5


def _refuse_weak_key(settings: Settings) -> None:
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if key.strip().lower() in _PLACEHOLDER_KEYS:
        sys.exit("error: API_KEY is missing or a placeholder; set a real key to run in production")


@contextlib.contextmanager
def _shared_metrics_directory(settings: Settings, several_processes: bool) -> Iterator[None]:
    """Export PROMETHEUS_MULTIPROC_DIR for the worker processes, emptied of a previous run's files
    (whose counts would otherwise be added to this run's); a temporary one when it is not set."""
    if not settings.metrics_enabled or not (several_processes or settings.prometheus_multiproc_dir):
        yield
        return
    with contextlib.ExitStack() as stack:
        directory = settings.prometheus_multiproc_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="crew-metrics-"))
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.db"):
                stale.unlink()
        except OSError as error:
            reason = error.strerror or error
            raise StartupError(
                f"cannot use PROMETHEUS_MULTIPROC_DIR {directory}: {reason}"
            ) from None
        # Read by prometheus-client in each worker process, and by the settings there.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=invoked_as("crew-api", "apps.api"), description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    mode.add_argument("--prod", action="store_true", help="WEB_CONCURRENCY workers, no reload")
    mode.add_argument(
        "--op-console",
        action="store_true",
        help="serve as the Operator Console: host, port and log level from conf/operator.yaml",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_checked_settings(operator_console=args.op_console)
    except SettingsError as error:
        sys.exit(f"error: {error}")
    if args.prod:
        _refuse_weak_key(settings)
    try:
        check_can_listen(settings)
        check_can_start(settings)
        with _shared_metrics_directory(settings, several_processes=args.prod):
            _serve(settings, args)
    except StartupError as error:
        sys.exit(f"error: {error}")


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    uvicorn.run(
        "apps.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=args.reload,
        reload_dirs=["apps"] if args.reload else None,
        workers=settings.web_concurrency if args.prod else None,
        log_config=logging_config(settings),
        log_level=settings.log_level,
        proxy_headers=args.prod,
        root_path=settings.root_path,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


if __name__ == "__main__":
    main()
