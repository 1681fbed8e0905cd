"""Log lines that say which request, run and node they are about, as text or as JSON.

The request middleware binds the request id (and the request, whose path names a run or node once it
is routed); the worker binds the run and node it is executing with `log_context`. Every record
then carries them, and `current_context()` hands the same ids to Sentry events.

Formatters pass every line through `redaction.redact`: the configured secrets (API keys, the Sentry
DSN, the database password) and any credential inside a URL or a header never reach the log, even
when one slipped into a message or a traceback.
"""

import json
import logging
import logging.config
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings

CONTEXT_FIELDS = ("request_id", "run_id", "node_id")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# The ASGI scope of the request being served: routing adds its `path_params` after the request
# starts, so ids named by the path are read from it when a line is written.
_request_scope: ContextVar[Mapping[str, Any] | None] = ContextVar("request_scope", default=None)
_run_id: ContextVar[str | None] = ContextVar("run_id", default=None)
_node_id: ContextVar[str | None] = ContextVar("node_id", default=None)


@contextmanager
def request_context(request_id: str, scope: Mapping[str, Any]) -> Iterator[None]:
    """Bind a request's id and ASGI scope for as long as it is served."""
    id_token = _request_id.set(request_id)
    scope_token = _request_scope.set(scope)
    try:
        yield
    finally:
        _request_scope.reset(scope_token)
        _request_id.reset(id_token)


@contextmanager
def log_context(*, run_id: object = None, node_id: object = None) -> Iterator[None]:
    """Bind the run and node being worked on (the worker's helper); None leaves one unbound."""
    run_token = _run_id.set(None if run_id is None else str(run_id))
    node_token = _node_id.set(None if node_id is None else str(node_id))
    try:
        yield
    finally:
        _node_id.reset(node_token)
        _run_id.reset(run_token)


def current_request() -> Mapping[str, Any] | None:
    """The ASGI scope of the request being served here, if one is."""
    return _request_scope.get()


def current_context() -> dict[str, str]:
    """The request, run and node ids bound here; only those that are known."""
    scope = _request_scope.get()
    path_params = scope.get("path_params", {}) if scope is not None else {}
    values = {
        "request_id": _request_id.get(),
        "run_id": _run_id.get() or path_params.get("run_id"),
        "node_id": _node_id.get() or path_params.get("node_id"),
    }
    return {name: str(value) for name, value in values.items() if value is not None}


class ContextFilter(logging.Filter):
    """Adds the bound ids to every record as attributes (`record.run_id`, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_context()
        for name in CONTEXT_FIELDS:
            setattr(record, name, context.get(name))
        return True


class _Redacting(logging.Formatter):
    def __init__(self, *args: Any, secrets: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = tuple(secrets)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


class TextFormatter(_Redacting):
    """`time level logger: message [request_id=... run_id=...]`, for people at a terminal."""

    def __init__(self, *, secrets: Sequence[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets=secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}" for name in CONTEXT_FIELDS if (value := getattr(record, name, None))
        ]
        return self.redact(f"{line} [{' '.join(ids)}]" if ids else line)


class JsonFormatter(_Redacting):
    """One JSON object a line, for log collectors: time, level, logger, message, the bound ids
    and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if value := getattr(record, name, None):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(document, ensure_ascii=False, default=str))


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: the service's and uvicorn's records, formatted as
    LOG_FORMAT says, with the bound ids, on standard error."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    handler = {"class": "logging.StreamHandler", "formatter": "crew", "filters": ["context"]}
    uvicorn_logger = {
        "handlers": ["stderr"],
        "level": settings.log_level.upper(),
        "propagate": False,
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"crew": {"()": formatter, "secrets": configured_secrets(settings)}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": settings.log_level.upper()},
        "loggers": {
            name: uvicorn_logger for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(settings: Settings) -> None:
    """Set up logging for a process that uvicorn does not configure (the standalone worker)."""
    logging.config.dictConfig(logging_config(settings))
