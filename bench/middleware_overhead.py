"""What metrics and Sentry add to each request, in microseconds, measured inside one process.

Each configuration (off, metrics, Sentry, both) runs in a process of its own, since Sentry's
integrations patch Starlette for a whole process. There, the app gets one more route, behind the
same key check and app-wide dependencies, that touches no database; it is called directly as an
ASGI app, 3,000 times a round, and the best of 7 rounds after a warm-up is kept. No sockets and no
second process: on a shared machine this is steadier than req/s under wrk, and it isolates the
middleware's own cost from how it adds up with the rest of a request.

    .venv/bin/python -m bench.middleware_overhead
    .venv/bin/python -m bench.middleware_overhead --smoke     # a second: does it still run?
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.api.app import create_app
from apps.core.settings import load_settings
from bench.harness import API_KEY, SMOKE_HELP, run, sentry_sink

MODES = ("off", "metrics", "sentry", "metrics+sentry")
CALLS, ROUNDS = 3_000, 7
SMOKE_CALLS, SMOKE_ROUNDS = 50, 1
PATH = "/runs/0b7e2d4c-3f5a-4a1e-9c6d-2f8e1a7b5c90/bench-ping"


def build_app(mode: str, dsn: str, directory: Path) -> Any:
    settings = load_settings(
        _env_file=None,
        api_key=API_KEY,
        database_url=f"sqlite+aiosqlite:///{directory / 'unused.db'}",
        worker_in_api=False,
        metrics_enabled="metrics" in mode,
        sentry_dsn=dsn if "sentry" in mode else None,
    )
    app = create_app(settings)

    async def ping(run_id: str) -> dict[str, str]:
        return {"run_id": run_id}

    app.add_api_route("/runs/{run_id}/bench-ping", ping)
    return app


async def time_requests(app: Any, calls: int, rounds: int) -> float:
    """Seconds per request, the best round."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"x-api-key", API_KEY.encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return

    for _ in range(calls // 5):
        await app(dict(scope), receive, send)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await app(dict(scope), receive, send)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def measure_one(mode: str, smoke: bool) -> None:
    calls, rounds = (SMOKE_CALLS, SMOKE_ROUNDS) if smoke else (CALLS, ROUNDS)
    with sentry_sink() as (dsn, _), tempfile.TemporaryDirectory() as directory:
        app = build_app(mode, dsn, Path(directory))
        seconds = asyncio.run(time_requests(app, calls, rounds))
    print(f"{seconds * 1e6:.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.one:
        measure_one(args.one, args.smoke)
        return 0
    costs = {}
    for mode in MODES:
        command = [sys.executable, "-m", "bench.middleware_overhead", "--one", mode]
        done = subprocess.run(
            command + (["--smoke"] if args.smoke else []),
            capture_output=True,
            text=True,
            check=True,
        )
        costs[mode] = float(done.stdout.split()[-1])
    print(f"{'configuration':<16}{'us/request':>12}{'added':>10}")
    for mode, micros in costs.items():
        print(f"{mode:<16}{micros:>12.1f}{micros - costs['off']:>10.1f}")
    return 0


if __name__ == "__main__":
    run(main)
