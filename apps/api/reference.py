"""The API reference: Swagger UI at /docs and ReDoc at /redoc, the pages FastAPI draws, with every
script, style sheet and image they load served by the app itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, and ReDoc its fonts from Google: behind
a firewall, or with no network, they stay blank. The files come from the `fastapi-standalone-docs`
package (Swagger UI 5.33.1 and ReDoc 2.5.4 as their npm releases have them, ReDoc's logo asked of
the page's own host). Their URL names the package and its version, so a browser keeps them for a
year and fetches them again only after an upgrade.

The pages carry a Content-Security-Policy that allows what they load and nothing else, and may
not be framed: what Chromium needs to draw them is in tests/api/test_api_reference_browser.py.
"""

import base64
import hashlib
import os
import re
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import Scope

DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = f"{DOCS_URL}/oauth2-redirect"
REDOC_URL = "/redoc"
_PACKAGE = "fastapi-standalone-docs"
FILES_URL = f"{DOCS_URL}/static/{_PACKAGE}-{version(_PACKAGE)}"
_FILES = Path(str(files("fastapi_standalone_docs") / "static"))
# ReDoc asks for its logo beside the page (`location.pathname + "/logo-mini.svg"`).
_REDOC_LOGO = "logo-mini.svg"
_KEPT_A_YEAR = "public, max-age=31536000, immutable"
_KEPT_A_DAY = "public, max-age=86400"
# What the pages load, and nothing else: the app's files and document, data: icons, and the
# inline scripts FastAPI writes into them, each allowed by its hash (see `_guarded`).
_POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}
# ReDoc's styled-components write <style> elements as it draws, some as its script loads, before
# any nonce could reach them; its search runs in a worker made from a blob: URL.
_REDOC_POLICY = _POLICY | {"style-src": "'self' 'unsafe-inline'", "worker-src": "blob:"}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


class _VersionedFiles(StaticFiles):
    """Files under a URL that names their version: they never change there."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = _KEPT_A_YEAR
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _guarded(page: HTMLResponse, policy: dict[str, str] = _POLICY) -> HTMLResponse:
    """The page with a Content-Security-Policy that allows what it loads, and no framing.

    Its inline scripts are allowed by their hashes, taken from the page as written: they name
    the root path, so they differ from one prefix to another.
    """
    inline = _INLINE_SCRIPT.findall(bytes(page.body).decode())
    digests = (base64.b64encode(hashlib.sha256(script.encode()).digest()) for script in inline)
    scripts = [policy["script-src"], *(f"'sha256-{digest.decode()}'" for digest in digests)]
    directives = policy | {"script-src": " ".join(scripts)}
    page.headers["Content-Security-Policy"] = "; ".join(
        f"{name} {sources}" for name, sources in directives.items()
    )
    page.headers["X-Frame-Options"] = "DENY"
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def _served_at(request: Request) -> str:
    """The root path the page was asked under (a proxy's prefix, `/api/v1`), as FastAPI's own
    pages take it: the document and files are fetched under it too."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = _served_at(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{FILES_URL}/swagger/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{FILES_URL}/swagger/swagger-ui.css",
        swagger_favicon_url=f"{root}{FILES_URL}/fastapi/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    return _guarded(page)


async def _oauth2_redirect(request: Request) -> HTMLResponse:
    return _guarded(get_swagger_ui_oauth2_redirect_html())


async def _redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = _served_at(request)
    page = get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{FILES_URL}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{FILES_URL}/fastapi/favicon.png",
        with_google_fonts=False,
    )
    return _guarded(page, _REDOC_POLICY)


async def _redoc_logo(request: Request) -> FileResponse:
    headers = {"Cache-Control": _KEPT_A_DAY, "X-Content-Type-Options": "nosniff"}
    return FileResponse(_FILES / "redoc" / _REDOC_LOGO, headers=headers)


def serve_api_reference(app: FastAPI) -> None:
    """/docs (with /docs/oauth2-redirect) and /redoc as FastAPI serves them, no key needed, and
    the files they load; for an app created with `docs_url=None, redoc_url=None`."""
    app.add_route(DOCS_URL, _swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, _oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, _redoc, include_in_schema=False)
    app.add_route(f"{REDOC_URL}/{_REDOC_LOGO}", _redoc_logo, include_in_schema=False)
    app.mount(FILES_URL, _VersionedFiles(directory=_FILES), name="api-reference-files")
