"""What goes wrong on the operator's side of `crew`, on SQLite and PostgreSQL: a reader that
stops reading, an output that cannot be written, a key no header can carry. Each ends as the
exit statuses say, with one line or none, never a traceback."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.running import CREW, crew, crew_env, crew_json
from tests.client.serving import Served, served

__all__ = ["served"]


@pytest.fixture(scope="module")
def finished(served: Served) -> tuple[str, str]:
    """A run that ended, and an artifact of it."""
    run = crew_json(served, "submit", "--demo", "--title", "Local")
    assert crew(served, "watch", run["id"]).returncode == 0
    with served.client() as client:
        artifact = next(iter(client.iter_artifacts(run_id=run["id"])))
    return run["id"], str(artifact.id)


def _to_a_gone_reader(server: Served, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`crew` writing to a pipe whose reader has gone, as `crew runs | head -1` may."""
    reading, writing = os.pipe()
    os.close(reading)
    try:
        return subprocess.run(
            [CREW, *arguments],
            env=crew_env(server),
            stdout=writing,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writing)


def test_a_reader_that_goes_away_ends_the_command_quietly(
    served: Served, finished: tuple[str, str]
) -> None:
    run_id, artifact_id = finished
    for arguments in (
        ("runs",),
        ("runs", "--json"),
        ("show", run_id),
        ("events", run_id),
        ("events", run_id, "--follow", "--json"),
        ("artifact", artifact_id),
    ):
        done = _to_a_gone_reader(served, *arguments)

        assert (done.returncode, done.stderr) == (0, ""), arguments


def test_crew_runs_piped_to_head(served: Served, finished: tuple[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {CREW} runs | head -1"],
        env=crew_env(served),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout.splitlines()) == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_is_one_line_exit_64(
    served: Served, finished: tuple[str, str]
) -> None:
    run_id, artifact_id = finished
    for arguments in (("artifact", artifact_id), ("runs",), ("show", run_id)):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [CREW, *arguments],
                env=crew_env(served),
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )

        assert done.returncode == 64, (arguments, done.stderr)
        assert done.stderr == "error: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize("key", ["clé", "a\nkey", "tab\tkey"])
def test_a_key_no_header_can_carry_is_a_usage_error_and_sends_nothing(
    served: Served, key: str
) -> None:
    # Nothing listens on port 9: a request would be exit 3.
    from_env = crew(served, "runs", CREW_URL="http://127.0.0.1:9", CREW_API_KEY=key)
    from_option = crew(served, "--key", key, "runs", CREW_URL="http://127.0.0.1:9")

    for done in (from_env, from_option):
        assert done.returncode == 64, done.stderr
        assert done.stderr == (
            "error: the API key can only hold printable ASCII characters (--key or CREW_API_KEY)\n"
        )
        assert key not in done.stderr
