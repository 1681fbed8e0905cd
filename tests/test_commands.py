"""The commands pyproject.toml installs: each runs, and names itself as it was called."""

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.conftest import process_env

COMMANDS = {"crew-api", "crew-worker", "crew-task", "crew-keys"}


def test_every_command_is_installed_from_apps_cli() -> None:
    installed = {
        script.name: script.value
        for script in entry_points(group="console_scripts")
        if script.name.startswith("crew-")
    }
    assert installed.keys() >= COMMANDS
    assert all(installed[name].startswith("apps.cli.") for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_documents_itself_under_its_own_name(name: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / name
    done = subprocess.run(
        [str(script), "--help"],
        cwd=tmp_path,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name} ")
