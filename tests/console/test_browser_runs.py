"""In Chromium: signing in and out, a task from the form appearing live, its DAG turning green,
and cancel from the run page."""

import re
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.conftest import API_KEY
from tests.console.browser import api, sign_in, submit, wait_for

SLOW = {"DEMO_LATENCY_MS": "1500"}


def test_sign_in_then_out(browser: Browser, server: str, screenshots: Path) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ui/gates")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=/ui/gates"))
    page.screenshot(path=screenshots / "sign-in.png")
    page.fill('input[name="key"]', "not-a-key")
    page.click('button[type="submit"]')
    expect(page.locator(".error")).to_have_text("That key is unknown or revoked.")

    page.fill('input[name="key"]', API_KEY)
    page.click('button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/ui/gates$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "crew_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert API_KEY not in page.content()

    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    page.goto(f"{server}/ui/runs")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    # The old cookie is worth nothing now, even replayed.
    replayed = httpx.get(f"{server}/runs", cookies={"crew_console": cookie["value"]})
    assert replayed.status_code == 401
    page.close()


def test_a_task_from_the_form_appears_live_and_its_dag_turns_green(
    browser: Browser, server: str, screenshots: Path
) -> None:
    context = browser.new_context()
    # A script error or a Content-Security-Policy violation shows in the console as an error.
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    watcher = context.new_page()
    watcher.on("console", lambda message: message.type == "error" and errors.append(message.text))
    sign_in(watcher, server)
    expect(watcher.locator("#runs tbody tr.empty")).to_be_visible()

    form = context.new_page()
    form.on("console", lambda message: message.type == "error" and errors.append(message.text))
    form.goto(f"{server}/ui/tasks/new")
    form.fill('input[name="title"]', "Demo from the form")
    form.screenshot(path=screenshots / "new-task.png")
    form.click('#task-form button[type="submit"]')
    expect(form).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))

    row = watcher.locator("#runs tbody tr", has_text="Demo from the form")
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("succeeded", timeout=20_000)

    nodes = form.locator("#dag g.node")
    expect(nodes).to_have_count(6)
    expect(form.locator("#dag g.node.s-succeeded")).to_have_count(6, timeout=20_000)
    expect(form.locator("#run-status .status")).to_have_text("succeeded")
    expect(form.locator("#timeline li", has_text="run.succeeded")).to_have_count(1)
    expect(form.locator('button[data-action="cancel"]')).to_be_hidden()
    expect(form.locator('button[data-action="resume"]')).to_be_hidden()
    watcher.screenshot(path=screenshots / "runs.png", full_page=True)

    form.locator("#dag g.node").last.click()
    expect(form.locator("#panel .artifact")).to_have_count(1)
    expect(form).to_have_url(re.compile(r"\?node="))
    # The demo's DAG fits its box: choosing its last node scrolled nothing out of view.
    box, first = form.locator(".dag-box").bounding_box(), nodes.first.bounding_box()
    assert box is not None and first is not None
    assert first["x"] >= box["x"]
    assert form.locator(".dag-box").evaluate("box => box.scrollWidth <= box.clientWidth")
    form.screenshot(path=screenshots / "run.png", full_page=True)
    assert errors == []
    context.close()


def test_a_run_listed_before_the_page_opened_changes_live(browser: Browser, server: str) -> None:
    draft = {"key": "draft", "role": "writer", "prompt": "Draft.", "gate": {}}
    gated = {"type": "dag", "nodes": [draft]}
    run_id = submit(server, "Listed already", gated)
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "waiting")
        page = browser.new_page()
        sign_in(page, server)
        status = page.locator("#runs tbody tr", has_text="Listed already").locator(".status")
        expect(status).to_have_text("waiting")
        approved = client.post(f"/runs/{run_id}/approve", json={})
        assert approved.status_code == 200, approved.text
    expect(status).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    page.close()


def test_a_new_run_outside_the_dates_filtered_does_not_arrive_live(
    browser: Browser, server: str
) -> None:
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/runs?created_before=2000-01-01")
    expect(page.locator("#live-state")).to_have_text("live")
    run_id = submit(server, "Made today", {"type": "demo"})
    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded")
    page.wait_for_timeout(1_000)
    expect(page.locator("#runs tbody tr.empty")).to_be_visible()
    expect(page.locator("#runs tbody tr", has_text="Made today")).to_have_count(0)
    page.goto(f"{server}/ui/runs?created_after=2000-01-01")
    expect(page.locator("#live-state")).to_have_text("live")
    submit(server, "Also today", {"type": "demo"})
    expect(page.locator("#runs tbody tr", has_text="Also today")).to_have_count(1)
    page.close()


def test_a_dag_too_wide_for_its_box_shrinks_only_while_its_labels_stay_legible(
    browser: Browser, server: str
) -> None:
    chain = [
        {
            "key": f"step-{index}",
            "role": "writer",
            "prompt": "Write.",
            "deps": [f"step-{index - 1}"],
        }
        for index in range(1, 13)
    ]
    chain[0]["deps"] = []
    created = httpx.post(
        f"{server}/tasks",
        headers={"X-API-Key": API_KEY},
        json={"title": "A long chain", "task_spec": {"type": "dag", "nodes": chain}},
    )
    assert created.status_code == 202, created.text
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, server)
    page.goto(f"{server}/ui/runs/{created.json()['id']}")

    dag = page.locator("#dag")
    natural = int(dag.get_attribute("width") or 0)
    shown = dag.evaluate("svg => svg.getBoundingClientRect().width")
    assert abs(shown - natural * 0.75) <= 1
    assert page.locator(".dag-box").evaluate("box => box.scrollWidth > box.clientWidth")
    page.close()


def test_cancel_from_the_run_page_stops_the_run(browser: Browser, tmp_path: Path) -> None:
    from tests.console.browser import console_server

    with console_server(tmp_path, **SLOW) as base:
        page = browser.new_page()
        sign_in(page, base)
        page.goto(f"{base}/ui/tasks/new")
        page.fill('input[name="title"]', "To be cancelled")
        page.click('#task-form button[type="submit"]')
        expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
        expect(page.locator("#dag g.node.s-running")).not_to_have_count(0, timeout=10_000)
        expect(page.locator('button[data-action="resume"]')).to_be_hidden()
        page.once("dialog", lambda dialog: dialog.accept())
        page.click('button[data-action="cancel"]')
        expect(page.locator("#run-status .status")).to_have_text("cancelled", timeout=15_000)
        expect(page.locator('button[data-action="cancel"]')).to_be_hidden()
        expect(page.locator('button[data-action="resume"]')).to_be_visible()
        expect(page.locator("#dag g.node.s-running")).to_have_count(0)
        expect(page.locator("#dag g.node.s-succeeded")).not_to_have_count(6)
        page.close()


def test_a_double_click_on_submit_makes_one_run(browser: Browser, server: str) -> None:
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/tasks/new")
    page.fill('input[name="title"]', "Only once")
    page.dblclick('#task-form button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    page.wait_for_timeout(500)
    with api(server) as client:
        assert len(client.get("/runs").json()["items"]) == 1
    page.close()


def test_the_task_form_shows_problems_by_field_and_submits_nothing_until_valid(
    browser: Browser, server: str
) -> None:
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/tasks/new")
    page.fill('input[name="title"]', "Pasted plan")
    page.select_option('select[name="type"]', "dag")
    page.fill(
        'textarea[name="nodes"]',
        "- key: draft\n  role: writer\n  prompt: Draft.\n  deps: [missing]\n",
    )
    page.click('#task-form button[type="submit"]')
    expect(page.locator('.field-error[data-for="nodes"]')).to_contain_text("unknown node 'missing'")
    expect(page).to_have_url(re.compile(r"/ui/tasks/new$"))
    with httpx.Client(base_url=server, headers={"X-API-Key": API_KEY}) as api:
        assert api.get("/runs").json()["items"] == []

    page.fill('textarea[name="nodes"]', "- key: draft\n  role: writer\n  prompt: Draft.\n")
    page.click('#task-form button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    expect(page.locator("#run-status .status")).to_have_text("succeeded", timeout=20_000)
    page.close()
