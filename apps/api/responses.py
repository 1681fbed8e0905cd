"""The error answers a route declares in the OpenAPI document, all in the one shape every error
has (`ErrorBody`: `detail`, and `errors` on a 422), each with an example and its headers.

A route names the statuses it can answer besides those every route of its kind can:
`responses=errors(404, 409, described={409: "..."})`. `ProtectedRoute` adds the ones every
route with a key can answer (400, 401, 422, 503; 403 when it needs a role, 413 when it reads a
body, 415 when that body is JSON), and `openapi.describe` the `X-Request-ID` every answer carries.
"""

from collections.abc import Mapping
from typing import Any

from apps.wire.schemas import ErrorBody

_WHY: dict[int, str] = {
    400: "A malformed header, cursor or parameter: an unknown X-Timezone zone, a cursor this "
    "list did not issue, a Last-Event-ID that is not an event id.",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key's role may not do this; `detail` names the role needed.",
    404: "Nothing by that id or name.",
    409: "The request does not fit the current state; `detail` says what it is.",
    413: "The body is over the route's limit.",
    415: "A body that is not sent as JSON (`Content-Type: application/json`), or is sent "
    "compressed (any `Content-Encoding` but `identity`).",
    422: "The request is well-formed but invalid; `errors` lists every problem.",
    503: "The database or the artifact store did not answer; nothing was changed. Try again "
    "after `Retry-After` seconds.",
}

_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"detail": "X-Timezone 'Mars/Olympus' is not a known IANA time zone"},
    401: {"detail": "missing API key: send X-API-Key or Authorization: Bearer"},
    403: {"detail": "this needs the operator or admin role; the key 'ci' has the viewer role"},
    404: {"detail": "no run 0b5e2d4c-3f0e-4c39-9a55-d7d5b0f5c6a1"},
    409: {"detail": "the gate on node 'review' was approved by 'alice' at 2026-01-05T10:00:00Z"},
    413: {"detail": "the body is over this route's limit of 65,536 bytes"},
    415: {"detail": "the body must be JSON, sent with Content-Type: application/json"},
    422: {
        "detail": "body title: Field required",
        "errors": [{"loc": ["body", "title"], "msg": "Field required", "type": "missing"}],
    },
    503: {"detail": "the database is unavailable; try again shortly"},
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "How to authenticate: a bearer token (or the X-API-Key header).",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def error_response(
    status: int, description: str | None = None, example: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAPI response of one error status."""
    response: dict[str, Any] = {
        "model": ErrorBody,
        "description": description or _WHY[status],
        "content": {"application/json": {"example": example or _EXAMPLES[status]}},
    }
    if status in _HEADERS:
        response["headers"] = dict(_HEADERS[status])
    return response


def errors(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The responses of `statuses`, for a route's `responses=`; `described` words a status for
    this route (what its 409 means, say)."""
    described = described or {}
    return {status: error_response(status, described.get(status)) for status in statuses}


def located(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The success answer of a route that names what it made or acts on in `Location`."""
    location = {"description": description, "required": True, "schema": {"type": "string"}}
    return {status: {"headers": {"Location": location}}}
