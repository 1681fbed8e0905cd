"""The Python client against a served API, on SQLite and PostgreSQL: every route's method, the
API's models back, one exception per error status with the API's detail."""

import hashlib
import uuid

import pytest

from crew_client import (
    AsyncClient,
    Conflict,
    Forbidden,
    InvalidId,
    KeyRole,
    NodeStatus,
    NotFound,
    RunStatus,
    Unauthorized,
    Unprocessable,
)
from tests.client.serving import GATED_SPEC, Served, served, wait_for_gate

__all__ = ["served"]


def _finished_demo(server: Served, title: str = "Demo") -> str:
    with server.client() as crew:
        run = crew.submit_task(title, {"type": "demo"})
        events = list(crew.stream_events(run.id))
    assert events[-1].type == "run.succeeded"
    return str(run.id)


def test_a_demo_run_streamed_and_read_back(served: Served) -> None:
    with served.client() as crew:
        run = crew.submit_task("Streamed demo", {"type": "demo", "sections": 2})
        assert run.status == RunStatus.QUEUED
        streamed = list(crew.stream_events(run.id))
        polled = list(crew.iter_events(run_id=run.id))

        assert [event.id for event in streamed] == [event.id for event in polled]
        assert streamed[0].type == "run.created"
        assert streamed[-1].type == "run.succeeded"
        finished = crew.get_run(run.id)
        assert finished.status == RunStatus.SUCCEEDED
        assert finished.usage.total_tokens > 0
        assert finished.task_spec["type"] == "demo"


def test_every_reading_method(served: Served) -> None:
    run_id = _finished_demo(served, "Read back")
    with served.client() as crew:
        assert crew.health().status == "ok"
        assert run_id in [str(run.id) for run in crew.iter_runs(q="Read back")]
        assert crew.list_runs(status=RunStatus.SUCCEEDED, limit=1).items
        nodes = list(crew.iter_nodes(run_id))
        assert {node.status for node in nodes} == {NodeStatus.SUCCEEDED}
        assert crew.get_node(nodes[0].id).key == nodes[0].key
        assert crew.list_nodes(run_id, limit=2).next_cursor is not None
        artifacts = list(crew.iter_artifacts(run_id=run_id))
        one = crew.get_artifact(artifacts[-1].id)
        content = crew.get_artifact_content(one.id)
        assert hashlib.sha256(content).hexdigest() == one.sha256
        assert next(iter(crew.iter_artifacts(node_id=one.node_id))).id == one.id
        assert (
            crew.list_events(run_id=run_id, types=["run.succeeded"]).items[0].run_id == one.run_id
        )
        assert crew.list_gates().items == []
        assert "settings" in crew.get_operator_config()
        report = crew.validate_config("PORT: 99999\n", kind="settings")
        assert not report.valid and report.problems[0].location == "PORT"


def test_events_page_by_page(served: Served) -> None:
    run_id = _finished_demo(served, "Paged")
    with served.client() as crew:
        first = crew.list_events(run_id=run_id, limit=3)
        assert len(first.items) == 3 and first.next_cursor
        second = crew.list_events(run_id=run_id, limit=3, cursor=first.next_cursor)
        assert second.items[0].id > first.items[-1].id
        every = list(crew.iter_events(run_id=run_id))
        assert len({event.id for event in every}) == len(every) > 6


def test_errors_carry_the_api_detail(served: Served) -> None:
    with served.client() as crew:
        with pytest.raises(NotFound) as missing:
            crew.get_run(uuid.uuid4())
        assert "not found" in missing.value.detail
        with pytest.raises(Unprocessable) as invalid:
            crew.submit_task("Bad", {"type": "dag", "nodes": []})
        assert invalid.value.errors and "nodes" in invalid.value.detail
    with served.client("crew_wrong") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.list_runs()
    assert refused.value.status == 401


def test_keys_over_http_and_roles(served: Served) -> None:
    name = f"viewer-{uuid.uuid4().hex[:8]}"
    with served.client() as crew:
        created = crew.create_key(name, KeyRole.VIEWER)
        assert created.secret.startswith("crew_")
        assert crew.get_key(name).role == KeyRole.VIEWER
        assert name in [key.name for key in crew.iter_keys()]
        crew.create_key(f"{name}-2", KeyRole.OPERATOR)
        first = crew.list_keys(limit=1)
        assert first.next_cursor is not None
        assert crew.list_keys(cursor=first.next_cursor).items[0].name != first.items[0].name
        with served.client(created.secret) as viewer:
            assert viewer.list_runs().items is not None
            with pytest.raises(Forbidden):
                viewer.submit_task("Not mine", {"type": "demo"})
            with pytest.raises(Forbidden):
                viewer.list_keys()
        assert crew.revoke_key(name).revoked_at is not None
        with pytest.raises(Conflict):
            crew.revoke_key(name)
        with served.client(created.secret) as viewer, pytest.raises(Unauthorized):
            viewer.list_runs()


def test_an_id_cannot_reach_another_route(served: Served) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    with served.client() as crew:
        crew.create_key(victim, KeyRole.VIEWER)
        with pytest.raises(InvalidId):
            crew.cancel(f"../keys/{victim}/revoke?")
        with pytest.raises(InvalidId):
            crew.get_run("../keys")
        with pytest.raises(InvalidId):
            crew.revoke_key(f"{victim}/revoke?")
        assert crew.get_key(victim).revoked_at is None
    logged = served.log()
    assert f"GET /keys/{victim} " in logged  # what was sent is in the access log
    assert f"/keys/{victim}/revoke" not in logged


def test_a_key_name_with_an_at_sign_is_read_and_revoked_by_its_path(served: Served) -> None:
    name = f"ops-{uuid.uuid4().hex[:8]}@team"
    with served.client() as crew:
        crew.create_key(name, KeyRole.VIEWER)
        assert crew.get_key(name).name == name
        assert crew.revoke_key(name).revoked_at is not None


def test_a_gate_decided_elsewhere_is_a_409(served: Served) -> None:
    with served.client() as alice, served.client() as bob:
        run = alice.submit_task("Two operators", GATED_SPEC)
        gate = wait_for_gate(alice, str(run.id))
        assert alice.approve(run.id, node_id=gate.node_id, notes="fine").status == "approved"
        with pytest.raises(Conflict) as late:
            bob.reject(run.id, node_id=gate.node_id, notes="too late", action="fail")
        assert "approved" in late.value.detail
        assert list(bob.stream_events(run.id))[-1].type == "run.succeeded"


def test_approve_with_an_edit_reject_cancel_and_resume(served: Served) -> None:
    with served.client() as crew:
        edited = crew.submit_task("Edited", GATED_SPEC)
        gate = wait_for_gate(crew, str(edited.id))
        crew.approve(edited.id, patch="an edited haiku")
        assert list(crew.stream_events(edited.id))[-1].type == "run.succeeded"
        draft = [a for a in crew.iter_artifacts(run_id=edited.id) if a.node_id == gate.node_id]
        assert crew.get_artifact_content(draft[-1].id) == b"an edited haiku"

        failed = crew.submit_task("Rejected", GATED_SPEC)
        wait_for_gate(crew, str(failed.id))
        crew.reject(failed.id, notes="no", action="fail")
        assert list(crew.stream_events(failed.id))[-1].type == "run.failed"

        stopped = crew.submit_task("Cancelled", GATED_SPEC)
        wait_for_gate(crew, str(stopped.id))
        assert crew.cancel(stopped.id).cancel_requested_at is not None
        assert list(crew.stream_events(stopped.id))[-1].type == "run.cancelled"
        assert crew.resume(stopped.id).status != RunStatus.CANCELLED
        wait_for_gate(crew, str(stopped.id))


async def test_the_async_client(served: Served) -> None:
    async with AsyncClient(served.url, served.key) as crew:
        run = await crew.submit_task("Async", {"type": "demo"})
        streamed = [event async for event in crew.stream_events(run.id)]
        polled = [event async for event in crew.iter_events(run_id=run.id)]
        assert [event.id for event in streamed] == [event.id for event in polled]
        assert (await crew.get_run(run.id)).status == RunStatus.SUCCEEDED
        assert [node async for node in crew.iter_nodes(run.id)]
        with pytest.raises(NotFound):
            await crew.get_node(uuid.uuid4())
