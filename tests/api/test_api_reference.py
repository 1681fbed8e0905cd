"""The API reference (/docs, /redoc) through HTTP: each page names no other host, and the app
serves every file it loads, with its media type, at the root, under /api/v1 and behind a proxy's
prefix. In Chromium: tests/api/test_api_reference_browser.py."""

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from apps.api.app import create_app
from apps.api.reference import FILES_URL
from tests.conftest import settings_for

ORIGIN = "http://test"
PAGES = ("/docs", "/redoc")
# What a browser is told to fetch by the pages' scripts: Swagger UI's document and sign-in page.
_SCRIPT_URL = re.compile(r"url: '([^']*)'|oauth2RedirectUrl: window\.location\.origin \+ '([^']*)'")
# Any URL with a host in it: `http://h/`, `https://h/` or `//h/`.
_HOST = re.compile(r"(?:https?:)?//[^\s'\"<>]+")
_MEDIA_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
    ".svg": {"image/svg+xml"},
    ".json": {"application/json"},
    "": {"text/html"},  # Swagger UI's OAuth2 sign-in page, /docs/oauth2-redirect
}


class _Urls(HTMLParser):
    """The URLs a page's tags make a browser fetch: `href`, `src` and ReDoc's `spec-url`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src", "spec-url") and v is not None]


def _urls(page: str) -> list[str]:
    parser = _Urls()
    parser.feed(page)
    scripted = [url for match in _SCRIPT_URL.findall(page) for url in match if url]
    return parser.urls + scripted


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """The app as served, without its lifespan: the reference reads no database."""
    return create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path))


@pytest.fixture(
    params=[("", ""), ("", "/api/v1"), ("/crew", "")],
    ids=["at-the-root", "under-api-v1", "behind-a-proxy-prefix"],
)
def where(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(the root path uvicorn is given, the path prefix under it)"""
    return tuple(request.param)


@pytest.fixture
async def browser(app: FastAPI, where: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    root_path, _ = where
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url=f"{ORIGIN}{root_path}") as http:
        yield http


async def test_every_file_the_pages_load_is_served_by_the_app(
    browser: httpx.AsyncClient, where: tuple[str, str]
) -> None:
    root_path, prefix = where
    here = root_path + prefix
    seen: set[str] = set()
    for page in PAGES:
        answer = await browser.get(f"{prefix}{page}")
        assert answer.status_code == 200, page
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert _HOST.findall(answer.text) == [], page
        urls = _urls(answer.text)
        assert len(urls) >= 3, (page, urls)  # the document, the script, the icon
        outside = [url for url in urls if not url.startswith(f"{here}/")]
        assert outside == [], page
        seen.update(urls)
    assert f"{here}/openapi.json" in seen
    # ReDoc asks for its logo beside the page.
    seen.add(f"{here}/redoc/logo-mini.svg")
    for url in sorted(seen):
        answer = await browser.get(url.removeprefix(root_path))
        assert answer.status_code == 200, url
        media_type = answer.headers["content-type"].split(";")[0]
        assert media_type in _MEDIA_TYPES[Path(url).suffix], url


async def test_the_files_are_kept_by_browsers_until_the_version_in_their_url_changes(
    app: FastAPI,
) -> None:
    assert re.fullmatch(r"/docs/static/fastapi-standalone-docs-\d+\.\d+\.\d+", FILES_URL)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as http:
        script = f"{FILES_URL}/swagger/swagger-ui-bundle.js"
        first = await http.get(script)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert first.headers["x-content-type-options"] == "nosniff"
        again = await http.get(script, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.headers["cache-control"] == first.headers["cache-control"]
        # The logo's URL, beside the page, names no version: kept a day.
        logo = await http.get("/redoc/logo-mini.svg")
        assert logo.headers["cache-control"] == "public, max-age=86400"


async def test_the_pages_allow_only_what_they_load_and_no_framing(
    browser: httpx.AsyncClient, where: tuple[str, str]
) -> None:
    _, prefix = where
    for page in (*PAGES, "/docs/oauth2-redirect"):
        answer = await browser.get(f"{prefix}{page}")
        policy = _directives(answer.headers["content-security-policy"])
        assert policy["default-src"] == ["'none'"], page
        assert policy["frame-ancestors"] == ["'none'"], page
        assert policy["base-uri"] == ["'none'"], page
        assert answer.headers["x-frame-options"] == "DENY", page
        assert answer.headers["x-content-type-options"] == "nosniff", page
        # Scripts come from the app, and an inline one only by the hash of what the page holds.
        scripts = policy["script-src"]
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, page
        assert set(scripts) - {"'self'"} == _inline_script_hashes(answer.text), page
        # No host anywhere: icons may be data: URLs, and ReDoc's search worker a blob: one.
        named = {(name, s) for name, sources in policy.items() for s in sources if s[0] != "'"}
        assert named <= {("img-src", "data:"), ("worker-src", "blob:")}, page


def _directives(policy: str) -> dict[str, list[str]]:
    pairs = (directive.strip().split(" ", 1) for directive in policy.split(";"))
    return {name: sources.split() for name, sources in pairs}


def _inline_script_hashes(page: str) -> set[str]:
    """CSP's `'sha256-…'` source for each inline script of the page."""
    bodies = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(body.encode()).digest()) for body in bodies)
    return {f"'sha256-{digest.decode()}'" for digest in digests}
