"""Serve the API: `python -m apps.api [--reload | --prod]`, on HOST:PORT from the settings.

Settings are checked here first, so a bad value stops start-up with one line instead of a trace.
"""

import argparse
import sys

import uvicorn

from apps.core.settings import Settings, SettingsError, load_settings

_PLACEHOLDER_KEYS = frozenset({"test-key", "change-me", "changeme", "secret", "dev", ""})
# An event stream without a run never ends on its own: without a limit, a stop or a reload would
# wait for every watching client to hang up. After this, what still runs is cancelled.
SHUTDOWN_GRACE_SECONDS = 5


def _refuse_weak_key(settings: Settings) -> None:
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if key.strip().lower() in _PLACEHOLDER_KEYS:
        sys.exit("error: API_KEY is missing or a placeholder; set a real key to run in production")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.api", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    mode.add_argument("--prod", action="store_true", help="WEB_CONCURRENCY workers, no reload")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    if args.prod:
        _refuse_weak_key(settings)
    uvicorn.run(
        "apps.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=args.reload,
        reload_dirs=["apps"] if args.reload else None,
        workers=settings.web_concurrency if args.prod else None,
        log_level=settings.log_level,
        proxy_headers=args.prod,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


if __name__ == "__main__":
    main()
