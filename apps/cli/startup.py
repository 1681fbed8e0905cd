"""What the commands share when they start: their name as the user typed it, and the settings
of a command that runs the service."""

import sys
from pathlib import Path
from typing import Any

from apps.core.settings import Settings, load_settings
from apps.orchestrator.plans.gate_policy import gate_policy_of


def invoked_as(script: str, module: str) -> str:
    """The command as the user called it, for its usage lines: the installed script
    (`crew-keys`), or the documented `python -m` form."""
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"


def load_checked_settings(**overrides: Any) -> Settings:
    """The settings, with the gate policy file they name read now: a `SettingsError` names the
    variable whose value cannot be used, at start-up rather than at the first submission."""
    settings = load_settings(**overrides)
    gate_policy_of(settings)
    return settings
