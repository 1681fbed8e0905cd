"""Every error leaves as JSON with a human-readable `detail` and the right status, never a trace."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from apps.core.database import is_transient
from apps.core.errors import CrewError
from apps.core.redaction import configured_secrets, redact
from apps.core.validation import error_location, error_message

logger = logging.getLogger(__name__)

# What a 422 lists at most; the detail says how many more there were.
MAX_REPORTED_ERRORS = 100


def _where(loc: tuple[int | str, ...]) -> str:
    """Which part of the request (query, body, header, path), then where in it."""
    source, *path = loc
    return f"{source} {error_location(path)}" if path else str(source)


async def _crew_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, CrewError)
    detail = redact(error.detail, request.app.state.secrets)
    if error.status_code >= 500:
        _log_fault(request, error, detail)
    return JSONResponse({"detail": detail}, error.status_code, headers=error.headers)


def _log_fault(request: Request, error: CrewError, detail: str) -> None:
    """A 5xx the code chose to answer is still a fault of this service or of one it depends
    on: logged, and for a 500 with its traceback, which Sentry's logging integration reports
    (`error_reporting`)."""
    where = f"{request.method} {request.url.path}"
    if type(error) is CrewError or error.status_code == 500:
        logger.error("fault on %s: %s", where, detail, exc_info=error)
    else:
        logger.warning("%d on %s: %s", error.status_code, where, detail)


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    found = error.errors()
    problems = [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in found[:MAX_REPORTED_ERRORS]
    ]
    detail = "; ".join(f"{_where(tuple(p['loc']))}: {error_message(p)}" for p in problems)
    if len(found) > len(problems):
        # A body of a million bad values must not make an answer a hundred times its size.
        detail += f"; and {len(found) - len(problems):,} more problems like these"
    return JSONResponse({"detail": detail, "errors": problems}, 422)


def _unreadable_body(cause: BaseException | None) -> str | None:
    """What FastAPI's "There was an error parsing the body" was, when the client can mend it."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 text: byte {cause.start} is {cause.reason}"
    if isinstance(cause, RecursionError):
        return "the body nests arrays or objects too deeply to be read"
    return None


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    detail = _unreadable_body(error.__cause__) or redact(
        str(error.detail), request.app.state.secrets
    )
    headers = error.headers
    if error.status_code == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return JSONResponse({"detail": detail}, error.status_code, headers=headers)


# The methods a route may serve, each asked of the router in turn by `_allowed_methods`.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on the request's path: Starlette's 405 names those of the
    first route it found only (`GET` alone for `/keys`, which `POST` serves too). The router is
    asked as routing asks it, method by method (its list of routes holds the included routers,
    not their routes), from the app's root path: a mounted app's request has its mount's. A
    mount takes every method, whatever its app serves: it is left to say so itself."""
    scope = request.scope
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = []
    for method in _METHODS:
        probe = {"type": "http", "path": scope["path"], "root_path": root_path, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _database_error(request: Request, error: Exception) -> JSONResponse:
    if not is_transient(error):
        return await _unexpected(request, error)
    # Not a fault of this service: the database is restarting, out of reach or busy.
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        503,
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "internal server error"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    """Every error as JSON; details pass through `redact` (an error of the artifact store may
    carry its endpoint's credentials)."""
    app.state.secrets = configured_secrets(app.state.settings)
    app.add_exception_handler(CrewError, _crew_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(ConnectionError, _database_error)
    # asyncpg's timeouts (a connection not opened, a statement not answered) come unwrapped.
    app.add_exception_handler(TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
