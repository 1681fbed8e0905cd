"""`alembic upgrade head` (what `make db-upgrade` runs) against a database it cannot reach, or
one that accepts the connection and says nothing: one line naming the URL's variable, its
password hidden, no trace, within seconds."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, process_env
from tests.proxies import proxy_to


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A loopback port where nothing listens, nor will while the test runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def _upgrade(**settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=process_env(**settings),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _said(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    return line


@pytest.mark.parametrize("variable", ["DATABASE_URL", "ALEMBIC_DATABASE_URL"])
def test_migrating_an_unreachable_database_is_one_line(variable: str, unused_port: int) -> None:
    url = f"postgresql+asyncpg://crew:s3cr3t@127.0.0.1:{unused_port}/crew"
    line = _said(_upgrade(**{variable: url}))
    assert line.startswith(
        f"error: cannot reach the database to migrate, {variable} postgresql+asyncpg://crew:***@"
        f"127.0.0.1:{unused_port}/crew: ConnectionRefusedError"
    )


def test_migrating_a_database_that_says_nothing_is_one_line_within_seconds(
    postgres_database: str,
) -> None:
    with proxy_to(postgres_database) as (proxy, through_proxy):
        proxy.frozen.set()
        started = time.monotonic()
        line = _said(_upgrade(DATABASE_URL=through_proxy))
        took = time.monotonic() - started
    shown = make_url(through_proxy).render_as_string(hide_password=True)
    assert line == (
        f"error: cannot reach the database to migrate, DATABASE_URL {shown}: no answer within 5s"
    )
    assert took < 5 + 5  # and Python's start-up
