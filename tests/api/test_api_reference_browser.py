"""The API reference in Chromium, served by a real server with no network: Swagger UI lists the
operations and tries one out, and ReDoc draws the API and searches it, at the root, under /api/v1
and behind a proxy's prefix, under the pages' Content-Security-Policy with nothing refused, and
no request the browser makes leaves the app's host."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.console.browser import chromium, console_behind_proxy, console_server

# Time for the whole document to be drawn, on a slow machine too.
DRAWN_MS = 30_000
# A refusal by the Content-Security-Policy, as an error on the console (Chromium logs one too,
# but not for every kind of refusal).
_REPORT_REFUSALS = """
document.addEventListener("securitypolicyviolation", (event) => console.error(
    `refused by the CSP: ${event.effectiveDirective} ${event.blockedURI}`));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class _Visit:
    """A browser context that records every request and error, and lets no request reach
    another host (it would fail anyway on a machine with no network)."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context: BrowserContext = browser.new_context()
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda request: self.requested.append(request.url))
        self.context.on("weberror", lambda error: self.errors.append(str(error.error)))
        self.context.on(
            "console", lambda message: message.type == "error" and self.errors.append(message.text)
        )
        self.context.route(lambda url: not url.startswith(f"{base}/"), self._refuse)
        self.context.add_init_script(_REPORT_REFUSALS)

    @staticmethod
    def _refuse(route: Route) -> None:
        route.abort("addressunreachable")

    def page(self, url: str) -> Page:
        page = self.context.new_page()
        answer = page.goto(url)
        assert answer is not None
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        return page


def _check_swagger_ui(visit: _Visit, url: str) -> None:
    page = visit.page(url)
    operation = page.locator('.opblock-post [data-path="/tasks"]')
    expect(operation).to_have_count(1, timeout=DRAWN_MS)
    expect(operation).to_be_visible()
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Crew Orchestrator")
    # Tried out: the request goes to the app, and its answer is shown.
    health = page.locator('.opblock-get:has([data-path="/health"])').first
    health.locator(".opblock-summary").click()
    health.locator("button.try-out__btn").click()
    health.locator("button.execute").click()
    status = health.locator(".live-responses-table tbody .response-col_status")
    expect(status).to_have_text("200", timeout=DRAWN_MS)


def _check_redoc(visit: _Visit, url: str) -> None:
    page = visit.page(url)
    expect(page.locator("h1")).to_contain_text("Crew Orchestrator", timeout=DRAWN_MS)
    post_tasks = page.locator('a[href="#tag/tasks/operation/submit_task_tasks_post"]')
    expect(page.locator("h2", has=post_tasks)).to_have_text("Submit Task")
    # Its logo came from the app: a failed one is taken out of the page.
    expect(page.locator('img[alt="redocly logo"]')).to_be_visible()
    # Its search runs in a worker of its own.
    page.fill('input[aria-label="Search"]', "gate")
    expect(page.locator('[data-role="search:results"] li').first).to_be_visible()


def _check_the_reference(browser: Browser, base: str, prefixes: tuple[str, ...]) -> None:
    visit = _Visit(browser, base)
    for prefix in prefixes:
        _check_swagger_ui(visit, f"{base}{prefix}/docs")
        _check_redoc(visit, f"{base}{prefix}/redoc")
    visit.context.close()
    outside = [url for url in visit.requested if not url.startswith(f"{base}/")]
    assert outside == []
    assert visit.errors == []
    assert any("/docs/static/" in url for url in visit.requested)


def test_the_reference_is_drawn_with_no_file_from_elsewhere(
    browser: Browser, tmp_path: Path
) -> None:
    with console_server(tmp_path) as base:
        _check_the_reference(browser, base, ("", "/api/v1"))


def test_the_reference_is_drawn_behind_a_proxy_under_a_prefix(
    browser: Browser, tmp_path: Path
) -> None:
    with console_behind_proxy(tmp_path, "/crew") as base:
        _check_the_reference(browser, base, ("",))
