"""Every error leaves as JSON with a human-readable `detail` and the right status, never a trace."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from apps.core.database import is_transient
from apps.core.errors import CrewError
from apps.core.validation import error_location, error_message

logger = logging.getLogger(__name__)


def _where(loc: tuple[int | str, ...]) -> str:
    """Which part of the request (query, body, header, path), then where in it."""
    source, *path = loc
    return f"{source} {error_location(path)}" if path else str(source)


async def _crew_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, CrewError)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors()
    ]
    detail = "; ".join(f"{_where(tuple(p['loc']))}: {error_message(p)}" for p in problems)
    return JSONResponse({"detail": detail, "errors": problems}, 422)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)


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
    app.add_exception_handler(CrewError, _crew_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(ConnectionError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
