"""Console sessions through HTTP, on SQLite and PostgreSQL: the cookie, its expiry and
revocation, CSRF and same-origin checks, and the headers every console page carries."""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import update

from apps.api.revocations import REVOCATION_CHECK_SECONDS
from apps.core.database import SessionFactory, unit_of_work
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ConsoleSession, KeyRole, utcnow
from tests.asgi import http_get
from tests.conftest import API_KEY
from tests.factories import create_event, create_run

ORIGIN = "http://test"


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no key, keeping cookies, sending this site's Origin as a browser does."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN}
    ) as http:
        yield http


async def sign_in(client: httpx.AsyncClient, key: str = API_KEY) -> httpx.Response:
    return await client.post("/ui/sign-in", data={"key": key, "next": "/ui/gates"})


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = (await client.get("/ui/runs")).text
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


async def make_key(sessions: SessionFactory, name: str, role: KeyRole) -> str:
    async with unit_of_work(sessions) as session:
        return (await api_keys.create_key(session, name, role)).secret


async def test_root_opens_the_console_and_pages_need_a_session(browser: httpx.AsyncClient) -> None:
    home = await browser.get("/")
    assert (home.status_code, home.headers["location"]) == (307, "/ui/runs")
    page = await browser.get("/ui/runs/00000000-0000-0000-0000-000000000000?node=x")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/ui/sign-in?next=/ui/runs/")


async def test_signing_in_sets_a_strict_http_only_cookie_and_never_echoes_the_key(
    browser: httpx.AsyncClient,
) -> None:
    response = await sign_in(browser)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/gates")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would not be sent
    assert API_KEY not in cookie
    page = await browser.get("/ui/runs")
    assert page.status_code == 200 and API_KEY not in page.text
    assert (await browser.get("/runs")).status_code == 200  # the API answers the cookie too


async def test_over_https_the_cookie_is_secure(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    origin = "https://console.example"
    async with httpx.AsyncClient(
        transport=transport, base_url=origin, headers={"Origin": origin}
    ) as client:
        response = await sign_in(client)
    assert "Secure" in response.headers["set-cookie"]


async def test_a_wrong_key_or_a_foreign_origin_gets_no_session(browser: httpx.AsyncClient) -> None:
    wrong = await sign_in(browser, "crew_" + "x" * 40)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    foreign = await browser.post(
        "/ui/sign-in", data={"key": API_KEY}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers


async def test_a_next_elsewhere_is_not_followed(browser: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/runs", "/runs"):
        response = await browser.post("/ui/sign-in", data={"key": API_KEY, "next": target})
        assert response.headers["location"] == "/ui/runs"


async def test_a_change_needs_the_session_token_and_this_origin(
    browser: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
    await sign_in(browser)
    token = await csrf_of(browser)
    path = f"/runs/{run.id}/cancel"

    missing = await browser.post(path)
    assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
    wrong = await browser.post(path, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    foreign = await browser.post(
        path, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]
    by_referer = await browser.post(
        path, headers={"X-CSRF-Token": token, "Origin": "", "Referer": f"{ORIGIN}/ui/runs"}
    )
    assert by_referer.status_code == 202, by_referer.text


async def test_a_viewer_session_reads_but_may_not_act(
    browser: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
    await sign_in(browser, await make_key(sessions, "vera", KeyRole.VIEWER))
    token = await csrf_of(browser)
    page = await browser.get(f"/ui/runs/{run.id}")
    assert page.status_code == 200 and "<button" not in page.text.split("<main>")[1]
    forged = await browser.post(f"/runs/{run.id}/cancel", headers={"X-CSRF-Token": token})
    assert forged.status_code == 403
    assert (await browser.get("/ui/keys")).status_code == 403


async def test_revoking_the_key_ends_its_sessions_at_the_next_request(
    browser: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    await sign_in(browser, await make_key(sessions, "olga", KeyRole.OPERATOR))
    assert (await browser.get("/ui/runs")).status_code == 200
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "olga")
    assert (await browser.get("/ui/runs")).status_code == 303
    assert (await browser.get("/runs")).status_code == 401


async def test_an_expired_session_signs_in_again(
    browser: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    await sign_in(browser)
    async with unit_of_work(sessions) as session:
        await session.execute(update(ConsoleSession).values(expires_at=utcnow()))
    assert (await browser.get("/ui/runs")).status_code == 303


async def test_signing_out_ends_the_session(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    token = await csrf_of(browser)
    cookie = browser.cookies["crew_console"]
    refused = await browser.post("/ui/sign-out", data={"csrf_token": "nope"})
    assert refused.status_code == 403
    out = await browser.post("/ui/sign-out", data={"csrf_token": token})
    assert (out.status_code, out.headers["location"]) == (303, "/ui/sign-in")
    browser.cookies.set("crew_console", cookie)  # replayed after the sign-out
    assert (await browser.get("/runs")).status_code == 401


async def test_console_pages_carry_a_strict_policy(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    for path in ("/ui/sign-in", "/ui/runs", "/ui/gates", "/ui/static/run.js"):
        headers = (await browser.get(path)).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
    page = (await browser.get("/ui/runs")).text
    assert "<script>" not in page and " on" + "click=" not in page
    assert (await browser.get("/runs")).headers.get("x-frame-options") is None


@pytest.mark.parametrize("path", ["/events/stream", "/runs/{run_id}/events/stream"])
async def test_a_console_stream_ends_within_seconds_of_its_keys_revocation(
    app: FastAPI, browser: httpx.AsyncClient, sessions: SessionFactory, path: str
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        await create_event(session, run, type="run.started")
    await sign_in(browser, await make_key(sessions, "watcher", KeyRole.VIEWER))
    cookie = browser.cookies["crew_console"]
    feed = app.state.event_feed
    started: list[int] = []

    async def receive() -> dict[str, Any]:
        if not started:
            started.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the browser never hangs up
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        return None

    stream = asyncio.create_task(
        app(
            http_get(path.format(run_id=run.id), (b"cookie", f"crew_console={cookie}".encode())),
            receive,
            send,
        )
    )
    for _ in range(1000):
        if feed.subscriber_count == 1:
            break
        await asyncio.sleep(0.01)
    assert feed.subscriber_count == 1
    async with unit_of_work(sessions) as session:
        await api_keys.revoke_key(session, "watcher")
    revoked_at = asyncio.get_running_loop().time()

    await asyncio.wait_for(stream, REVOCATION_CHECK_SECONDS + 3)
    assert asyncio.get_running_loop().time() - revoked_at <= REVOCATION_CHECK_SECONDS + 1
    assert feed.subscriber_count == 0


async def test_the_settings_keys_sign_in_until_they_change(
    app: FastAPI, browser: httpx.AsyncClient
) -> None:
    """API_KEY and the Operator Console's admin token (ADMIN_TOKEN) are admin keys of the API,
    and so of the console; a session of either ends when either setting changes."""
    settings = app.state.settings
    app.state.settings = settings.model_copy(update={"admin_token": SecretStr("op-token")})
    try:
        signed_in = await sign_in(browser, "op-token")
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/ui/gates")
        page = await browser.get("/ui/keys")
        assert page.status_code == 200 and "admin-token" in page.text
        await sign_in(browser)  # API_KEY's session, in the same cookie
        assert (await browser.get("/ui/runs")).status_code == 200
        app.state.settings = settings.model_copy(update={"admin_token": SecretStr("rotated")})
        assert (await browser.get("/ui/runs")).status_code == 303
        assert (await sign_in(browser, "op-token")).status_code == 401
    finally:
        app.state.settings = settings
    await sign_in(browser)
    app.state.settings = settings.model_copy(update={"api_key": SecretStr("rotated")})
    try:
        assert (await browser.get("/ui/runs")).status_code == 303
    finally:
        app.state.settings = settings
