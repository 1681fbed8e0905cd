"""Signing in with a key, and out: the session cookie's whole life."""

import hmac
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Query, Request
from starlette.responses import RedirectResponse, Response

from apps.console import sessions
from apps.console.web import PAGE_METHODS, PREFIX, console_router, page, path_for, root_path
from apps.core.errors import PayloadTooLarge
from apps.orchestrator.control import api_keys, console_sessions
from apps.orchestrator.control.console_sessions import SessionOwner
from apps.orchestrator.model.models import KeyRole

router = console_router()

MAX_FORM_BYTES = 8 * 1024
_NEXT_DEFAULT = f"{PREFIX}/runs"


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path of this site only (no open redirect), within
    the app: the root path goes before it in the redirect, so it cannot lead out of it."""
    if target and target.startswith(PREFIX + "/") and "\\" not in target and "//" not in target:
        return target
    return _NEXT_DEFAULT


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the first value of each), refused past 8 KB."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"the form is over {MAX_FORM_BYTES:,} bytes")
    fields = parse_qs(bytes(body).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


async def _owner_of_key(request: Request, key: str) -> SessionOwner | None:
    # Every settings key is compared, in constant time, as the API's own authentication does.
    matched = [
        name
        for name, configured in sessions.settings_keys(request)
        if hmac.compare_digest(key.encode(), configured.encode())
    ]
    if matched:
        return SessionOwner(name=matched[0], role=KeyRole.ADMIN, key_id=None)
    async with request.app.state.engine.connect() as connection:
        found = await api_keys.find_active_key(connection, key)
    return None if found is None else SessionOwner(found.name, found.role, found.id)


def _cookie_path(request: Request) -> str:
    """The session's cookie goes with every request under the root path: the console's pages and
    the API's routes, which their scripts call."""
    return root_path(request) or "/"


def _sign_in_page(request: Request, next_path: str, error: str = "", status: int = 200) -> Response:
    response = page(request, "sign_in.html", None, next=next_path, error=error)
    response.status_code = status
    return response


@router.api_route("/sign-in", methods=PAGE_METHODS)
async def sign_in_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The sign-in form: paste a key."""
    return _sign_in_page(request, _safe_next(next_path))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Exchange a key for a session cookie; the key itself is never stored or sent back."""
    if not sessions.same_origin(request):
        return _sign_in_page(request, _NEXT_DEFAULT, "Sign in from this site's own page.", 403)
    form = await read_form(request)
    next_path = _safe_next(form.get("next"))
    owner = await _owner_of_key(request, form.get("key", "").strip())
    if owner is None:
        return _sign_in_page(request, next_path, "That key is unknown or revoked.", 401)
    async with request.app.state.engine.begin() as connection:
        token = await console_sessions.open_session(
            connection,
            owner,
            sessions.session_lifetime(request),
            sessions.settings_key_hash(request) if owner.key_id is None else None,
        )
    response = RedirectResponse(root_path(request) + next_path, status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=int(sessions.session_lifetime(request).total_seconds()),
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """End the session: its row is deleted and the cookie cleared."""
    form = await read_form(request)
    token = request.cookies.get(sessions.COOKIE)
    # A page left open past its cookie's expiry still has the button: with no session there is
    # nothing to end and nothing a forger could, so it only leads to the sign-in page.
    if token:
        sessions.check_not_forged(request, form.get(sessions.CSRF_FIELD))
        async with request.app.state.engine.begin() as connection:
            await console_sessions.end_session(connection, token)
    response = RedirectResponse(path_for(request, "sign_in_form"), status_code=303)
    response.delete_cookie(
        sessions.COOKIE, path=_cookie_path(request), httponly=True, samesite="strict"
    )
    return response
