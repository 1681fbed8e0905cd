"""What the commands share when they start: their name as the user typed it, and the settings
of a command that runs the service."""

import sys
from pathlib import Path
from typing import Any

from apps.core.settings import Settings, load_settings, startup_warnings
from apps.orchestrator.plans.gate_policy import gate_policy_of


def invoked_as(script: str, module: str) -> str:
    """The command as the user called it, for its usage lines: the installed script
    (`crew-keys`), or the documented `python -m` form."""
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"


def load_checked_settings(*, operator_console: bool = False, **overrides: Any) -> Settings:
    """The settings, with the gate policy file they name read now: a `SettingsError` names the
    variable whose value cannot be used, at start-up rather than at the first submission. What
    is odd but not fatal (an operator-file key nothing reads, an OpenAI agent without its key)
    is printed as a warning."""
    settings = load_settings(operator_console=operator_console, **overrides)
    gate_policy_of(settings)
    for warning in startup_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return settings
