"""The Operator Console's `conf/operator.yaml`: a settings source below the environment and `.env`.

The file has three sections, each standing for settings of ours:

    server:                       # where `make op-console` listens (`make api-run` keeps HOST:PORT)
      host: "127.0.0.1"           #   HOST
      port: 8008                  #   PORT
      log_level: "info"           #   LOG_LEVEL
    security:
      admin_token_env: "ADMIN_TOKEN"   # ADMIN_TOKEN_ENV: the variable holding an admin key
      cors:
        enabled: false            # true: CORS_ORIGINS is allow_origins
        allow_origins: []
    gates: {...}                  # the gate policy: GATE_POLICY_FILE is this file

A key the program does not use is a warning at start-up (`unused_keys`), never an error, so a
file written for the other console still starts ours; a key with a value we cannot use stops
start-up with one line naming it.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apps.core.validation import Problem, error_location, error_message, error_problem

DEFAULT_OPERATOR_FILE = Path("conf/operator.yaml")
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# An environment variable's name, as a shell accepts it.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class OperatorFileError(ValueError):
    """The file cannot be read or has a value we cannot use; the message is one line naming the
    key."""


class _Section(BaseModel):
    # Keys of other consoles are kept, to be named at start-up, not refused.
    model_config = ConfigDict(extra="allow", frozen=True)


class ServerSection(_Section):
    host: str | None = Field(default=None, min_length=1, description="HOST of `make op-console`.")
    port: int | None = Field(default=None, ge=1, le=65535, description="PORT of `make op-console`.")
    log_level: LogLevel | None = Field(default=None, description="LOG_LEVEL.")


class CorsSection(_Section):
    enabled: bool = Field(default=False, description="Whether browsers of other origins may call.")
    allow_origins: list[str] = Field(default_factory=list, description="CORS_ORIGINS when enabled.")


class SecuritySection(_Section):
    admin_token_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="ADMIN_TOKEN_ENV."
    )
    cors: CorsSection | None = None


class OperatorFile(_Section):
    server: ServerSection | None = None
    security: SecuritySection | None = None
    # Checked by the gate policy's own reader, which names each rule's problem.
    gates: dict[str, Any] | None = None


def read_operator_file(path: Path) -> OperatorFile:
    """The file at `path` (empty: no settings), or `OperatorFileError` naming where it is
    wrong."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OperatorFileError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise OperatorFileError(f"{path}: is not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise OperatorFileError(f"{path}:{where}: {problem}") from None
    try:
        return OperatorFile.model_validate(document or {})
    except ValidationError as error:
        item = error.errors()[0]
        where = error_location(item["loc"]) or "document"
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
        raise OperatorFileError(f"{path}: {where}: {error_message(item)}{shown}") from None


def setting_values(file: OperatorFile, path: Path, *, listen: bool) -> dict[str, Any]:
    """What the file sets, by setting name; the server section only when `listen` (for the
    Operator Console: `make api-run` keeps its own HOST:PORT)."""
    values: dict[str, Any] = {}
    if listen and file.server is not None:
        values.update(file.server.model_dump(include={"host", "port", "log_level"}))
    security = file.security
    if security is not None:
        values["admin_token_env"] = security.admin_token_env
        if security.cors is not None and security.cors.enabled:
            values["cors_origins"] = security.cors.allow_origins
    if file.gates is not None:
        values["gate_policy_file"] = path
    return {name: value for name, value in values.items() if value is not None}


def check_settings_sections(document: Mapping[Any, Any]) -> tuple[list[Problem], list[str]]:
    """Every problem of the document's settings sections (`server`, `security`: `gates` is the
    gate policy's to check), and the keys nothing reads, for `POST /config/validate`."""
    sections = {str(name): value for name, value in document.items() if name != "gates"}
    try:
        parsed = OperatorFile.model_validate(sections)
    except ValidationError as error:
        return [error_problem(item) for item in error.errors()], []
    return [], unused_keys(parsed)


def unused_keys(file: OperatorFile) -> list[str]:
    """The keys of the file the program does not use, dotted (`server.workers`)."""
    return list(_extras(file, ""))


def _extras(section: BaseModel, prefix: str) -> list[str]:
    names = [f"{prefix}{name}" for name in section.model_extra or {}]
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, _Section):
            names.extend(_extras(value, f"{prefix}{name}."))
    return names
