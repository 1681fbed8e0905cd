"""Console pages and their own routes through HTTP: the new-task check, keys for admins, runs
filters, and a 500-node run's page."""

import asyncio
import html
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, update
from sqlalchemy.util import await_

from apps.console.gates_pages import INBOX_SHOWN_BYTES
from apps.console.rendering import MAX_RENDERED_BYTES
from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.models import Gate, KeyRole, Run
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from tests.console.test_sessions import ORIGIN, csrf_of, make_key, sign_in
from tests.factories import (
    add_dependency,
    create_artifact,
    create_event,
    create_node,
    create_run,
)


@pytest.fixture
async def admin(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN})
    await sign_in(client)
    client.headers["X-CSRF-Token"] = await csrf_of(client)
    return client


async def test_the_task_check_says_which_field_is_wrong(admin: httpx.AsyncClient) -> None:
    ok = await admin.post("/ui/tasks/check", json={"title": "Demo", "type": "demo"})
    assert ok.json() == {"task": {"title": "Demo", "task_spec": {"type": "demo"}}}
    yaml_dag = "nodes:\n  - key: a\n    role: writer\n    prompt: Go.\n    deps: [b]\n"
    bad = await admin.post("/ui/tasks/check", json={"title": "D", "type": "dag", "nodes": yaml_dag})
    assert bad.status_code == 422
    (problem,) = bad.json()["errors"]
    assert problem["field"] == "nodes" and "unknown node 'b'" in problem["message"]
    broken = await admin.post(
        "/ui/tasks/check", json={"title": "D", "type": "dag", "nodes": "a: ["}
    )
    assert broken.json()["errors"][0]["field"] == "nodes"
    untitled = await admin.post("/ui/tasks/check", json={"title": "", "type": "demo"})
    assert untitled.json()["errors"][0]["field"] == "title"
    budget = await admin.post(
        "/ui/tasks/check", json={"title": "D", "type": "demo", "max_cost": -1}
    )
    assert budget.json()["errors"][0]["field"] == "max_cost"


async def test_an_admin_makes_and_revokes_keys_on_the_keys_page(admin: httpx.AsyncClient) -> None:
    made = await admin.post("/ui/keys", json={"name": "ci-bot", "role": "operator"})
    assert made.status_code == 201 and made.json()["key"].startswith("crew_")
    page = (await admin.get("/ui/keys")).text
    assert "ci-bot" in page and made.json()["key"] not in page
    again = await admin.post("/ui/keys", json={"name": "ci-bot", "role": "operator"})
    assert again.status_code == 409
    assert (await admin.post("/ui/keys", json={"name": "x", "role": "root"})).status_code == 422
    revoked = await admin.post("/ui/keys/revoke", json={"name": "ci-bot"})
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await admin.post("/ui/keys/revoke", json={"name": "nobody"})).status_code == 404
    del admin.headers["X-CSRF-Token"]
    assert (await admin.post("/ui/keys", json={"name": "y", "role": "viewer"})).status_code == 403


async def test_the_keys_page_shows_a_page_of_keys_at_a_time(admin: httpx.AsyncClient) -> None:
    names = [f"bot-{number:03}" for number in range(DEFAULT_LIMIT + 5)]
    for name in names:
        made = await admin.post("/ui/keys", json={"name": name, "role": "viewer"})
        assert made.status_code == 201

    first = await admin.get("/ui/keys")
    shown = re.findall(r'data-name="([^"]+)"', first.text)
    assert shown == names[:DEFAULT_LIMIT]
    (newer,) = re.findall(r'<a class="newer" href="([^"]+)"', first.text)
    rest = await admin.get(html.unescape(newer))
    assert re.findall(r'data-name="([^"]+)"', rest.text) == names[DEFAULT_LIMIT:]
    assert 'class="newer"' not in rest.text

    forged = await admin.get("/ui/keys", params={"cursor": "not-a-cursor"})
    assert forged.status_code == 400
    assert "bot-000" not in forged.text


async def test_an_operator_may_not_manage_keys(app: FastAPI, sessions: SessionFactory) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN}
    ) as client:
        await sign_in(client, await make_key(sessions, "olga", KeyRole.OPERATOR))
        token = await csrf_of(client)
        refused = await client.post(
            "/ui/keys", json={"name": "z", "role": "admin"}, headers={"X-CSRF-Token": token}
        )
        assert refused.status_code == 403
        assert (await client.get("/ui/settings")).status_code == 200


async def test_the_runs_page_filters_and_pages(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        for number in range(55):
            await create_run(session, title=f"Run {number}", status=RunStatus.SUCCEEDED)
        await create_run(session, title="The odd one", status=RunStatus.FAILED)
    first = (await admin.get("/ui/runs")).text
    assert first.count("<tr data-run-id") == 50 and "Older runs" in first
    older = re.search(r'class="older" href="([^"]+)"', first)
    assert older
    second = (await admin.get(older.group(1).replace("&amp;", "&"))).text
    assert second.count("<tr data-run-id") == 6
    failed = (await admin.get("/ui/runs", params={"status": "failed"})).text
    assert failed.count("<tr data-run-id") == 1 and "The odd one" in failed
    found = (await admin.get("/ui/runs", params={"q": "odd"})).text
    assert found.count("<tr data-run-id") == 1
    bad = await admin.get("/ui/runs", params={"status": "bogus"})
    assert bad.status_code == 422


async def test_a_change_while_a_run_page_is_read_shows_on_it_or_arrives_live(
    app: FastAPI, admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.QUEUED)
        await create_event(session, run, type="run.created")
    changed: list[int] = []

    async def change() -> None:
        async with unit_of_work(sessions) as session:
            await session.execute(
                update(Run).where(Run.id == run.id).values(status=RunStatus.WAITING)
            )
            changed.append((await create_event(session, run, type="run.waiting")).id)

    def read(*arguments: Any) -> None:
        statement = arguments[2]
        if not changed and re.search(r"FROM (runs|events)\b", statement):
            await_(change())  # a worker commits between two of the page's reads

    engine = app.state.engine.sync_engine
    event.listen(engine, "after_cursor_execute", read)
    try:
        page = await admin.get(f"/ui/runs/{run.id}")
    finally:
        event.remove(engine, "after_cursor_execute", read)

    assert page.status_code == 200 and changed
    ((after, status),) = re.findall(r'data-after="(\d+)" data-status="(\w+)"', page.text)
    assert status == "waiting" or int(after) < changed[0]


async def test_a_run_page_shows_its_budget_as_bars(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    spec = {"type": "demo", "budget": {"max_cost": 2.5, "max_tokens": 1000}}
    async with unit_of_work(sessions) as session:
        run = await create_run(session, task_spec=spec, total_tokens=250)
    page = (await admin.get(f"/ui/runs/{run.id}")).text
    assert '<meter id="budget-cost" min="0" max="2.5"' in page
    assert '<meter id="budget-tokens" min="0" max="1000.0" value="250">' in page


async def test_the_timeline_shows_an_event_as_the_live_timeline_does(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    data = {"from": "queued", "cause": "worker", "note": "café <b>&"}
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        await create_event(session, run, type="run.started", data=data)
    page = (await admin.get(f"/ui/runs/{run.id}")).text
    (code,) = re.findall(r"<b>run\.started</b> <code>(.*?)</code>", page)
    # JSON.stringify's text, escaped once as HTML: keys in order, no spaces.
    assert html.unescape(code) == '{"from":"queued","cause":"worker","note":"café <b>&"}'
    assert "<b>&" not in code


async def test_a_500_node_run_page_draws_every_node(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.RUNNING)
        previous = None
        for position in range(500):
            node = await create_node(
                session, run, key=f"n{position}", position=position, status=NodeStatus.PENDING
            )
            if previous is not None and position % 10:
                await add_dependency(session, node, previous)
            previous = node
    page = await admin.get(f"/ui/runs/{run.id}")
    assert page.status_code == 200
    assert page.text.count('<g class="node s-pending"') == 500
    assert (await admin.get(f"/ui/runs/{run.id}?node={node.id}")).status_code == 200
    panel = await admin.get(f"/ui/runs/{run.id}/nodes/{node.id}/panel")
    assert panel.status_code == 200 and "n499" in panel.text


async def test_bad_bodies_are_clear_4xx_never_500(admin: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    nested = "[" * 30_000 + "]" * 30_000
    for body, status in (("not json", 400), ("[1]", 400), (nested, 400)):
        answer = await admin.post("/ui/keys", content=body, headers=headers)
        assert answer.status_code == status, (body[:20], answer.text)
        assert answer.json()["detail"]
    huge = await admin.post("/ui/keys", content="x" * 70_000, headers=headers)
    assert huge.status_code == 413
    form = await admin.post("/ui/sign-in", content="key=" + "k" * 9_000)
    assert form.status_code == 413


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def test_a_browser_meets_errors_as_pages_and_scripts_as_json(
    app: FastAPI, sessions: SessionFactory
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN}
    ) as client:
        await sign_in(client, await make_key(sessions, "olga", KeyRole.OPERATOR))

        forbidden = await client.get("/ui/keys", headers=HTML)
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"].startswith("text/html")
        assert "Not allowed" in forbidden.text and "needs the admin role" in forbidden.text
        assert 'href="/ui/runs"' in forbidden.text and "olga" in forbidden.text
        assert "content-security-policy" in forbidden.headers

        missing = await client.get(f"/ui/runs/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=HTML)
        assert missing.status_code == 404 and "Not found" in missing.text
        unknown = await client.get("/ui/no-such-page", headers=HTML)
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/")
        invalid = await client.get("/ui/runs/not-a-run", headers=HTML)
        assert invalid.status_code == 422 and "not valid" in invalid.text

        fetched = await client.get("/ui/keys", headers={"Accept": "*/*"})
        assert fetched.status_code == 403 and "admin role" in fetched.json()["detail"]
        api = await client.get(
            f"/runs/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers={**HTML, "X-API-Key": "x"}
        )
        assert api.headers["content-type"] == "application/json"


async def test_pages_name_a_run_as_its_events_do(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, title="Named")
    runs_page = (await admin.get("/ui/runs")).text
    assert re.findall(r'<tr data-run-id="([^"]+)"', runs_page) == [str(run.id)]
    run_page = (await admin.get(f"/ui/runs/{run.id}")).text
    assert f'<section id="run" data-run-id="{run.id}"' in run_page


async def test_an_empty_cursor_is_the_first_page(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        await create_run(session, title="First")
    every_filter_blank = "status=&q=&created_after=&created_before=&cursor="
    for path in ("/ui/runs?cursor=", f"/ui/runs?{every_filter_blank}", "/ui/keys?cursor="):
        answer = await admin.get(path, headers=HTML)
        assert answer.status_code == 200, (path, answer.text)
    assert "First" in (await admin.get("/ui/runs?cursor=")).text
    too_long = await admin.get("/ui/runs", params={"cursor": "x" * 513}, headers=HTML)
    assert too_long.status_code == 422


async def test_pages_answer_head_as_they_answer_get(admin: httpx.AsyncClient) -> None:
    for path in ("/ui/runs", "/ui/gates", "/ui/tasks/new", "/ui/settings", "/ui/keys"):
        answer = await admin.head(path, headers=HTML)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["content-type"].startswith("text/html")
    assert (await admin.head("/", headers=HTML)).status_code == 307
    bad = await admin.head("/ui/runs/not-a-run", headers=HTML)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")


async def test_the_console_prefix_alone_opens_the_runs(admin: httpx.AsyncClient) -> None:
    for path in ("/ui", "/ui/"):
        answer = await admin.get(path, headers=HTML, follow_redirects=True)
        assert answer.status_code == 200 and answer.url.path == "/ui/runs", path


async def test_a_form_posted_by_a_browser_meets_its_errors_as_pages(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN, **HTML}
    ) as browser:
        huge = await browser.post("/ui/sign-in", data={"key": "k" * 9_000})
        assert huge.status_code == 413 and huge.headers["content-type"].startswith("text/html")
        assert "Too large" in huge.text and "8,192 bytes" in huge.text
        not_a_form = await browser.post("/ui/runs")
        assert not_a_form.status_code == 405
        assert not_a_form.headers["content-type"].startswith("text/html")
        assert not_a_form.headers["allow"] == "GET, HEAD"
        # A page left open after its session's cookie expired: signing out just signs in again.
        expired = await browser.post("/ui/sign-out", data={"csrf_token": "stale"})
        assert (expired.status_code, expired.headers["location"]) == (303, "/ui/sign-in")
        await sign_in(browser)
        forged = await browser.post("/ui/sign-out", data={"csrf_token": "stale"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert (await browser.get("/ui/runs")).status_code == 200


async def test_the_task_check_refuses_what_post_tasks_refuses(admin: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    infinite = b'{"title": "T", "type": "demo", "max_cost": Infinity}'
    answer = await admin.post("/ui/tasks/check", content=infinite, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "max_cost"
    huge = await admin.post(
        "/ui/tasks/check", json={"title": "T", "type": "demo", "max_tokens": 10**30}
    )
    assert huge.status_code == 422
    assert huge.json()["errors"][0]["field"] == "max_tokens"
    assert "64-bit" in huge.json()["errors"][0]["message"]
    nul = '- key: a\n  role: writer\n  prompt: "Go.\\0"\n'
    dag = await admin.post("/ui/tasks/check", json={"title": "T", "type": "dag", "nodes": nul})
    assert dag.status_code == 422
    assert dag.json()["errors"] == [
        {
            "field": "nodes",
            "message": "task_spec.nodes.0.prompt: Text may not contain NUL characters (\\u0000)",
        }
    ]
    # Nested well within what the JSON parser reads under any stack (coverage's included).
    deep = b'{"title": "T", "type": "demo", "audience": ' + b"[" * 200 + b"]" * 200 + b"}"
    nested = await admin.post("/ui/tasks/check", content=deep, headers=headers)
    assert nested.status_code == 422, nested.text
    many = "\n".join(f'- {{key: n{i}, role: writer, prompt: "\\0"}}' for i in range(100))
    listed = await admin.post("/ui/tasks/check", json={"title": "T", "type": "dag", "nodes": many})
    assert len(listed.json()["errors"]) == 20


async def test_invisible_characters_are_shown_escaped_and_titles_isolated(
    admin: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    title = "Quarterly \u202etroper\u200b"
    async with unit_of_work(sessions) as session:
        run = await create_run(session, title=title)
        await create_event(session, run, type="run.created", data={"title": title})
    page = (await admin.get(f"/ui/runs/{run.id}")).text
    (code,) = re.findall(r"<b>run\.created</b> <code>(.*?)</code>", page)
    assert html.unescape(code) == '{"title":"Quarterly \\u202etroper\\u200b"}'
    assert f"<h1><bdi>{title}</bdi>" in page
    assert f"<bdi>{title}</bdi></a>" in (await admin.get("/ui/runs")).text


async def test_the_edit_box_keeps_an_artifact_s_leading_newline(
    admin: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    content = "\n\n    indented code first\n"
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.WAITING)
        node = await create_node(session, run, status=NodeStatus.WAITING_APPROVAL)
        artifact = await create_artifact(
            session, node, settings.artifacts_dir, content.encode(), media_type="text/plain"
        )
        session.add(Gate(run_id=run.id, node_id=node.id, artifact_id=artifact.id))
    page = (await admin.get("/ui/gates")).text
    (written,) = re.findall(r'<textarea class="edit-text" rows="14">(.*?)</textarea>', page, re.S)
    # What a browser's textarea holds: the text less one newline right after the start tag.
    assert html.unescape(written.removeprefix("\n")) == content


async def test_an_artifact_missing_from_the_store_takes_no_page_with_it(
    admin: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.WAITING)
        lost = await create_node(session, run, key="lost", status=NodeStatus.WAITING_APPROVAL)
        kept = await create_node(
            session, run, key="kept", position=1, status=NodeStatus.WAITING_APPROVAL
        )
        gone = await create_artifact(session, lost, settings.artifacts_dir, storage_key="gone.md")
        here = await create_artifact(session, kept, settings.artifacts_dir, b"# Still here\n")
        session.add(Gate(run_id=run.id, node_id=lost.id, artifact_id=gone.id))
        session.add(Gate(run_id=run.id, node_id=kept.id, artifact_id=here.id))
    inbox = await admin.get("/ui/gates", headers=HTML)
    assert inbox.status_code == 200, inbox.text
    assert inbox.text.count('<li class="gate"') == 2
    assert "missing from the artifact store" in inbox.text and "Still here" in inbox.text
    panel = await admin.get(f"/ui/runs/{run.id}?node={lost.id}", headers=HTML)
    assert panel.status_code == 200 and "missing from the artifact store" in panel.text
    assert "Too large" not in panel.text


async def test_the_gates_inbox_shows_artifacts_up_to_a_page_s_worth(
    admin: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    """Each artifact fits on its own, but together they are more than a page should carry: the
    oldest are shown, the others link to their run."""
    each = MAX_RENDERED_BYTES - 1024
    count = INBOX_SHOWN_BYTES // each + 2
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.WAITING)
        for position in range(count):
            node = await create_node(
                session,
                run,
                key=f"part-{position}",
                position=position,
                status=NodeStatus.WAITING_APPROVAL,
            )
            content = f"part {position}: ".encode() + b"x" * each
            artifact = await create_artifact(
                session, node, settings.artifacts_dir, content, media_type="text/plain"
            )
            session.add(Gate(run_id=run.id, node_id=node.id, artifact_id=artifact.id))

    inbox = await admin.get("/ui/gates", headers=HTML)

    assert inbox.status_code == 200
    assert inbox.text.count('<li class="gate"') == count
    shown = [position for position in range(count) if f"part {position}: x" in inbox.text]
    assert shown == list(range(INBOX_SHOWN_BYTES // each))
    assert inbox.text.count("too large to show on this page") == count - len(shown)
    assert len(inbox.content) < 3 * INBOX_SHOWN_BYTES


async def test_a_nul_in_an_address_or_a_key_name_is_a_422(admin: httpx.AsyncClient) -> None:
    """PostgreSQL refuses a NUL in any text: looking one up must not be a 500."""
    for path in ("/ui/runs?q=%00", "/ui/runs?q=a%00b", "/ui/keys?cursor=%00"):
        answer = await admin.get(path, headers=HTML)
        assert answer.status_code == 422, (path, answer.status_code)
        assert "NUL" in answer.text and answer.headers["content-type"].startswith("text/html")
    for path in ("/ui/keys", "/ui/keys/revoke"):
        named = await admin.post(path, json={"name": "a\x00b", "role": "viewer"})
        assert named.status_code == 422 and "NUL" in named.json()["detail"], path


async def test_a_json_artifact_nested_too_deep_is_shown_as_text(
    admin: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    content = b"[" * 100_000 + b"]" * 100_000
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.WAITING)
        node = await create_node(session, run, status=NodeStatus.WAITING_APPROVAL)
        artifact = await create_artifact(
            session, node, settings.artifacts_dir, content, media_type="application/json"
        )
        session.add(Gate(run_id=run.id, node_id=node.id, artifact_id=artifact.id))
    for path in ("/ui/gates", f"/ui/runs/{run.id}?node={node.id}"):
        page = await admin.get(path, headers=HTML)
        assert page.status_code == 200, (path, page.status_code)
        assert '<pre class="text">[[[[' in page.text


async def test_rendering_a_big_artifact_leaves_the_event_loop_free(
    admin: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    """Markdown-it takes seconds over half a megabyte of `![`: not on the loop that serves every
    other request, streams and the worker included."""
    content = b"![" * 200_000
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.WAITING)
        node = await create_node(session, run, status=NodeStatus.WAITING_APPROVAL)
        artifact = await create_artifact(session, node, settings.artifacts_dir, content)
        session.add(Gate(run_id=run.id, node_id=node.id, artifact_id=artifact.id))
    loop = asyncio.get_running_loop()
    page = asyncio.ensure_future(admin.get("/ui/gates"))
    longest, before = 0.0, loop.time()
    while not page.done():
        await asyncio.sleep(0.01)
        longest, before = max(longest, loop.time() - before), loop.time()
    assert (await page).status_code == 200
    # Some 11 s on the loop; in a thread, the loop waits only while one of markdown-it's regular
    # expressions holds the GIL (half a second here).
    assert longest < 3, f"the event loop was held for {longest:.1f} s"
