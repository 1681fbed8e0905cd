"""`alembic upgrade head` (what `make db-upgrade` runs) against a database it cannot reach: one
line naming the URL's variable, its password hidden, no trace."""

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, process_env


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A loopback port where nothing listens, nor will while the test runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.mark.parametrize("variable", ["DATABASE_URL", "ALEMBIC_DATABASE_URL"])
def test_migrating_an_unreachable_database_is_one_line(variable: str, unused_port: int) -> None:
    url = f"postgresql+asyncpg://crew:s3cr3t@127.0.0.1:{unused_port}/crew"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=process_env(**{variable: url}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert line.startswith(
        f"error: cannot reach the database to migrate, {variable} postgresql+asyncpg://crew:***@"
        f"127.0.0.1:{unused_port}/crew: ConnectionRefusedError"
    )
