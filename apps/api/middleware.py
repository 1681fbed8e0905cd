"""Observability middleware, as plain ASGI callables wrapped around the whole app.

Plain ASGI (no `BaseHTTPMiddleware`) so a streamed response passes through chunk by chunk and the
request keeps one task and one context. `ObservedFastAPI` puts them outside FastAPI's own error
handling, so they see the 500 page of an unhandled error as the client does, and what they bind
(the request id) is still bound while that error is logged and reported.
"""

import abc
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.core.error_reporting import request_scope
from apps.core.logs import request_context
from apps.core.metrics import record_http_request

REQUEST_ID_HEADER = b"x-request-id"
# What we take from a caller: an id its own logs can join on, nothing that could forge a line.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ObservedFastAPI(FastAPI):
    """FastAPI whose `outer_middleware` wrap everything, its error handling included; the first
    listed is the outermost."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outer_middleware: list[Callable[[ASGIApp], ASGIApp]] = []

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for wrap in reversed(self.outer_middleware):
            app = wrap(app)
        return app


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is a sane one, else a new id."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class _HttpMiddleware(abc.ABC):
    """An ASGI middleware that acts on HTTP requests (`handle`) and passes anything else
    (lifespan, websockets) through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    @abc.abstractmethod
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""


class RequestContextMiddleware(_HttpMiddleware):
    """Gives every request an id, echoed in `X-Request-ID` and bound to its log lines and to
    the Sentry events it causes (in a Sentry scope of its own), with the run and node ids its
    path names."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        echoed = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        with request_context(request_id, scope), request_scope():
            await self.app(scope, receive, send_with_id)


class MetricsMiddleware(_HttpMiddleware):
    """Counts and times every request a route answered, under the route's template
    (`/runs/{run_id}`); a path no route matches makes no series."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            if route is not None:
                record_http_request(
                    scope["method"], route.path, status, time.perf_counter() - started
                )
