"""What the configuration endpoints answer: the settings in force with every secret redacted, the
gate policy in force with where it came from, and checks of settings or gate-policy documents.

A check changes nothing and reads nothing but the document: not the environment, not `.env`, and
not a file a document names (GATE_POLICY_FILE is a path on the server; its content is checked by
sending it as a gate-policy document).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from apps.core import operator_file
from apps.core.errors import BadRequest, Unprocessable
from apps.core.redaction import configured_secrets, redact
from apps.core.roles import ROLES
from apps.core.settings import Settings, setting_problem
from apps.core.validation import Problem
from apps.orchestrator.plans.documents import DocumentError, read_json, read_yaml
from apps.orchestrator.plans.gate_policy import gate_policy_of, parse_gate_policy, resolve_gate
from apps.wire.schemas import DocumentKind

DOCUMENT_KINDS: tuple[str, ...] = get_args(DocumentKind)
REDACTED = "**********"
MAX_DOCUMENT_BYTES = 256 * 1024
# The sections of an operator file (conf/operator.yaml), which is checked as a gate policy is.
_OPERATOR_FILE_SECTIONS = frozenset({"gates", "server", "security"})


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


# The settings whose values never leave the process: every field typed `SecretStr`.
SECRET_SETTINGS = frozenset(
    name for name, info in Settings.model_fields.items() if _is_secret(info.annotation)
)


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """Every setting's value as JSON, secrets replaced by asterisks (null stays null), and every
    text passed through `redact`: the credentials inside URLs (passwords, `?password=`,
    `api_key=`) are hidden too."""
    secrets = configured_secrets(settings)
    values = settings.model_dump(mode="json")
    for name, value in values.items():
        if name in SECRET_SETTINGS:
            values[name] = None if value is None else REDACTED
        elif isinstance(value, str):
            values[name] = redact(value, secrets, REDACTED)
        elif isinstance(value, list):
            values[name] = [redact(str(item), secrets, REDACTED) for item in value]
    return values


def gate_policy_in_force(settings: Settings) -> dict[str, Any]:
    """The gate policy the service runs with, where it came from, and what each role gets."""
    policy = gate_policy_of(settings)
    return {
        "source": "none" if settings.gate_policy_file is None else "file",
        "file": None if settings.gate_policy_file is None else str(settings.gate_policy_file),
        **policy.model_dump(),
        "by_role": {
            role: gate if (gate := resolve_gate(policy, role, None, None)).required else None
            for role in ROLES
        },
    }


def effective_configuration(settings: Settings) -> dict[str, Any]:
    """The settings in force (secrets redacted) and the gate policy in force."""
    return {"settings": redacted_settings(settings), "gate_policy": gate_policy_in_force(settings)}


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What a check of a document found."""

    kind: DocumentKind
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


class _DocumentSettings(Settings):
    """Settings read from a document alone: never from the environment or `.env`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _setting_values(document: Mapping[Any, Any]) -> tuple[dict[str, Any], list[Problem]]:
    values: dict[str, Any] = {}
    problems = []
    for name, value in document.items():
        setting = str(name).lower()
        if setting not in Settings.model_fields:
            problems.append(Problem(str(name), "not a setting"))
        elif setting in values:
            problems.append(Problem(str(name), f"{setting.upper()} is given twice"))
        elif value != "":  # as in the environment, an empty value means the default
            values[setting] = value
    return values, problems


def check_settings(document: object) -> ValidationReport:
    """Every problem of a settings document: names as in `.env` (any case), values as there or
    as JSON/YAML values."""
    if not isinstance(document, Mapping):
        problem = Problem("document", "must be a mapping of setting names to values")
        return ValidationReport("settings", [problem])
    values, problems = _setting_values(document)
    try:
        _DocumentSettings(**values)
    except ValidationError as error:
        problems.extend(setting_problem(item) for item in error.errors())
    order = {str(name).upper(): index for index, name in enumerate(document)}
    problems.sort(key=lambda problem: order.get(problem.location.split(".")[0].upper(), 0))
    notes = []
    if "gate_policy_file" in values:
        notes.append(
            "GATE_POLICY_FILE names a file on the server, which a check does not read: send its "
            "content with kind=gate_policy to check it"
        )
    return ValidationReport("settings", problems, notes)


def check_gate_policy(document: object) -> ValidationReport:
    """Every problem of a gate-policy document (the content of a GATE_POLICY_FILE, or of an
    operator file: its `server:` and `security:` sections are checked too)."""
    _, problems = parse_gate_policy(document)
    sections = document if isinstance(document, Mapping) else {}
    if "gates" not in sections and {"server", "security"} & set(sections):
        problems = []  # an operator file without gates: it gates nothing
    # An operator file (conf/operator.yaml) has its settings sections beside `gates:`.
    without_kind = {name: value for name, value in sections.items() if name != "kind"}
    setting_problems, unused = operator_file.check_settings_sections(without_kind)
    notes = [f"not used, ignored: {', '.join(unused)}"] if unused else []
    return ValidationReport("gate_policy", [*setting_problems, *problems], notes)


def parse_document(body: bytes, media_type: str | None) -> object:
    """The document in a request body: JSON when the media type says so, else YAML (which
    reads JSON too); `BadRequest` saying where when it is neither."""
    if not body.strip():
        raise BadRequest("the body is empty: send a settings or gate-policy document")
    essence = (media_type or "").partition(";")[0].strip().lower()
    is_json = essence == "application/json" or essence.endswith("+json")
    try:
        return read_json(body) if is_json else read_yaml(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid YAML: it is not UTF-8 text") from None
    except DocumentError as error:
        language = "JSON" if is_json else "YAML"
        raise BadRequest(f"the body is not valid {language}: {error}") from None


def _kind_of(document: object, asked: DocumentKind | None) -> DocumentKind:
    named = document.get("kind") if isinstance(document, Mapping) else None
    if named is not None and named not in DOCUMENT_KINDS:
        raise Unprocessable(f"kind must be settings or gate_policy, not {named!r}")
    if asked and named and asked != named:
        raise Unprocessable(f"kind is {asked} in the query but {named} in the body")
    if asked or named:
        return asked or cast(DocumentKind, named)  # one of DOCUMENT_KINDS, checked above
    is_policy = isinstance(document, Mapping) and bool(_OPERATOR_FILE_SECTIONS & set(document))
    return "gate_policy" if is_policy else "settings"


def validate_document(
    body: bytes, media_type: str | None, kind: DocumentKind | None
) -> ValidationReport:
    """Every problem of the settings or gate-policy document in `body`, changing nothing. `kind`
    comes from the query, the body's `kind` field, or the document: `gates:` is a policy."""
    document = parse_document(body, media_type)
    kind = _kind_of(document, kind)
    if kind == "gate_policy":
        return check_gate_policy(document)
    if isinstance(document, Mapping):
        document = {name: value for name, value in document.items() if name != "kind"}
    return check_settings(document)
