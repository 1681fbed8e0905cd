"""In Chromium, behind a proxy that serves the app under /crew (nginx's `location /crew/` in
front of the API served with ROOT_PATH=/crew): sign in, a task from the form, the runs page and
a run's DAG live, a gate approved, sign out; every request the browser makes stays under the
prefix."""

import json
import re
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.conftest import API_KEY
from tests.console.browser import api, console_behind_proxy, wait_for

PREFIX = "/crew"
GATED_NODES = [
    {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": {}},
    {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
]


def test_the_console_works_behind_a_proxy_under_a_prefix(browser: Browser, tmp_path: Path) -> None:
    with console_behind_proxy(tmp_path, PREFIX) as base:
        context = browser.new_context()
        requested: list[str] = []
        errors: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        # A script error or a Content-Security-Policy violation shows in the console as an error.
        context.on("weberror", lambda error: errors.append(str(error.error)))
        context.on(
            "console", lambda message: message.type == "error" and errors.append(message.text)
        )
        watcher = context.new_page()

        watcher.goto(f"{base}/")
        expect(watcher).to_have_url(f"{base}/ui/sign-in?next=/ui/runs")
        watcher.fill('input[name="key"]', API_KEY)
        watcher.click('button[type="submit"]')
        expect(watcher).to_have_url(f"{base}/ui/runs")
        cookie = next(c for c in context.cookies() if c["name"] == "crew_console")
        assert cookie["path"] == PREFIX
        expect(watcher.locator("#runs tbody tr.empty")).to_be_visible()

        form = context.new_page()
        form.goto(f"{base}/ui/runs")
        form.click("nav >> text=New task")
        expect(form).to_have_url(f"{base}/ui/tasks/new")
        form.fill('input[name="title"]', "Behind the proxy")
        form.select_option('select[name="type"]', "dag")
        form.fill('textarea[name="nodes"]', json.dumps(GATED_NODES))
        form.click('#task-form button[type="submit"]')
        expect(form).to_have_url(re.compile(rf"^{re.escape(base)}/ui/runs/[0-9a-f-]{{36}}$"))
        run_id = form.url.rsplit("/", 1)[1]

        # The runs page heard of the run live, and links to it under the prefix.
        row = watcher.locator("#runs tbody tr", has_text="Behind the proxy")
        expect(row.locator(".status")).to_have_text("waiting", timeout=20_000)
        row.locator("a").click()
        expect(watcher).to_have_url(f"{base}/ui/runs/{run_id}")
        draft = watcher.locator('#dag g.node[data-key="draft"]')
        expect(draft).to_have_class(re.compile(r"\bs-waiting_approval\b"))
        expect(watcher.locator("#run")).to_have_attribute("data-stream", "live")

        form.click("nav >> text=Gates")
        expect(form).to_have_url(f"{base}/ui/gates")
        gate = form.locator("li.gate", has_text="Behind the proxy")
        gate.locator('button[data-action="approve"]').click()
        expect(gate.locator(".outcome")).to_have_text("Approved.")

        # The run page follows the run to its end over its event stream.
        expect(watcher.locator("#dag g.node.s-succeeded")).to_have_count(2, timeout=20_000)
        expect(watcher.locator("#run-status .status")).to_have_text("succeeded")
        watcher.locator('#dag g.node[data-key="final"]').click()
        expect(watcher.locator("#panel .artifact")).to_have_count(1)
        expect(watcher).to_have_url(re.compile(r"\?node="))
        with api(base) as client:
            wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded")

        watcher.click("text=Sign out")
        expect(watcher).to_have_url(f"{base}/ui/sign-in")
        assert not [c for c in context.cookies() if c["name"] == "crew_console"]
        context.close()

    outside = [url for url in requested if not url.startswith(f"{base}/")]
    assert outside == []
    assert errors == []
