"""Every setting of the service, read once from the environment, `.env` and `conf/operator.yaml`.

Precedence, highest first: values given in code (tests), the environment, `.env`, the operator
file (`apps.core.operator_file`), the defaults below. Nothing else in the code base reads the
environment: entry points call `load_settings()` and pass the result down.
"""

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from apps.core import operator_file
from apps.core.fair_pool import IDLE_SECONDS
from apps.core.operator_file import DEFAULT_OPERATOR_FILE, ENV_NAME, LogLevel, OperatorFileError
from apps.core.redaction import redact
from apps.core.roles import Role
from apps.core.validation import Problem, error_location, error_message

LLMProvider = Literal["demo", "openai", "ollama"]
LogFormat = Literal["text", "json"]

# Short URL schemes users paste from other tools, mapped to the async driver we run on.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_SECRET_FIELDS = frozenset(
    {
        "api_key",
        "admin_token",
        "openai_api_key",
        "sentry_dsn",
        "artifact_s3_access_key_id",
        "artifact_s3_secret_access_key",
    }
)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HTTP_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")
# A browser's Origin: scheme, host and port, nothing after; "*" allows every origin.
_ORIGIN = re.compile(r"\*|https?://[^/?#\s]+")
ROOT_PATH = re.compile(r"(/(?!\.+(/|$))[A-Za-z0-9._~-]+)+")


class AgentBinding(BaseModel):
    """The provider and model a role is bound to."""

    model_config = ConfigDict(frozen=True)

    provider: LLMProvider
    model: str = Field(min_length=1, max_length=128)


class ModelPrice(BaseModel):
    """What a model costs, in dollars per million tokens."""

    model_config = ConfigDict(frozen=True)

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


DEFAULT_PRICES = {
    "gpt-4o-mini": ModelPrice(prompt=0.15, completion=0.60),
    "gpt-4o": ModelPrice(prompt=2.50, completion=10.00),
}


class SettingsError(Exception):
    """A setting has a value the service cannot run with; the message is one line."""


def normalize_database_url(value: str) -> str:
    """Return `value` as an async SQLAlchemy URL, or raise ValueError saying what is wrong."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user@host:5432/dbname"
        ) from None
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database {url.drivername!r}; use sqlite+aiosqlite or postgresql+asyncpg"
        )
    if driver == "postgresql+asyncpg" and not url.database:
        raise ValueError("a PostgreSQL URL must name the database, e.g. .../dbname")
    return url.set(drivername=driver).render_as_string(hide_password=False)


def _comma_separated(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _keyed_pairs(
    value: str, separator: str, names: tuple[str, str], form: str
) -> dict[str, dict[str, str]]:
    """`key=first<separator>second,...` as {key: {names[0]: first, names[1]: second}}, the
    second part being all after the first separator; a ValueError naming `form` otherwise."""
    parsed = {}
    for item in _comma_separated(value):
        key, _, pair = item.partition("=")
        first, _, second = pair.partition(separator)
        if not (key.strip() and first.strip() and second.strip()):
            raise ValueError(f"{item!r} is not {form}")
        parsed[key.strip()] = {names[0]: first.strip(), names[1]: second.strip()}
    return parsed


def _missing_file(path: Path) -> str | None:
    """Why nothing is at `path`, or None when something is: a path the system refuses (too
    long, a NUL byte) is no file either, not an error."""
    try:
        return None if path.exists() else "no such file"
    except (OSError, ValueError) as error:
        return getattr(error, "strerror", None) or str(error)


def _operator_file_values(named: object, *, listen: bool) -> dict[str, Any]:
    """The settings of the operator file `named` (a path, or None for `conf/operator.yaml` when
    it is there), by setting name, with `operator_config` the file read; {} when there is none."""
    if named is None and not DEFAULT_OPERATOR_FILE.is_file():
        return {}
    path = Path(str(named)) if named is not None else DEFAULT_OPERATOR_FILE
    if _missing_file(path) is not None:
        return {}  # the field's validator names the problem
    try:
        document = operator_file.read_operator_file(path)
    except OperatorFileError as error:
        raise SettingsError(f"invalid setting OPERATOR_CONFIG: {error}") from None
    return {"operator_config": path, **operator_file.setting_values(document, path, listen=listen)}


class _OperatorFileSource(PydanticBaseSettingsSource):
    """The operator file's settings, below the environment and `.env`."""

    def __init__(self, settings_cls: type[BaseSettings], listen: bool) -> None:
        super().__init__(settings_cls)
        self.listen = listen

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Never asked: __call__ answers every field at once. Field by field, it knows none.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        named = self.current_state.get("operator_config")
        return _operator_file_values(named, listen=self.listen)


class _AdminTokenSource(PydanticBaseSettingsSource):
    """ADMIN_TOKEN, or the variable ADMIN_TOKEN_ENV names, from the environment or `.env`.

    Above the environment, so that when ADMIN_TOKEN_ENV names another variable an ADMIN_TOKEN
    left in the environment is no admin key; ADMIN_TOKEN_ENV itself comes, as any setting, from
    the code, the environment, `.env` or the operator file.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        given: InitSettingsSource,
        environment: EnvSettingsSource,
        dotenv: EnvSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self.given = given
        self.environments = (environment, dotenv)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Never asked: __call__ answers its one field. Field by field, it knows none.
        return None, field_name, False

    def _setting(self, name: str) -> object:
        found = self.given.init_kwargs.get(name)
        for source in self.environments:
            found = found or source.env_vars.get(name)
        return found

    def __call__(self) -> dict[str, Any]:
        variable = self._setting("admin_token_env")
        if not variable:
            named_file = self._setting("operator_config")
            listed = _operator_file_values(named_file, listen=False)
            variable = listed.get("admin_token_env", "ADMIN_TOKEN")
        for source in self.environments:
            value = source.env_vars.get(str(variable).lower())
            if value:
                return {"admin_token": value}
        return {"admin_token": None}


class Settings(BaseSettings):
    """The service's configuration; each field is the environment variable of the same name."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )
    # Whether the operator file's `server:` section says where to listen: it is the Operator
    # Console's address (`make op-console`), and `make api-run` keeps HOST:PORT.
    listens_as_operator_console: ClassVar[bool] = False

    api_key: SecretStr | None = Field(
        default=None, description="Admin API key accepted in X-API-Key or Authorization: Bearer."
    )
    admin_token_env: str = Field(
        default="ADMIN_TOKEN",
        pattern=ENV_NAME,
        description="Name of the environment variable holding a second admin key (the "
        "Operator Console's ADMIN_TOKEN); security.admin_token_env in the operator file.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="The admin key read from the variable ADMIN_TOKEN_ENV names; an admin key "
        "exactly as API_KEY is, named admin-token in decisions.",
    )
    operator_config: Path | None = Field(
        default=None,
        description="The Operator Console's YAML settings file (server, security, gates); unset: "
        "conf/operator.yaml when it is there. Environment and .env win over it.",
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///./app.db", description="SQLAlchemy URL of the database."
    )
    alembic_database_url: str | None = Field(
        default=None, description="Database URL for migrations; DATABASE_URL when unset."
    )
    db_pool_size: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Connections a pool keeps open while idle (a process has two on PostgreSQL: "
        "requests' and the orchestrator's transactions').",
    )
    db_max_overflow: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Extra connections a PostgreSQL pool may open in a burst, beyond DB_POOL_SIZE.",
    )
    db_pool_idle_seconds: float = Field(
        default=IDLE_SECONDS,
        gt=0,
        le=86_400,
        description="Seconds an extra PostgreSQL connection (beyond DB_POOL_SIZE in a pool) may "
        "sit idle before it is closed.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty is off."
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    web_concurrency: int = Field(
        default=2, ge=1, le=64, description="API worker processes under api-run-prod."
    )
    root_path: str = Field(
        default="",
        description="The prefix a reverse proxy serves the app under, which it takes off the "
        "path (uvicorn's --root-path), e.g. /crew; empty: the host's root.",
    )
    log_level: LogLevel = Field(default="info", description="Log level of the service.")
    log_format: LogFormat = Field(
        default="text", description="Log lines as readable text, or as one JSON object a line."
    )
    llm_default_provider: LLMProvider = Field(
        default="demo", description="Provider of agents with no role-specific binding."
    )
    llm_default_model: str = Field(
        default="demo-1", min_length=1, description="Model of agents with no role binding."
    )
    llm_role_models: Annotated[dict[Role, AgentBinding], NoDecode] = Field(
        default_factory=dict,
        description="Agents per role, e.g. planner=openai:gpt-4o,writer=ollama:llama3.1:8b.",
    )
    llm_prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="Dollars per million tokens, e.g. gpt-4o-mini=0.15/0.60,gpt-4o=2.50/10.",
    )
    llm_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="Timeout of one LLM call."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Key for the openai provider."
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", description="Base URL of the openai provider."
    )
    ollama_base_url: str = Field(
        default="http://127.0.0.1:11434/v1", description="OpenAI-compatible base URL of Ollama."
    )
    demo_latency_ms: int = Field(
        default=100, ge=0, le=60_000, description="Latency of the offline demo provider."
    )
    worker_in_api: bool = Field(
        default=True, description="Run the worker inside the API process (one-process setups)."
    )
    worker_concurrency: int = Field(
        default=8, ge=1, le=256, description="Nodes one worker process runs at once."
    )
    run_concurrency: int = Field(
        default=4, ge=1, le=256, description="Nodes of one run that run at once."
    )
    lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How long a claimed node is held without a heartbeat.",
    )
    event_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often live event streams look for events other processes wrote.",
    )
    sse_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Seconds of silence after which an event stream sends a heartbeat comment.",
    )
    console_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="Hours a web console sign-in lasts before the browser must sign in again.",
    )
    sse_subscriber_buffer: int = Field(
        default=1_000,
        ge=1,
        le=100_000,
        description="Events an event stream may be behind its client before it is ended with "
        "an event telling the client to reconnect with Last-Event-ID.",
    )
    metrics_enabled: bool = Field(
        default=False, description="Serve Prometheus metrics on /metrics."
    )
    api_docs_enabled: bool = Field(
        default=True,
        description="Serve the API reference (/docs, /redoc, /openapi.json) without a key: it "
        "describes the routes and holds no data; off, they are not served at all.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on HOST where a standalone worker (make worker) serves its Prometheus "
        "metrics (node duration, LLM usage, leases taken back); unset: none.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        description="Directory where API worker processes share metrics; a temporary one if unset.",
    )
    sentry_dsn: SecretStr | None = Field(
        default=None, description="Sentry DSN; unset sends nothing."
    )
    sentry_env: str = Field(default="development", description="Sentry environment name.")
    release: str | None = Field(default=None, description="Release name reported to Sentry.")
    artifact_store: Literal["local", "s3"] = Field(
        default="local",
        description="Where artifact files and sidecars are kept: local (ARTIFACTS_DIR) or s3 "
        "(an S3-compatible bucket, ARTIFACT_S3_*).",
    )
    artifacts_dir: Path = Field(
        default=Path("./artifacts"),
        description="Directory of the local artifact store; a relative path is taken from the "
        "working directory at start-up, so every process sharing it must give the same absolute "
        "path.",
    )
    artifact_s3_bucket: str | None = Field(
        default=None,
        validate_default=True,
        description="Bucket of the s3 artifact store (required with ARTIFACT_STORE=s3).",
    )
    artifact_s3_prefix: str = Field(
        default="",
        description="Key prefix of the artifacts in the bucket, e.g. crew/prod; empty: its root.",
    )
    artifact_s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server (MinIO, R2, moto), e.g. "
        "http://127.0.0.1:9000; unset: AWS S3.",
    )
    artifact_s3_region: str | None = Field(
        default=None,
        description="Region of the bucket; unset: boto's own (AWS_DEFAULT_REGION, else us-east-1).",
    )
    artifact_s3_access_key_id: SecretStr | None = Field(
        default=None,
        description="Access key id for the bucket; unset: boto's credential chain "
        "(AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws, the instance's role).",
    )
    artifact_s3_secret_access_key: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="Secret access key going with ARTIFACT_S3_ACCESS_KEY_ID.",
    )
    gate_policy_file: Path | None = Field(
        default=None,
        description="YAML gate policy (the seed's conf/operator.yaml format); unset: no node "
        "waits for a human unless its task spec gates it.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        admin_token = _AdminTokenSource(settings_cls, init_settings, env_settings, dotenv_settings)
        operator = _OperatorFileSource(settings_cls, listen=cls.listens_as_operator_console)
        return (
            init_settings,
            admin_token,
            env_settings,
            dotenv_settings,
            operator,
            file_secret_settings,
        )

    @field_validator("operator_config")
    @classmethod
    def _operator_config_exists(cls, value: Path | None) -> Path | None:
        problem = None if value is None else _missing_file(value)
        if problem is not None:
            raise ValueError(f"{value}: {problem}")
        return value

    @field_validator("database_url", "alembic_database_url")
    @classmethod
    def _database_url_is_async(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @field_validator("root_path")
    @classmethod
    def _root_path_is_a_plain_prefix(cls, value: str) -> str:
        if value and not ROOT_PATH.fullmatch(value):
            raise ValueError(
                "expected a path prefix like /crew or /ops/crew: segments of letters, digits"
                " and ._~- (not dots alone), each after a /, none at the end"
            )
        return value

    @field_validator("artifacts_dir")
    @classmethod
    def _artifacts_dir_is_absolute(cls, value: Path) -> Path:
        try:
            return value.expanduser().absolute()
        except RuntimeError:
            user = value.parts[0]
            raise ValueError(f"{value}: the home directory of {user} is unknown") from None

    @field_validator("sentry_dsn")
    @classmethod
    def _sentry_dsn_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # Imported only to check a DSN: a process without one never loads the SDK.
            from sentry_sdk.utils import BadDsn, Dsn

            try:
                Dsn(value.get_secret_value())
            except BadDsn as error:
                raise ValueError(f"not a Sentry DSN: {error}") from None
        return value

    @field_validator("artifact_s3_bucket")
    @classmethod
    def _bucket_is_named_as_s3_wants(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET_NAME.fullmatch(value):
            raise ValueError(
                "must be 3 to 63 lowercase letters, digits, dots or hyphens, starting and "
                "ending with a letter or digit"
            )
        return value

    @field_validator("artifact_s3_endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL.fullmatch(value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return value

    @field_validator("openai_base_url", "ollama_base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1")
        return value

    @field_validator("artifact_s3_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        prefix = value.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError("must be names separated by single slashes, e.g. crew/prod")
        return prefix

    @field_validator(
        "artifact_s3_bucket",
        "artifact_s3_prefix",
        "artifact_s3_endpoint_url",
        "artifact_s3_region",
        "artifact_s3_access_key_id",
        "artifact_s3_secret_access_key",
    )
    @classmethod
    def _s3_settings_need_the_s3_store(cls, value: object, info: ValidationInfo) -> object:
        if value and info.data.get("artifact_store") == "local":
            raise ValueError(
                "is set but ARTIFACT_STORE is local; set ARTIFACT_STORE=s3 or unset it"
            )
        return value

    @field_validator("artifact_s3_bucket")
    @classmethod
    def _s3_store_needs_a_bucket(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("artifact_store") == "s3":
            raise ValueError("is required with ARTIFACT_STORE=s3")
        return value

    @field_validator("artifact_s3_secret_access_key")
    @classmethod
    def _s3_keys_come_in_pairs(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        key_id = info.data.get("artifact_s3_access_key_id")
        if value is None and key_id is not None:
            raise ValueError("is required with ARTIFACT_S3_ACCESS_KEY_ID")
        if value is not None and key_id is None:
            raise ValueError("is set without ARTIFACT_S3_ACCESS_KEY_ID")
        return value

    @field_validator("llm_role_models", mode="before")
    @classmethod
    def _parse_role_models(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return _keyed_pairs(value, ":", ("provider", "model"), "role=provider:model")

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        form = "model=prompt_price/completion_price"
        return _keyed_pairs(value, "/", ("prompt", "completion"), form)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return _comma_separated(value) if isinstance(value, str) else value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r}: an origin is http(s)://host[:port] with nothing after, or *"
                )
        return value

    @property
    def migrations_database_url(self) -> str:
        return self.alembic_database_url or self.database_url

    @property
    def database(self) -> URL:
        return make_url(self.database_url)


def setting_problem(item: Mapping[str, Any]) -> Problem:
    """An error of the settings, located at the variable it is about."""
    variable = error_location(item["loc"][:1]).upper()
    return Problem(variable or "settings", error_message(item))


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, never echoing a secret's value nor a credential in a
    URL."""
    problems = []
    for item in error.errors():
        problem = setting_problem(item)
        quiet = problem.location.lower() in _SECRET_FIELDS
        # A required setting left unset has no value to show.
        shown = "" if quiet or item.get("input") is None else f" (got {item.get('input')!r})"
        problems.append(f"{problem}{shown}")
    return redact("invalid setting " + "; ".join(problems))


class OperatorConsoleSettings(Settings):
    """The settings of the Operator Console (`make op-console`): the operator file's `server:`
    section says where to listen, below HOST, PORT and LOG_LEVEL of the environment and `.env`."""

    listens_as_operator_console: ClassVar[bool] = True


class _OncePerProcess(logging.Filter):
    """Lets each message through once: python-dotenv warns of a line of `.env` it cannot parse
    each time the file is read, and a process reads its settings more than once (the API's
    entry point, then its app)."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.said:
            return False
        self.said.add(message)
        return True


_DOTENV_WARNINGS = _OncePerProcess()


def load_settings(*, operator_console: bool = False, **overrides: Any) -> Settings:
    """Read the settings, raising `SettingsError` with one line when a value is bad."""
    dotenv_logger = logging.getLogger("dotenv.main")
    if _DOTENV_WARNINGS not in dotenv_logger.filters:
        dotenv_logger.addFilter(_DOTENV_WARNINGS)
    kind = OperatorConsoleSettings if operator_console else Settings
    try:
        return kind(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
    except UnicodeDecodeError as error:  # only `.env` is read as text without a check of its own
        raise SettingsError(
            f"invalid settings file .env: is not UTF-8 text (byte {error.start})"
        ) from None


def startup_warnings(settings: Settings) -> list[str]:
    """What a person starting the service should know though nothing stops it: keys of the
    operator file that nothing reads, an OpenAI agent without its key."""
    warnings = []
    if settings.operator_config is not None:
        try:
            unused = operator_file.unused_keys(
                operator_file.read_operator_file(settings.operator_config)
            )
        except OperatorFileError:
            unused = []  # read once already at start-up, where it would have stopped it
        if unused:
            warnings.append(f"{settings.operator_config}: not used, ignored: {', '.join(unused)}")
    openai_roles = [
        role for role, agent in settings.llm_role_models.items() if agent.provider == "openai"
    ]
    if settings.openai_api_key is None and (
        settings.llm_default_provider == "openai" or openai_roles
    ):
        who = (
            "LLM_DEFAULT_PROVIDER"
            if settings.llm_default_provider == "openai"
            else ("LLM_ROLE_MODELS (" + ", ".join(openai_roles) + ")")
        )
        warnings.append(
            f"{who} uses the openai provider but OPENAI_API_KEY is not set: its calls will "
            "fail until it is"
        )
    return warnings
