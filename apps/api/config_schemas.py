"""Response shapes of the configuration endpoints that follow this server's settings (the
report of a document's check is a wire model, `apps.wire.schemas.ValidationReport`)."""

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model

from apps.core.settings import Settings
from apps.orchestrator.control.configuration import REDACTED, SECRET_SETTINGS
from apps.orchestrator.plans.gate_policy import EffectiveGate, GateRule


def _effective_settings_model() -> type[BaseModel]:
    """One field per setting, described as in `Settings`; secrets are strings of asterisks."""
    fields: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if name in SECRET_SETTINGS:
            described = f"{info.description} Redacted: {REDACTED} when set, null when not."
            fields[name] = (str | None, Field(description=described))
        else:
            fields[name] = (info.annotation, Field(description=info.description))
    return create_model(
        "EffectiveSettings",
        __doc__="Every setting in force, named as its variable in lower case.",
        **fields,
    )


if TYPE_CHECKING:
    # Built at import from the fields of Settings: to the type checker, a model like any other.
    EffectiveSettings = BaseModel
else:
    EffectiveSettings = _effective_settings_model()


class GatePolicyInForce(BaseModel):
    """The gate policy the service runs with, and where it came from."""

    source: Literal["file", "none"] = Field(
        description="file: read from GATE_POLICY_FILE at start-up; none: GATE_POLICY_FILE is "
        "unset, so only a task spec's own gates hold nodes."
    )
    file: str | None = Field(description="The policy file, as GATE_POLICY_FILE names it.")
    defaults: GateRule = Field(description="The rule of every node; a null field is not set.")
    roles: dict[str, GateRule] = Field(description="Rules by role, over the defaults.")
    nodes: dict[str, GateRule] = Field(description="Rules by node key, over the role's rule.")
    by_role: dict[str, EffectiveGate | None] = Field(
        description="The gate a node of each role gets when no key rule and no task-spec gate "
        "applies; null: it waits for no one."
    )


class OperatorConfig(BaseModel):
    """The configuration in force."""

    settings: EffectiveSettings = Field(
        description="Every setting; secrets and the passwords inside URLs are redacted."
    )
    gate_policy: GatePolicyInForce = Field(
        description="The gate policy; a node's own gate in its task spec wins over it."
    )
