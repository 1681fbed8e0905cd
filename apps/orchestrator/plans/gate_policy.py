"""Gate policies: which nodes wait for a human, for how long, and what a timeout decides.

A policy file is YAML in the seed's `conf/operator.yaml` format, its rules under `gates:`:

    gates:
      defaults:               # every node
        timeout_minutes: 1440
      writer:                 # a role: every node of that role
        required: true
        auto_approve: false
        timeout_minutes: 60
      review:                 # any other name: the nodes with that key
        required: true
        when: before

`defaults`, `roles` and `nodes` are not node keys there: `roles:` and `nodes:` sections say which
is meant where a name could be both (a dag node keyed `writer`). Other top-level sections of the
file are left to their owners. A node's gate is resolved once, at submission, from layers that
each set only the fields they name: no gate, the policy's `defaults`, the rule of the node's role,
the rule of its key, and the `gate` of its task spec, which wins (a task spec's gate that does not
say `required` is required). The result is stored on the node, so the runtime reads
`read_gate(node.gate)` and never the policy.
"""

import functools
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from apps.core.roles import NODE_KEY_PATTERN, ROLES, NodeKey, Role
from apps.core.settings import Settings, SettingsError
from apps.core.strict_models import StrictModel
from apps.core.validation import Problem, error_location, error_message
from apps.orchestrator.plans.documents import DocumentError, read_yaml

OnTimeout = Literal["approve", "reject", "fail"]
GateWhen = Literal["after", "before"]

MAX_TIMEOUT_MINUTES = 60 * 24 * 30
_SECTIONS = ("roles", "nodes")
_RULE_FIELDS = "required, auto_approve, timeout_minutes, on_timeout, when"
_NO_GATE: dict[str, Any] = {
    "required": False,
    "when": "after",
    "timeout_minutes": None,
    "on_timeout": "fail",
}


class GatePolicyError(ValueError):
    """A gate policy file that cannot be used; the message names the file, where and why."""


class GateRule(StrictModel):
    """A gate rule. A field left out (or null) is inherited from the rule before it; only
    `timeout_minutes: null` is a value of its own: no timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: 0 or "no" is not a boolean in the documented schema, so not one here either.
    required: StrictBool | None = Field(
        default=None, description="Whether the node waits for a human decision."
    )
    auto_approve: StrictBool | None = Field(
        default=None,
        description="Approve by itself when the timeout passes: the same as on_timeout: approve.",
    )
    timeout_minutes: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_MINUTES,
        description="How long the gate waits for a decision; null waits until one comes.",
    )
    on_timeout: OnTimeout | None = Field(
        default=None,
        description="What the timeout decides: approve, reject or fail (fail unless auto_approve).",
    )
    when: GateWhen | None = Field(
        default=None,
        description="after: review the node's output before its dependents start (the default); "
        "before: approve the node before it starts.",
    )

    @model_validator(mode="after")
    def _auto_approve_agrees_with_on_timeout(self) -> "GateRule":
        if self.auto_approve is None or self.on_timeout is None:
            return self
        if self.auto_approve and self.on_timeout != "approve":
            raise ValueError(f"auto_approve: true means on_timeout: approve, not {self.on_timeout}")
        if not self.auto_approve and self.on_timeout == "approve":
            raise ValueError("auto_approve: false contradicts on_timeout: approve")
        return self


class GatePolicy(BaseModel):
    """Gate rules for every node, by role and by node key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: GateRule = Field(default_factory=GateRule, description="The rule of every node.")
    roles: dict[Role, GateRule] = Field(
        default_factory=dict, description="Rules by role, over the defaults."
    )
    nodes: dict[NodeKey, GateRule] = Field(
        default_factory=dict, description="Rules by node key, over the role's rule."
    )

    def layers(self, role: str, key: str | None) -> Iterator[tuple[str, GateRule]]:
        """The rules that apply to a node of `role` and `key`, weakest first, with their names."""
        if self.defaults.model_fields_set:
            yield "defaults", self.defaults
        if role in self.roles:
            yield f"role:{role}", self.roles[role]
        if key in self.nodes:
            yield f"node:{key}", self.nodes[key]


NO_GATES = GatePolicy()


class EffectiveGate(BaseModel):
    """A node's resolved gate, stored in its `gate` column at submission: what the runtime reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    required: bool = Field(description="Whether the node waits for a human decision.")
    when: GateWhen = Field(
        default="after",
        description="after: its output waits for a decision; before: it waits to start.",
    )
    timeout_minutes: float | None = Field(
        default=None, description="How long the gate waits; null: until a decision comes."
    )
    on_timeout: OnTimeout = Field(default="fail", description="What the timeout decides.")
    source: list[str] = Field(
        default_factory=list,
        description="The rules it was resolved from, weakest first: defaults, role:<role>, "
        "node:<key>, task_spec.",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_timeout_from_auto_approve(cls, data: Any) -> Any:
        # Gates stored before on_timeout was resolved kept auto_approve instead.
        if isinstance(data, Mapping) and data.get("on_timeout") is None:
            return {**data, "on_timeout": "approve" if data.get("auto_approve") else "fail"}
        return data

    @property
    def expiry(self) -> timedelta | None:
        """How long after it opens the gate expires; None when it waits for a decision."""
        return None if self.timeout_minutes is None else timedelta(minutes=self.timeout_minutes)

    def expires_at(self, opened_at: datetime) -> datetime | None:
        """When a gate opened at `opened_at` expires; None when it never does."""
        expiry = self.expiry
        return None if expiry is None else opened_at + expiry


def _layer(gate: dict[str, Any], rule: GateRule) -> dict[str, Any]:
    named = {name: getattr(rule, name) for name in rule.model_fields_set}
    auto_approve = named.pop("auto_approve", None)
    if auto_approve is True:
        gate["on_timeout"] = "approve"
    elif auto_approve is False and gate["on_timeout"] == "approve":
        gate["on_timeout"] = _NO_GATE["on_timeout"]
    for name, value in named.items():
        if value is not None or name == "timeout_minutes":
            gate[name] = value
    return gate


def resolve_gate(
    policy: GatePolicy, role: str, key: str | None, own: GateRule | None
) -> EffectiveGate:
    """The gate of a node of `role` and `key` whose task spec gives it `own` (which wins)."""
    layers = list(policy.layers(role, key))
    if own is not None:
        required = own if own.required is not None else own.model_copy(update={"required": True})
        layers.append(("task_spec", required))
    gate = dict(_NO_GATE)
    for _, rule in layers:
        gate = _layer(gate, rule)
    return EffectiveGate(**gate, source=[name for name, _ in layers])


def gate_to_store(
    policy: GatePolicy, role: str, key: str, own: GateRule | None
) -> dict[str, Any] | None:
    """What a node's `gate` column holds: its resolved gate as JSON, or None when none is
    required."""
    gate = resolve_gate(policy, role, key, own)
    return gate.model_dump(mode="json") if gate.required else None


def read_gate(stored: Mapping[str, Any] | None) -> EffectiveGate | None:
    """The gate stored on a node (its `gate` column), or None when the node waits for no one."""
    if not stored:
        return None
    gate = EffectiveGate.model_validate(stored)
    return gate if gate.required else None


class _PolicyReader:
    """Turns the `gates:` mapping of a document into a policy, collecting every problem with
    its location in the document."""

    def __init__(self) -> None:
        self.defaults = GateRule()
        self.rules: dict[str, dict[str, GateRule]] = {section: {} for section in _SECTIONS}
        self.places: dict[tuple[str, str], str] = {}
        self.problems: list[Problem] = []

    def read(self, gates: Mapping[Any, Any]) -> None:
        for name, value in gates.items():
            where = f"gates.{name}"
            if name == "defaults":
                self.defaults = self._rule(where, value) or self.defaults
            elif name in _SECTIONS:
                self._read_section(where, name, value)
            elif name in ROLES:
                self._add("roles", name, where, value)
            else:
                self._add("nodes", name, where, value)

    def _read_section(self, where: str, section: str, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.problems.append(Problem(where, f"must be a mapping of {section} to rules"))
            return
        for name, rule in value.items():
            self._add(section, name, f"{where}.{name}", rule)

    def _add(self, section: str, name: object, where: str, value: object) -> None:
        problem = _name_problem(section, name)
        if problem is None and (section, str(name)) in self.places:
            problem = f"{name} already has a rule at {self.places[(section, str(name))]}"
        if problem is not None:
            self.problems.append(Problem(where, problem))
            return
        rule = self._rule(where, value)
        if rule is not None:
            self.rules[section][str(name)] = rule
            self.places[(section, str(name))] = where

    def _rule(self, where: str, value: object) -> GateRule | None:
        if not isinstance(value, Mapping | None):
            self.problems.append(Problem(where, f"must be a mapping of {_RULE_FIELDS}"))
            return None
        try:
            return GateRule.model_validate(value or {})
        except ValidationError as error:
            self.problems.extend(
                Problem(error_location((where, *item["loc"])), _message(item))
                for item in error.errors()
            )
            return None

    def policy(self) -> GatePolicy:
        return GatePolicy.model_validate({"defaults": self.defaults, **self.rules})


def _name_problem(section: str, name: object) -> str | None:
    if section == "roles" and name not in ROLES:
        return f"not a role; roles are {', '.join(ROLES)}"
    if section == "nodes" and not (isinstance(name, str) and re.fullmatch(NODE_KEY_PATTERN, name)):
        return (
            f"not a role ({', '.join(ROLES)}) nor a node key "
            "(a lowercase letter, then up to 63 lowercase letters, digits, - or _)"
        )
    return None


def _message(item: Mapping[str, Any]) -> str:
    if item["type"] == "extra_forbidden":
        return f"not a gate field; the fields are {_RULE_FIELDS}"
    return error_message(item)


def parse_gate_policy(document: object) -> tuple[GatePolicy, list[Problem]]:
    """The policy a parsed document holds under `gates:`, and every problem found in it (the
    policy is only meant to be used when there are none)."""
    if not isinstance(document, Mapping):
        return NO_GATES, [Problem("document", "must be a mapping with a gates: section")]
    if "gates" not in document:
        return NO_GATES, [Problem("gates", "missing; a gate policy holds its rules under gates:")]
    gates = document["gates"]
    if gates is None:
        return NO_GATES, []
    if not isinstance(gates, Mapping):
        return NO_GATES, [Problem("gates", "must be a mapping of roles and node keys to rules")]
    reader = _PolicyReader()
    reader.read(gates)
    return reader.policy(), reader.problems


def gate_policy_of(settings: Settings) -> GatePolicy:
    """The policy GATE_POLICY_FILE holds (read once per process), no gates when it is unset; a
    `SettingsError` naming the variable when the file cannot be used, which entry points call
    this for at start-up."""
    path = settings.gate_policy_file
    if path is None:
        return NO_GATES
    try:
        return load_gate_policy(path)
    except GatePolicyError as error:
        raise SettingsError(f"invalid setting GATE_POLICY_FILE: {error}") from None


@functools.lru_cache(maxsize=8)
def load_gate_policy(path: Path) -> GatePolicy:
    """The policy in the YAML file at `path`, read once per process, or `GatePolicyError` naming
    the file, each place and what is wrong there, on one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise GatePolicyError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise GatePolicyError(f"{path}: is not UTF-8 text") from None
    try:
        document = read_yaml(text)
    except DocumentError as error:
        raise GatePolicyError(f"{path}: {error}") from None
    policy, problems = parse_gate_policy(document)
    if problems:
        raise GatePolicyError(f"{path}: " + "; ".join(str(problem) for problem in problems))
    return policy
