"""The console's session cookie, and the checks a request made with it must pass.

Signing in exchanges a key for a random token in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS); only its hash is stored (`control.console_sessions`). A request that changes something
with the cookie must also carry the session's CSRF token in `X-CSRF-Token` (or the `csrf_token`
form field) and come from this origin (`Origin`, else `Referer`): SameSite alone leaves older
browsers and same-site subdomains open.
"""

import hashlib
import hmac
from datetime import timedelta

from starlette.requests import Request

from apps.core.errors import Forbidden
from apps.orchestrator.control import api_keys, console_sessions
from apps.orchestrator.control.console_sessions import SessionOwner
from apps.orchestrator.model.models import utcnow

COOKIE = "crew_console"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_SESSION = object()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret token, so nothing more is stored."""
    return hmac.new(session_token.encode(), b"csrf", hashlib.sha256).hexdigest()


def settings_keys(request: Request) -> list[tuple[str, str]]:
    """The admin keys the settings hold, by the name a session of each acts as: API_KEY, and
    the Operator Console's admin token (ADMIN_TOKEN, or the variable ADMIN_TOKEN_ENV names)."""
    settings = request.app.state.settings
    named = (
        (api_keys.ENV_KEY_NAME, settings.api_key),
        (api_keys.ADMIN_TOKEN_NAME, settings.admin_token),
    )
    return [(name, key.get_secret_value()) for name, key in named if key is not None]


def settings_key_hash(request: Request) -> str | None:
    """What a session of a settings key is bound to: the hash of the keys the settings hold (of
    API_KEY alone when it is the only one), so that it ends when either of them changes."""
    keys = [key for _, key in settings_keys(request)]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest() if keys else None


def session_lifetime(request: Request) -> timedelta:
    return timedelta(hours=request.app.state.settings.console_session_hours)


async def signed_in(request: Request) -> SessionOwner | None:
    """Who the request's session cookie signs in, or None; looked up once per request."""
    cached = getattr(request.state, "console_owner", _NO_SESSION)
    if cached is not _NO_SESSION:
        return cached  # type: ignore[return-value]
    owner = None
    token = request.cookies.get(COOKIE)
    if token:
        async with request.app.state.engine.connect() as connection:
            owner = await console_sessions.find_session(
                connection, token, settings_key_hash(request), utcnow()
            )
    request.state.console_owner = owner
    return owner


def same_origin(request: Request) -> bool:
    """Whether `Origin` (or, without it, `Referer`) names this server's own origin."""
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin") or None
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer", "")
    return referer == own or referer.startswith(own + "/")


def check_not_forged(request: Request, form_token: str | None = None) -> None:
    """403 unless a cookie-authenticated request that changes something is from this origin and
    carries the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise Forbidden("cross-origin request refused: the console's forms post from its origin")
    token = request.cookies.get(COOKIE, "")
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not token or not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
