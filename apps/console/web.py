"""What every console page shares: its templates, who is signed in, and its security headers."""

import json
import re
import sys
import unicodedata
import weakref
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from pydantic import BeforeValidator, StringConstraints
from starlette._utils import get_route_path
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.console.sessions import COOKIE, csrf_token, signed_in
from apps.core.errors import Forbidden
from apps.orchestrator.control.console_sessions import SessionOwner
from apps.orchestrator.model.models import KeyRole

PREFIX = "/ui"
# A page answers HEAD as it does GET (link checkers, monitors, `curl -I`): FastAPI, unlike
# Starlette, adds no HEAD to a GET route.
PAGE_METHODS = ["GET", "HEAD"]
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Where the API's `/api/v1` copy of every route keeps the root path a request came with before
# the prefix was added to it: the console is served there too, but its pages lead to its own.
ROOT_PATH_BEFORE_API_V1 = "crew.root_path_before_api_v1"

# Unicode's format characters (category Cf: bidi controls, zero-width ones), as timeline.js's
# `\p{Cf}` finds them.
_FORMAT_CHARACTERS = (
    chr(point) for point in range(sys.maxunicode + 1) if unicodedata.category(chr(point)) == "Cf"
)
FORMAT_CHARACTER = re.compile(f"[{''.join(map(re.escape, _FORMAT_CHARACTERS))}]")

# A page's form sends every field, the unused ones empty: an empty one filters nothing.
BLANK_IS_NONE = BeforeValidator(lambda value: value or None)
# A keyset cursor of a page's link: an empty one is the first page. Its length is a constraint of
# the text alone, or a blank one, None by then, would fail it with a 500.
Cursor = Annotated[Annotated[str, StringConstraints(max_length=512)] | None, BLANK_IS_NONE, Query()]


def _escaped(character: re.Match[str]) -> str:
    # As JSON escapes it: a `\u` and four hex digits per UTF-16 code unit (a surrogate pair past
    # U+FFFF).
    units = character.group().encode("utf-16-be")
    return "".join(f"\\u{units[i] << 8 | units[i + 1]:04x}" for i in range(0, len(units), 2))


def compact_json(value: Any) -> str:
    """`value` as the live timeline shows it (`JSON.stringify`): keys in their order, no spaces,
    characters as they are (the page escapes the text like any other), but for invisible format
    characters, written as escapes: a bidi override in a title would otherwise reverse the rest
    of the line, and a zero-width one hide a difference."""
    return FORMAT_CHARACTER.sub(
        _escaped, json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    )


def root_path(request: Request) -> str:
    """Where the app is served: "" at its host's root, or the prefix a proxy serves it under,
    which the server passes on as the ASGI root path (`uvicorn --root-path /crew`). Every URL
    the console writes starts with it. Under `/api/v1`, or a mount, it is the root path from
    before them, as in Starlette's `url_for`."""
    scope = request.scope
    app_root_path = scope.get("app_root_path", scope.get("root_path", ""))
    return str(scope.get(ROOT_PATH_BEFORE_API_V1, app_root_path))


# The paths of routes by name, their parameters left as markers, for each app. Starlette finds a
# route by trying each one in turn: with this app's routers some 0.2 ms a call, which a page of
# 50 runs, a link each, would pay 50 times.
_PATHS: "weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[str, ...]], str]]" = (
    weakref.WeakKeyDictionary()
)


def _marker(name: str) -> str:
    # No route's converter checks what it writes but `str`'s, which refuses only a "/".
    return f"\x00{name}\x00"


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """The path of the route `name` as a browser asks for it: under the root path."""
    paths = _PATHS.setdefault(request.app, {})
    key = (name, tuple(sorted(params)))
    path = paths.get(key)
    if path is None:
        markers = {param: _marker(param) for param in params}
        path = paths[key] = str(request.app.url_path_for(name, **markers))
    for param, value in params.items():
        path = path.replace(_marker(param), str(value))
    return root_path(request) + path


@pass_context
def _path_for_page(context: Context, name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


templates.env.filters["compact_json"] = compact_json
templates.env.globals["path_for"] = _path_for_page

_RANK = {KeyRole.VIEWER: 0, KeyRole.OPERATOR: 1, KeyRole.ADMIN: 2}

# No inline script or style anywhere: artifacts are LLM output, and this is what stops anything
# that got past the sanitiser from running. No framing (clickjacking of the decision buttons).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


async def refuse_nul(request: Request) -> None:
    """A 422 for a NUL in a page's address, as the API answers one: PostgreSQL refuses it in
    any text, so a page searching for it would be a 500."""
    sources = (("path", request.path_params.items()), ("query", request.query_params.multi_items()))
    for source, items in sources:
        for name, value in items:
            if "\x00" in name or "\x00" in str(value):
                message = "Text may not contain NUL characters (\\u0000)"
                problem = {"type": "string_nul", "loc": (source, name), "msg": message}
                raise RequestValidationError([problem | {"input": str(value)}])


def console_router() -> APIRouter:
    """A router of console pages under the prefix, kept out of the API's schema."""
    return APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(refuse_nul)])


class SignInNeeded(Exception):
    """A page asked for without a live session: answered with a redirect to the sign-in page,
    which leads back to `path` (the page's path within the app, without the root path)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def sign_in_redirect(request: Request, exc: Exception) -> Response:
    path = exc.path if isinstance(exc, SignInNeeded) else PREFIX + "/runs"
    sign_in = path_for(request, "sign_in_form")
    return RedirectResponse(f"{sign_in}?next={quote(path, safe='/')}", status_code=303)


def may_act_as(owner: SessionOwner, needed: KeyRole) -> bool:
    return _RANK[owner.role] >= _RANK[needed]


async def _signed_in_owner(request: Request) -> SessionOwner:
    owner = await signed_in(request)
    if owner is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise SignInNeeded(get_route_path(request.scope) + query)
    return owner


def _needs(role: KeyRole) -> Any:
    async def owner_with_role(owner: Annotated[SessionOwner, Depends(_signed_in_owner)]) -> Any:
        if not may_act_as(owner, role):
            raise Forbidden(f"this page needs the {role} role; you signed in as {owner.role}")
        return owner

    return owner_with_role


Viewer = Annotated[SessionOwner, Depends(_signed_in_owner)]
Operator = Annotated[SessionOwner, Depends(_needs(KeyRole.OPERATOR))]
Admin = Annotated[SessionOwner, Depends(_needs(KeyRole.ADMIN))]


def page(request: Request, template: str, owner: SessionOwner | None, **context: Any) -> Response:
    """`template` rendered for `owner`: the nav, their role's buttons, the session's CSRF token,
    and the root path the page's scripts put before every path they ask for."""
    token = request.cookies.get(COOKIE)
    shared = {
        "root_path": root_path(request),
        "owner": owner,
        "csrf": csrf_token(token) if token and owner else "",
        "can_operate": owner is not None and may_act_as(owner, KeyRole.OPERATOR),
        "is_admin": owner is not None and may_act_as(owner, KeyRole.ADMIN),
    }
    response = templates.TemplateResponse(request, template, shared | context)
    response.headers["Cache-Control"] = "no-store"
    return response


class SecurityHeaders:
    """Adds the console's headers to every answer under `/ui` and to `/`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = get_route_path(scope) if scope["type"] == "http" else ""
        if not (path == "/" or path.startswith(PREFIX)):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
