"""The route class of every route that needs a key: the key, its role, then the body's size,
are checked before anything reads the body.

FastAPI reads a route's body before it solves the route's dependencies, so the key check of a
dependency came too late: a 200 MB body sent with no key was read in full before its 401. A
`ProtectedRoute` authenticates the caller first (the route's `authenticate` dependency then finds
the principal on the request), runs the route's role checks (a viewer's task is a 403 before its
16 MB are read), and lets the body be read only up to the route's
`max_body_size`: a declared length over it is a 413 before a byte is read, and a body without a
declared length is cut off with a 413 once it passes it. Routes declare their limit with
FastAPI's own `max_body_size`, which this class takes over: Starlette's limiter, which FastAPI
would install, answers a declared length over the limit in plain text instead of the JSON
every other error is. The limit and the 401 are stated in the OpenAPI document.
"""

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from apps.api.auth import Principal, authenticate_request
from apps.core.errors import PayloadTooLarge

# Of a route that takes a body and names no limit: a gate's rejection with its notes, say.
DEFAULT_MAX_BODY_SIZE = 64 * 1024

_DIGITS = re.compile(r"[0-9]+")
_UNAUTHORIZED = {"description": "No API key, or one that is unknown or revoked."}


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
        stated: dict[int | str, dict[str, Any]] = {401: _UNAUTHORIZED, **(responses or {})}
        super().__init__(path, endpoint, responses=stated, **kwargs)
        if self.takes_body:
            self.responses.setdefault(
                413, {"description": f"The body is over {self.body_limit:,} bytes."}
            )

    @property
    def takes_body(self) -> bool:
        """Whether the route reads a body: a declared one, or one its OpenAPI says it reads."""
        return self.body_field is not None or "requestBody" in (self.openapi_extra or {})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        limit, takes_body = self.body_limit, self.takes_body
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
            return await handle(Request(request.scope, _limited(request.receive, limit)))

        return checked_first


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
