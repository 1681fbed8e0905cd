"""How the tests run `crew`: the installed entry point, in a process of its own, configured by
its environment as an operator's shell would."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.client.serving import Served
from tests.conftest import process_env

CREW = str(Path(sys.executable).parent / "crew")


def crew_env(server: Served, **extra: str) -> dict[str, str]:
    return process_env(**({"CREW_URL": server.url, "CREW_API_KEY": server.key} | extra))


def crew(server: Served, *arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CREW, *arguments],
        env=crew_env(server, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def started(server: Served, *arguments: str, **extra: str) -> "subprocess.Popen[str]":
    """`crew` running in the background, its output piped to the test."""
    return subprocess.Popen(
        [CREW, *arguments],
        env=crew_env(server, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def crew_json(server: Served, *arguments: str) -> Any:
    done = crew(server, *arguments, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
