"""Chromium for the console's browser tests: Debian's, driven by Playwright, never downloaded.

Without /usr/bin/chromium (or CHROMIUM_PATH) the browser tests skip with one line saying how to
run them; under REQUIRE_BROWSER (as in CI) they fail instead.
"""

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import API_KEY, ROOT, alembic_config
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


@contextmanager
def console_server(workdir: Path, **settings: str) -> Iterator[str]:
    """A migrated SQLite database and the app serving it (worker in-process); its base URL."""
    url = f"sqlite+aiosqlite:///{workdir / 'console.db'}"
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one,
    # where the migrations' asyncio.run may not start another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, alembic_config(url), "head").result()
    port = free_port()
    defaults = {"DEMO_LATENCY_MS": "50", "EVENT_POLL_SECONDS": "0.1"}
    with api_process(url, workdir, port, **(defaults | settings)):
        yield f"http://127.0.0.1:{port}"


def sign_in(page: Page, base_url: str, key: str = API_KEY) -> None:
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    page.fill('input[name="key"]', key)
    page.click('button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/ui/runs$"))
