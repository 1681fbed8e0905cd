"""What every command that runs the service reads first."""

from typing import Any

from apps.core.settings import Settings, load_settings
from apps.orchestrator.plans.gate_policy import gate_policy_of


def load_checked_settings(**overrides: Any) -> Settings:
    """The settings, with the gate policy file they name read now: a `SettingsError` names the
    variable whose value cannot be used, at start-up rather than at the first submission."""
    settings = load_settings(**overrides)
    gate_policy_of(settings)
    return settings
