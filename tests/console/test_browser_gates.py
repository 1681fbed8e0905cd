"""In Chromium: the gates inbox. Approve with an edit (seen as a diff) that the dependents read,
reject with retry, and two operators deciding the same gate."""

import re
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.console.browser import api, create_key, sign_in, submit, wait_for

GATED_DAG = {
    "type": "dag",
    "nodes": [
        {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": {}},
        {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
    ],
}


def _pending_gates(base_url: str) -> list[dict[str, str]]:
    with api(base_url) as client:
        items: list[dict[str, str]] = client.get("/gates", params={"status": "pending"}).json()[
            "items"
        ]
        return items


def _waiting_run(base_url: str, title: str) -> str:
    run_id = submit(base_url, title, GATED_DAG)
    wait_for(lambda: any(gate["run_id"] == run_id for gate in _pending_gates(base_url)))
    return run_id


def test_approve_with_an_edit_reaches_the_dependents(
    browser: Browser, server: str, screenshots: Path
) -> None:
    run_id = _waiting_run(server, "Quarterly report")
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    sign_in(page, server)
    page.goto(f"{server}/ui/gates")
    gate = page.locator("li.gate").first
    expect(gate).to_contain_text("Quarterly report")
    page.screenshot(path=screenshots / "gates.png", full_page=True)

    page.keyboard.press("e")
    page.fill(".edit-text", "# Edited by the console\n\nShorter and better.\n")
    page.click('button[data-action="preview"]')
    expect(page.locator(".diff")).to_contain_text("+ # Edited by the console")
    page.click('button[data-action="send-edit"]')
    expect(gate.locator(".outcome")).to_have_text("Approved.")

    with api(server) as client:
        wait_for(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded")
        artifacts = client.get(f"/runs/{run_id}/artifacts").json()["items"]
        final = next(item for item in artifacts if item["name"] == "final.md")
        assert "# Edited by the console" in client.get(f"/artifacts/{final['id']}/content").text
    assert errors == []
    page.close()


def test_reject_with_retry_reruns_the_node(browser: Browser, server: str) -> None:
    run_id = _waiting_run(server, "Needs another go")
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/gates")
    gate = page.locator("li.gate").first
    gate.locator(".notes").fill("Cite your sources.")
    gate.locator(".reject-action").select_option("retry")
    page.locator("body").click()
    page.keyboard.press("r")
    expect(gate.locator(".outcome")).to_have_text("Rejected (retry).")

    # The node runs again with the notes and waits at its gate once more.
    wait_for(lambda: any(gate["run_id"] == run_id for gate in _pending_gates(server)))
    with api(server) as client:
        events = client.get("/events", params={"run_id": run_id, "limit": 200}).json()["items"]
        types = [event["type"] for event in events]
        assert types.count("gate.waiting") == 2
        assert "gate.rejected" in types
    page.reload()
    expect(page.locator("li.gate")).to_have_count(1)
    page.close()


def test_two_operators_on_one_gate_one_wins_the_other_sees_who(
    browser: Browser, server: str
) -> None:
    _waiting_run(server, "Contested")
    admin = browser.new_context().new_page()
    sign_in(admin, server)
    alice_key = create_key(admin, server, "alice", "operator")
    alice = browser.new_context().new_page()
    sign_in(alice, server, alice_key)

    admin.goto(f"{server}/ui/gates")
    alice.goto(f"{server}/ui/gates")
    alice.click('li.gate button[data-action="approve"]')
    expect(alice.locator("li.gate .outcome")).to_have_text("Approved.")

    admin.click('li.gate button[data-action="approve"]')
    outcome = admin.locator("li.gate .outcome")
    expect(outcome).to_have_text(re.compile(r"^Already decided: already approved by alice at "))
    assert "T" not in outcome.inner_text().split(" at ")[-1]  # shown in local time, not ISO
    admin.context.close()
    alice.context.close()


def test_a_double_click_or_a_second_key_decides_a_gate_once(browser: Browser, server: str) -> None:
    _waiting_run(server, "Clicked twice")
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/gates")
    decisions: list[str] = []
    page.on("request", lambda request: request.method == "POST" and decisions.append(request.url))
    gate = page.locator("li.gate").first
    gate.locator('button[data-action="approve"]').dblclick()
    expect(gate.locator(".outcome")).to_have_text("Approved.")
    page.keyboard.press("a")
    page.wait_for_timeout(500)
    expect(gate.locator(".outcome")).to_have_text("Approved.")
    assert len(decisions) == 1, decisions
    page.close()


def test_a_gate_whose_artifact_was_lost_can_still_be_rejected(
    browser: Browser, server: str, tmp_path: Path
) -> None:
    run_id = _waiting_run(server, "Lost its draft")
    page = browser.new_page()
    sign_in(page, server)
    page.goto(f"{server}/ui/gates")
    gate = page.locator("li.gate").first
    for artifact in (tmp_path / "artifacts").rglob("*"):
        if run_id in str(artifact) and artifact.is_file():
            artifact.unlink()
    page.keyboard.press("e")
    page.fill(".edit-text", "# Edited\n")
    page.click('button[data-action="preview"]')
    page.click('button[data-action="send-edit"]')
    expect(gate.locator(".outcome")).to_contain_text("reject the gate with retry")
    expect(gate.locator(".outcome")).not_to_contain_text("Already decided")
    gate.locator('button[data-action="reject"]').click()
    expect(gate.locator(".outcome")).to_have_text("Rejected (retry).")
    page.close()
