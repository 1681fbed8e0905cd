"""The OpenAPI document the app serves (and `docs/openapi.json` holds): FastAPI's, completed
with what it cannot say route by route: the `X-Request-ID` every answer carries, and parameters
as a client sends them (a parameter is absent, never null; its bounds in JSON Schema's words)."""

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from apps.core.settings import Settings, load_settings

_REQUEST_ID = {
    "description": "The request's id: the X-Request-ID the client sent when it is 1 to 128 of "
    "A-Z a-z 0-9 . _ : -, else a new one; the request's log lines and error reports carry it.",
    "required": True,
    "schema": {"type": "string"},
}


def describe(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
        )
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                _complete(operation)
        app.openapi_schema = document
    return app.openapi_schema


def _complete(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        parameter["schema"] = _as_sent(parameter["schema"])
    for status, response in operation["responses"].items():
        response.setdefault("headers", {})["X-Request-ID"] = _REQUEST_ID
        if status >= "400":
            _as_json(response)
        for media in response.get("content", {}).values():
            if "itemSchema" in media:
                # A stream is described by its items; FastAPI's `string` for a response class of
                # its own is not the stream's schema.
                media.pop("schema", None)


def _as_json(response: dict[str, Any]) -> None:
    """An error is JSON on every route: FastAPI files its schema under the route's own media
    type, which is `text/event-stream` on a stream."""
    content = response.get("content", {})
    schemas = [media.pop("schema") for media in content.values() if "schema" in media]
    if schemas:
        response["content"] = {
            "application/json": {**content.get("application/json", {}), "schema": schemas[0]}
        }


# Pydantic's names of bounds that it leaves beside an `anyOf` instead of inside it.
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _as_sent(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the `null` of an optional one, which a query or header cannot
    carry (leaving it out is how a client says none), and with its bounds where JSON Schema
    reads them."""
    schema = dict(schema)
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        schema = {**options[0], **schema}
    elif options:
        schema["anyOf"] = options
    for pydantic_name, name in _BOUNDS.items():
        if pydantic_name in schema:
            schema[name] = schema.pop(pydantic_name)
    return schema


def use_described_openapi(app: FastAPI) -> None:
    """Serve `describe(app)` at /openapi.json."""
    app.openapi = lambda: describe(app)  # type: ignore[method-assign]


def document_text(create_app: Callable[[Settings], FastAPI]) -> str:
    """The document as `docs/openapi.json` holds it: served by an app with its reference and
    metrics on, whatever this host's settings are."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(
            _env_file=None,
            api_docs_enabled=True,
            metrics_enabled=True,
            artifacts_dir=Path(scratch),
            database_url=f"sqlite+aiosqlite:///{scratch}/unused.db",
        )
        return json.dumps(create_app(settings).openapi(), indent=2, ensure_ascii=False) + "\n"
