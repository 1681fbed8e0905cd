"""Chromium for the console's browser tests: Debian's, driven by Playwright, never downloaded.

Without /usr/bin/chromium (or CHROMIUM_PATH) the browser tests skip with one line saying how to
run them; under REQUIRE_BROWSER (as in CI) they fail instead.
"""

import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from alembic import command
from tests.conftest import API_KEY, ROOT, alembic_config
from tests.console.proxy import path_stripping_proxy
from tests.servers import api_process, free_port

BROWSER_HELP = (
    "browser tests skipped: install Chromium to run them "
    "(apt-get install -y chromium chromium-driver, then make test)"
)


def chromium_path() -> Path:
    """Debian's Chromium, or a skip (a failure under REQUIRE_BROWSER)."""
    path = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    if path.exists():
        return path
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"REQUIRE_BROWSER is set but there is no Chromium at {path}")
    pytest.skip(BROWSER_HELP)


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshots_dir(fallback: Path) -> Path:
    """Where screenshots go: CONSOLE_SCREENSHOTS (docs/screenshots for the README), else a
    temporary directory."""
    chosen = os.environ.get("CONSOLE_SCREENSHOTS")
    directory = (ROOT / chosen) if chosen else fallback
    directory.mkdir(parents=True, exist_ok=True)
    return directory


SERVER_DEFAULTS = {"DEMO_LATENCY_MS": "50", "EVENT_POLL_SECONDS": "0.1"}


def migrated_sqlite(workdir: Path) -> str:
    url = f"sqlite+aiosqlite:///{workdir / 'console.db'}"
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one,
    # where the migrations' asyncio.run may not start another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, alembic_config(url), "head").result()
    return url


@contextmanager
def console_server(workdir: Path, **settings: str) -> Iterator[str]:
    """A migrated SQLite database and the app serving it (worker in-process); its base URL."""
    url = migrated_sqlite(workdir)
    port = free_port()
    with api_process(url, workdir, port, **(SERVER_DEFAULTS | settings)):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def console_behind_proxy(workdir: Path, prefix: str) -> Iterator[str]:
    """As `console_server`, but served with ROOT_PATH=<prefix> behind a proxy that takes the
    prefix off, as the README's nginx does; the proxy's base URL, prefix included."""
    url = migrated_sqlite(workdir)
    port = free_port()
    with (
        api_process(url, workdir, port, **SERVER_DEFAULTS, ROOT_PATH=prefix),
        path_stripping_proxy(prefix, port) as base_url,
    ):
        yield base_url


def api(base_url: str) -> httpx.Client:
    """An HTTP client of the served API with the admin key, for a test's setup and checks."""
    return httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=10)


def submit(base_url: str, title: str, spec: dict[str, Any]) -> str:
    with api(base_url) as client:
        response = client.post("/tasks", json={"title": title, "task_spec": spec})
        assert response.status_code == 202, response.text
        run_id: str = response.json()["id"]
        return run_id


def wait_for(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    pytest.fail("the condition did not hold in time")


def create_key(page: Page, base_url: str, name: str, role: str) -> str:
    """A new key made on the keys page by the admin signed in on `page`; its secret."""
    page.goto(f"{base_url}/ui/keys")
    page.fill('#key-form input[name="name"]', name)
    page.select_option('#key-form select[name="role"]', role)
    page.click('#key-form button[type="submit"]')
    expect(page.locator("#new-key")).to_be_visible()
    return page.locator("#new-key-value").inner_text()


def sign_in(page: Page, base_url: str, key: str = API_KEY) -> None:
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    page.fill('input[name="key"]', key)
    page.click('button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/ui/runs$"))
