"""The route class of every route that needs a key: the key, its role, then the body's size,
are checked before anything reads the body.

FastAPI reads a route's body before it solves the route's dependencies, so the key check of a
dependency came too late: a 200 MB body sent with no key was read in full before its 401. A
`ProtectedRoute` authenticates the caller first (the route's `authenticate` dependency then finds
the principal on the request), runs the route's role checks (a viewer's task is a 403 before its
16 MB are read), and lets the body be read only up to the route's
`max_body_size`: a declared length over it is a 413 before a byte is read, and a body without a
declared length is cut off with a 413 once it passes it. A body a route reads as JSON must say
so (`Content-Type: application/json` or `+json`), uncompressed: FastAPI would skip any other and
hand the route no body, which for a route whose body is optional (an approval) drops the notes
and patch the caller sent, so it is a 415 instead. Routes declare their limit with
FastAPI's own `max_body_size`, which this class takes over: Starlette's limiter, which FastAPI
would install, answers a declared length over the limit in plain text instead of the JSON
every other error is. The limit, the 401, the 403 of a route that needs a role, and the other
errors every such route can answer are stated in the OpenAPI document.
"""

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from apps.api.auth import Principal, authenticate_request, forbidden_below
from apps.api.responses import error_response, errors
from apps.core.errors import PayloadTooLarge, UnsupportedMediaType
from apps.wire.statuses import KeyRole

# Of a route that takes a body and names no limit: a gate's rejection with its notes, say.
DEFAULT_MAX_BODY_SIZE = 64 * 1024

_DIGITS = re.compile(r"[0-9]+")
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)


def _too_large(limit: int) -> str:
    return f"the body is over this route's limit of {limit:,} bytes"


class ProtectedRoute(APIRoute):
    """A route that needs a key, whose body is read after the key is checked, up to its limit."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        max_body_size: int | None = None,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.body_limit = max_body_size or DEFAULT_MAX_BODY_SIZE
        # What any route with a key can answer: a bad header or parameter, no key, a database
        # that does not answer.
        stated = {**errors(400, 401, 422, 503), **(responses or {})}
        super().__init__(path, endpoint, responses=stated, **kwargs)
        needed = [check.needed_role for check in _role_checks(self.dependant)]  # type: ignore[attr-defined]
        if needed:
            # KeyRole lists the roles from the least to the most allowed.
            highest = max(needed, key=list(KeyRole).index)
            self.responses.setdefault(403, forbidden_below(highest)[403])
        if self.takes_body:
            too_large = {"detail": _too_large(self.body_limit)}
            self.responses.setdefault(
                413,
                error_response(413, f"The body is over {self.body_limit:,} bytes.", too_large),
            )
        if self.reads_json:
            self.responses.setdefault(415, error_response(415))

    @property
    def takes_body(self) -> bool:
        """Whether the route reads a body: a declared one, or one its OpenAPI says it reads."""
        return self.body_field is not None or "requestBody" in (self.openapi_extra or {})

    @property
    def reads_json(self) -> bool:
        """Whether FastAPI parses the route's body as JSON (a declared body that is not a form)."""
        return self.body_field is not None and not _is_form(self.body_field)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        limit, takes_body, reads_json = self.body_limit, self.takes_body, self.reads_json
        role_checks = _role_checks(self.dependant)

        async def checked_first(request: Request) -> Response:
            caller = await authenticate_request(request)
            for check in role_checks:
                await check(caller)
            if not takes_body:
                return await handle(request)
            declared = request.headers.get("content-length", "")
            if _DIGITS.fullmatch(declared) and int(declared) > limit:
                raise PayloadTooLarge(_too_large(limit))
            if reads_json and _has_body(request):
                _check_json_body(request)
            return await handle(Request(request.scope, _limited(request.receive, limit)))

        return checked_first


def _check_json_body(request: Request) -> None:
    if not _is_json(request):
        raise UnsupportedMediaType(
            "the body must be JSON, sent with Content-Type: application/json"
        )
    # Nothing here decodes a compressed body: read as it came, a gzip body was a 400 that
    # blamed its JSON (RFC 9110, 15.5.16: an unsupported coding is a 415).
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"the body must be sent uncompressed: Content-Encoding {coding!r} is not accepted"
        )


def _has_body(request: Request) -> bool:
    declared = request.headers.get("content-length")
    if declared is not None:
        return declared.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip()
    return _JSON_MEDIA_TYPE.fullmatch(media_type) is not None


def _is_form(body_field: Any) -> bool:
    return isinstance(getattr(body_field, "field_info", None), params.Form)


def _role_checks(dependant: Dependant) -> list[Callable[[Principal], Awaitable[Principal]]]:
    """The role checks (`auth.require_role`) among the route's dependencies, at any depth."""
    checks: list[Callable[[Principal], Awaitable[Principal]]] = []
    for dependency in dependant.dependencies:
        if dependency.call is not None and hasattr(dependency.call, "needed_role"):
            checks.append(dependency.call)
        checks.extend(_role_checks(dependency))
    return checks


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing with a 413 the message that takes the body past `limit` bytes."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # An HTTPException: FastAPI turns any other error raised while it reads a body
                # into a 400.
                raise HTTPException(413, _too_large(limit))
        return message

    return receive_within_limit
