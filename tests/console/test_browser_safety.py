"""In Chromium: what a viewer may not do, artifacts that try to run script, and a dropped
connection that loses no event."""

import re
import sqlite3
import time
import uuid
from pathlib import Path

from playwright.sync_api import Browser, Route, expect

from tests.console.browser import (
    SERVER_DEFAULTS,
    api,
    create_key,
    migrated_sqlite,
    sign_in,
    submit,
    wait_for,
)
from tests.servers import api_process, free_port, worker_process

XSS_DAG = {
    "type": "dag",
    "nodes": [
        {"key": "script", "role": "writer", "prompt": "<script>window.pwned = 1</script>"},
        {
            "key": "image",
            "role": "writer",
            "prompt": '<img src="x" onerror="window.pwned = 2">',
        },
        {"key": "link", "role": "writer", "prompt": "[click me](javascript:window.pwned=3)"},
        {
            "key": "assembled",
            "role": "assembler",
            "prompt": "Put them together.",
            "deps": ["script", "image", "link"],
        },
    ],
}


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_403(
    browser: Browser, server: str, screenshots: Path
) -> None:
    run_id = submit(server, "Read only", {"type": "demo"})
    admin = browser.new_context().new_page()
    sign_in(admin, server)
    viewer_key = create_key(admin, server, "vera", "viewer")
    admin.screenshot(path=screenshots / "keys.png", full_page=True)
    admin.goto(f"{server}/ui/settings")
    admin.fill('#validate-form textarea[name="document"]', "gates:\n  writer:\n    required: 7\n")
    admin.click('#validate-form button[type="submit"]')
    expect(admin.locator("#validate-result")).to_contain_text("gates.writer.required")
    admin.screenshot(path=screenshots / "settings.png", full_page=True)
    viewer = browser.new_context().new_page()
    sign_in(viewer, server, viewer_key)

    viewer.goto(f"{server}/ui/runs/{run_id}")
    expect(viewer.locator("#dag g.node")).to_have_count(6)
    expect(viewer.locator("main button")).to_have_count(0)
    expect(viewer.locator("nav")).not_to_contain_text("New task")
    viewer.goto(f"{server}/ui/gates")
    expect(viewer.locator("main button")).to_have_count(0)
    assert viewer_key not in viewer.content()

    token = viewer.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = viewer.request.post(
        f"{server}/runs/{run_id}/cancel", headers={"X-CSRF-Token": token or "", "Origin": server}
    )
    assert forged.status == 403
    assert "operator" in forged.json()["detail"]
    assert viewer.request.get(f"{server}/ui/tasks/new").status == 403
    opened = viewer.goto(f"{server}/ui/tasks/new")
    assert opened is not None and opened.status == 403
    expect(viewer.locator("h1")).to_contain_text("Not allowed")
    expect(viewer.locator("main .error")).to_contain_text("needs the operator role")
    expect(viewer.locator("nav")).to_contain_text("Runs")
    # Without the session's token, even the admin's cookie changes nothing.
    unsigned = admin.request.post(f"{server}/runs/{run_id}/cancel", headers={"Origin": server})
    assert unsigned.status == 403
    cross_site = admin.request.post(
        f"{server}/runs/{run_id}/cancel",
        headers={"Origin": "https://evil.example", "X-CSRF-Token": token or ""},
    )
    assert cross_site.status == 403
    admin.context.close()
    viewer.context.close()


def test_an_artifact_with_script_in_it_runs_nothing(browser: Browser, server: str) -> None:
    run_id = submit(server, "Hostile output", XSS_DAG)
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded")
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server)
    page.goto(f"{server}/ui/runs/{run_id}")
    page.click('#dag g.node[data-key="assembled"]')
    markdown = page.locator("#panel .markdown")
    expect(markdown).to_contain_text("<script>window.pwned = 1</script>")
    expect(markdown).to_contain_text('<img src="x" onerror="window.pwned = 2">')

    link = markdown.locator("a", has_text="click me")
    assert link.count() == 0 or not (link.get_attribute("href") or "").startswith("javascript")
    if link.count():
        link.click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#panel script, #panel img[onerror], #panel [onerror]").count() == 0
    assert dialogs == []
    assert re.search(r"/ui/runs/", page.url)
    page.close()


def test_an_html_artifact_opened_as_a_file_runs_nothing(
    browser: Browser, server: str, tmp_path: Path
) -> None:
    """The console links to an artifact's file (`/artifacts/{id}/content`), served from its own
    origin to a signed-in operator. Should a provider ever write HTML, its script must neither
    run nor reach the API with the operator's cookie."""
    run_id = submit(server, "HTML output", {"type": "demo"})
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded")
        artifact = client.get(f"/runs/{run_id}/artifacts").json()["items"][-1]
    hostile = b"<html><body><script>window.pwned = 1; fetch('/keys')</script>hi</body></html>"
    with sqlite3.connect(tmp_path / "console.db") as database:
        (key,) = database.execute(
            "SELECT storage_key FROM artifacts WHERE id = ?", (uuid.UUID(artifact["id"]).hex,)
        ).fetchone()
        (tmp_path / "artifacts" / key).write_bytes(hostile)
        database.execute(
            "UPDATE artifacts SET media_type = 'text/html', size = ? WHERE id = ?",
            (len(hostile), uuid.UUID(artifact["id"]).hex),
        )
    page = browser.new_page()
    sign_in(page, server)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    opened = page.goto(f"{server}/artifacts/{artifact['id']}/content")

    assert opened is not None and opened.status == 200
    assert opened.headers["content-type"].startswith("text/html")
    expect(page.locator("body")).to_have_text("hi")
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert [url for url in requests if url.endswith("/keys")] == []
    page.close()


def test_a_dropped_connection_misses_no_event(browser: Browser, tmp_path: Path) -> None:
    """The API process stops mid-run while a standalone worker carries on; when it is back the
    page resumes after the last event it saw: every event once, in order."""
    url = migrated_sqlite(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    served = SERVER_DEFAULTS | {"WORKER_IN_API": "0"}
    page = browser.new_page()
    with worker_process(url, tmp_path, "steady", DEMO_LATENCY_MS="700"):
        with api_process(url, tmp_path, port, **served):
            sign_in(page, base)
            run_id = submit(base, "Through an outage", {"type": "demo"})
            page.goto(f"{base}/ui/runs/{run_id}")
            expect(page.locator("#dag g.node.s-succeeded")).not_to_have_count(0, timeout=10_000)
        expect(page.locator("#run")).to_have_attribute("data-stream", "reconnecting")
        expect(page.locator("#live-state")).to_have_text("reconnecting…")
        time.sleep(1.5)  # the worker writes events no server is there to stream
        with api_process(url, tmp_path, port, **served):
            expect(page.locator("#run-status .status")).to_have_text("succeeded", timeout=30_000)
            expect(page.locator("#live-state")).to_be_empty()
            shown = [
                int(item.get_attribute("data-event-id") or 0)
                for item in page.locator("#timeline li").all()
            ]
            with api(base) as client:
                stored = client.get("/events", params={"run_id": run_id, "limit": 200}).json()
            assert shown == [event["id"] for event in stored["items"]]
    page.close()


def test_a_stream_told_to_reconnect_adds_nothing_to_the_timeline(
    browser: Browser, server: str
) -> None:
    """A reader that falls behind gets `event: reconnect` (no id, not an event of the run) and
    the stream ends; the page reconnects, and shows only the run's events."""
    gated = {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "A.", "gate": {}}]}
    run_id = submit(server, "Behind", gated)
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "waiting")
    told: list[str] = []

    def fell_behind(route: Route) -> None:
        told.append(route.request.url)
        body = 'event: reconnect\ndata: {"reason":"too far behind","last_event_id":"1"}\n'
        route.fulfill(body=body + "retry: 1000\n\n", content_type="text/event-stream")

    page = browser.new_page()
    sign_in(page, server)
    page.route(f"**/runs/{run_id}/events/stream", fell_behind)
    page.goto(f"{server}/ui/runs/{run_id}")
    # Route handlers run while Playwright is called, not during a plain sleep.
    page.wait_for_timeout(1_500)
    assert len(told) >= 2
    shown = page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.eventId)")
    assert shown and all(event_id.isdigit() for event_id in shown), shown
    expect(page.locator("#timeline")).not_to_contain_text("too far behind")
    page.close()


def test_a_hostile_title_neither_widens_nor_reverses_a_page(browser: Browser, server: str) -> None:
    title = "\u202e" + "W" * 199
    gated = {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "A.", "gate": {}}]}
    run_id = submit(server, title, gated)
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "waiting")
        page = browser.new_page(viewport={"width": 1024, "height": 800})
        sign_in(page, server)
        for path in ("/ui/runs", f"/ui/runs/{run_id}", "/ui/gates"):
            page.goto(f"{server}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1024, (path, width)
        for title_shown in page.locator("main bdi").all():
            assert title_shown.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"

        page.goto(f"{server}/ui/runs/{run_id}")
        created = page.locator("#timeline li", has_text="run.created").locator("code")
        expect(created).to_contain_text('"title":"\\u202eWWW')
        gate = client.get("/gates").json()["items"][0]
        notes = {"node_id": gate["node_id"], "notes": "\u202elive"}
        assert client.post(f"/runs/{run_id}/approve", json=notes).status_code == 200
    approved = page.locator("#timeline li", has_text="gate.approved").locator("code")
    expect(approved).to_contain_text('"notes":"\\u202elive"')
    page.close()


def test_a_page_whose_session_ended_says_it_is_no_longer_live(
    browser: Browser, server: str
) -> None:
    gated = {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "A.", "gate": {}}]}
    run_id = submit(server, "Watched", gated)
    admin = browser.new_page()
    sign_in(admin, server)
    key = create_key(admin, server, "wanda", "viewer")
    watcher = browser.new_context()
    runs = watcher.new_page()
    sign_in(runs, server, key)
    expect(runs.locator("#live-state")).to_have_text("live")
    run = watcher.new_page()
    run.goto(f"{server}/ui/runs/{run_id}")
    expect(run.locator("#live-state")).to_have_text("live")

    with api(server) as client:
        assert client.post("/keys/wanda/revoke").status_code == 200
    ended = "not live: the session ended, sign in again"
    expect(run.locator("#live-state")).to_have_text(ended, timeout=10_000)
    expect(runs.locator("#live-state")).to_have_text(ended, timeout=10_000)
    watcher.close()
    admin.close()


def test_a_node_chosen_after_the_session_ended_says_so_in_the_panel(
    browser: Browser, server: str
) -> None:
    run_id = submit(server, "Looked at late", {"type": "demo"})
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/runs/{run_id}")
    page.context.clear_cookies()
    page.locator("#dag g.node").first.click()
    expect(page.locator("#panel .error")).to_have_text(
        "The session ended: sign in again to see this node."
    )
    expect(page.locator("#panel form")).to_have_count(0)
    page.close()


def test_a_double_click_makes_one_key_and_says_so(browser: Browser, server: str) -> None:
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/keys")
    page.fill('#key-form input[name="name"]', "once")
    page.dblclick('#key-form button[type="submit"]')
    expect(page.locator("#new-key")).to_be_visible()
    page.wait_for_timeout(500)
    expect(page.locator("#key-message")).to_have_text(
        "Key once (viewer) created; reload to see it listed."
    )
    page.close()
