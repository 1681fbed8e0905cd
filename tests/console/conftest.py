"""Fixtures of the console's tests: a served app, Chromium, a place for screenshots."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.console.browser import BROWSER_HELP, chromium, console_server, screenshots_dir


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The app on a free port with its worker, on a database of the test's own."""
    with console_server(tmp_path) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshots_dir(tmp_path_factory.mktemp("screenshots"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say once, not per test, why the browser tests did not run and how to run them."""
    skipped = terminalreporter.stats.get("skipped", [])
    browser = [report for report in skipped if BROWSER_HELP in str(report.longrepr)]
    if browser:
        terminalreporter.write_line(f"{len(browser)} {BROWSER_HELP}", yellow=True)
