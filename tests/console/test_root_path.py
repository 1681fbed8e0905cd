"""The console behind a proxy that serves the app under a prefix (nginx's `location /crew/` with
`uvicorn --root-path /crew`), through HTTP: its links, forms, redirects and session cookie stay
under the prefix, as they stay at the host's root without one."""

import html
import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import FastAPI

from apps.console.rendering import MAX_RENDERED_BYTES
from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.models import Gate
from apps.orchestrator.model.states import NodeStatus
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from tests.conftest import API_KEY
from tests.factories import create_artifact, create_event, create_node, create_run

ORIGIN = "http://test"
PREFIX = "/crew"
# What the pages write where a browser goes or fetches from: links, forms, scripts, styles.
_URL = re.compile(r'\s(?:href|src|action)="([^"]*)"')
_ROOT_PATH = re.compile(r'<meta name="root-path" content="([^"]*)">')
_CSRF = re.compile(r'name="csrf-token" content="([0-9a-f]+)"')


@pytest.fixture(params=["", PREFIX], ids=["at-the-root", "under-a-prefix"])
def prefix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _behind(app: FastAPI, prefix: str) -> httpx.AsyncClient:
    """A browser whose requests reach the app as uvicorn started with `--root-path <prefix>`
    passes on what a path-stripping proxy forwards: the prefix in the path and as root path."""
    transport = httpx.ASGITransport(app=app, root_path=prefix)
    return httpx.AsyncClient(
        transport=transport, base_url=f"{ORIGIN}{prefix}", headers={"Origin": ORIGIN}
    )


@pytest.fixture
async def browser(app: FastAPI, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _behind(app, prefix) as http:
        yield http


async def _sign_in(client: httpx.AsyncClient, path: str = "/ui/sign-in") -> httpx.Response:
    response = await client.post(path, data={"key": API_KEY, "next": "/ui/gates"})
    assert response.status_code == 303, response.text
    return response


def _cookie_path(response: httpx.Response) -> str:
    cookie = SimpleCookie(response.headers["set-cookie"])
    return str(cookie["crew_console"]["path"])


def _urls(page: str) -> list[str]:
    return [html.unescape(url) for url in _URL.findall(page)]


async def test_the_root_and_a_page_without_a_session_redirect_under_the_prefix(
    browser: httpx.AsyncClient, prefix: str
) -> None:
    home = await browser.get("/")
    assert (home.status_code, home.headers["location"]) == (307, f"{prefix}/ui/runs")
    bare = await browser.get("/ui", follow_redirects=True)
    assert bare.url.path == f"{prefix}/ui/sign-in"
    page = await browser.get("/ui/runs", params={"q": "x"})
    assert page.status_code == 303
    # `next` is the page within the app: signing in puts the prefix before it.
    assert page.headers["location"] == f"{prefix}/ui/sign-in?next=/ui/runs%3Fq%3Dx"
    form = (await browser.get(page.headers["location"].removeprefix(prefix))).text
    assert f'<form method="post" action="{prefix}/ui/sign-in"' in form
    assert '<input type="hidden" name="next" value="/ui/runs?q=x">' in form
    assert _ROOT_PATH.findall(form) == [prefix]
    assert all(url.startswith(f"{prefix}/ui/") for url in _urls(form))


async def test_the_session_cookie_covers_the_prefix_from_sign_in_to_sign_out(
    browser: httpx.AsyncClient, prefix: str
) -> None:
    signed_in = await _sign_in(browser)
    assert signed_in.headers["location"] == f"{prefix}/ui/gates"
    assert _cookie_path(signed_in) == (prefix or "/")
    # Sent with the pages and with the API routes their scripts call, all under the prefix.
    assert (await browser.get("/ui/runs")).status_code == 200
    assert (await browser.get("/runs", headers={"Accept": "application/json"})).status_code == 200

    page = (await browser.get("/ui/runs")).text
    assert f'<form class="who" method="post" action="{prefix}/ui/sign-out">' in page
    token = _CSRF.search(page)
    assert token
    out = await browser.post("/ui/sign-out", data={"csrf_token": token.group(1)})
    assert (out.status_code, out.headers["location"]) == (303, f"{prefix}/ui/sign-in")
    assert _cookie_path(out) == (prefix or "/") and "Max-Age=0" in out.headers["set-cookie"]
    assert not browser.cookies
    assert (await browser.get("/ui/runs")).status_code == 303


async def test_every_address_a_page_writes_is_under_the_prefix_and_answers(
    browser: httpx.AsyncClient, sessions: SessionFactory, settings: Settings, prefix: str
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, title="Behind the proxy")
        node = await create_node(session, run, status=NodeStatus.WAITING_APPROVAL)
        big = await create_artifact(
            session, node, settings.artifacts_dir, content=b"x" * (MAX_RENDERED_BYTES + 1)
        )
        session.add(Gate(run_id=run.id, node_id=node.id, artifact_id=big.id))
        for _ in range(200):  # a full timeline links to every event as JSON
            await create_event(session, run, type="node.ready", node_id=node.id)
    await _sign_in(browser)
    token = _CSRF.findall((await browser.get("/ui/keys")).text)
    for number in range(DEFAULT_LIMIT + 1):  # a second page of keys
        made = await browser.post(
            "/ui/keys",
            json={"name": f"bot-{number:02}", "role": "viewer"},
            headers={"X-CSRF-Token": token[0]},
        )
        assert made.status_code == 201, made.text

    pages = [
        "/ui/runs",
        f"/ui/runs/{run.id}?node={node.id}",
        f"/ui/runs/{run.id}/nodes/{node.id}/panel",
        "/ui/gates",
        "/ui/tasks/new",
        "/ui/settings",
        "/ui/keys",
        f"/ui/runs/{node.id}",  # not a run: the error page
    ]
    seen = set()
    for path in pages:
        answer = await browser.get(path, headers={"Accept": "text/html"})
        assert answer.status_code in (200, 404), (path, answer.text)
        urls = _urls(answer.text)
        outside = [url for url in urls if not url.startswith(f"{prefix}/")]
        assert urls and not outside, (path, outside)
        if "/panel" not in path:
            assert _ROOT_PATH.findall(answer.text) == [prefix]
        seen.update(urls)
    for url in seen - {f"{prefix}/ui/sign-out"}:
        answer = await browser.get(f"{ORIGIN}{url}", headers={"Accept": "text/html"})
        assert answer.status_code == 200, (url, answer.text)
    # Links of every kind were checked: to a run, a large artifact, the events, a page of keys.
    kinds = ("/ui/runs/", "/artifacts/", "/events?run_id=", "/ui/keys?cursor=", "/ui/static/")
    assert all(any(url.startswith(prefix + kind) for url in seen) for kind in kinds)


async def test_under_api_v1_the_console_leads_to_its_pages_at_the_app_root(
    browser: httpx.AsyncClient, prefix: str
) -> None:
    """/api/v1 serves the console too, as every route; its redirects, links and cookie are
    those of the console at the app's root (behind the proxy, under its prefix)."""
    home = await browser.get("/api/v1/")
    assert (home.status_code, home.headers["location"]) == (307, f"{prefix}/ui/runs")
    page = await browser.get("/api/v1/ui/runs")
    assert page.headers["location"] == f"{prefix}/ui/sign-in?next=/ui/runs"

    signed_in = await _sign_in(browser, "/api/v1/ui/sign-in")
    assert signed_in.headers["location"] == f"{prefix}/ui/gates"
    assert _cookie_path(signed_in) == (prefix or "/")
    runs = (await browser.get("/api/v1/ui/runs")).text
    assert _ROOT_PATH.findall(runs) == [prefix]
    assert f'<a href="{prefix}/ui/gates">Gates</a>' in runs
    assert all(url.startswith(f"{prefix}/ui/") for url in _urls(runs))
