"""X-Timezone reaches inside the JSON documents the API returns: a sidecar's `timestamps` and the
`*_at` fields of an event's `data` (a gate's `expires_at`), in lists, one item and streams."""

from typing import Any

import httpx
import pytest

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.states import RunStatus
from apps.orchestrator.worker.loop import Worker
from tests.api.pages import get_json, single_page
from tests.factories import create_artifact, create_event, create_node, create_run
from tests.orchestrator.test_run_control import GATED_DAG
from tests.orchestrator.test_worker import _submit
from tests.sse import parse_sse

PARIS = {"X-Timezone": "Europe/Paris"}
SIDECAR = {
    "version": 1,
    "timestamps": {
        "started_at": "2024-07-01T10:00:00+00:00",
        "finished_at": "2024-07-01T10:00:01.500000+00:00",
    },
    "prompts": {"system": "s", "user": "written 2024-07-01T10:00:00+00:00"},
}
GATE_DATA = {
    "expires_at": "2024-01-15T10:00:00+00:00",
    "notes": "due 2024-01-15T10:00:00+00:00",
    "reviewed_at": "not a time",
    "decisions": [{"decided_at": "2024-01-15T09:00:00+00:00"}],
}


async def _made(sessions: SessionFactory, settings: Settings) -> dict[str, Any]:
    async with unit_of_work(sessions) as session:
        run = await create_run(session, status=RunStatus.SUCCEEDED)
        node = await create_node(session, run)
        artifact = await create_artifact(session, node, settings.artifacts_dir, sidecar=SIDECAR)
        await create_event(session, run, node_id=node.id, type="gate.waiting", data=GATE_DATA)
        await create_event(session, run, type="run.succeeded")  # so that its stream ends
    return {"run_id": str(run.id), "artifact_id": str(artifact.id)}


async def test_sidecar_timestamps_follow_the_zone(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await _made(sessions, settings)

    one = await get_json(client, f"/artifacts/{made['artifact_id']}", headers=PARIS)
    listed = await single_page(client, f"/jobs/{made['run_id']}/artifacts", headers=PARIS)
    in_utc = await get_json(client, f"/artifacts/{made['artifact_id']}")

    assert one["sidecar"]["timestamps"] == {
        "started_at": "2024-07-01T12:00:00+02:00",
        "finished_at": "2024-07-01T12:00:01.500000+02:00",
    }
    assert one["sidecar"]["prompts"] == SIDECAR["prompts"]  # text is never rewritten
    assert listed[0]["sidecar"]["timestamps"] == one["sidecar"]["timestamps"]
    assert in_utc["sidecar"] == SIDECAR


@pytest.mark.timeout(30)
async def test_event_data_timestamps_follow_the_zone_when_polled_and_streamed(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    made = await _made(sessions, settings)

    polled = await single_page(client, f"/api/v1/jobs/{made['run_id']}/events", headers=PARIS)
    streamed = await client.get(
        "/events/stream", params={"run_id": made["run_id"]}, headers=PARIS, timeout=5
    )
    in_utc = await single_page(client, "/events", run_id=made["run_id"])

    assert polled[0]["data"] == {
        "expires_at": "2024-01-15T11:00:00+01:00",
        "notes": "due 2024-01-15T10:00:00+00:00",
        "reviewed_at": "not a time",
        "decisions": [{"decided_at": "2024-01-15T10:00:00+01:00"}],
    }
    assert in_utc[0]["data"] == GATE_DATA
    assert parse_sse(streamed.text).events[0]["data"] == polled[0]["data"]


async def test_written_timestamps_read_as_the_answer_s_own(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    """A gate's `expires_at` and a sidecar's `timestamps`, as the worker writes them, end in Z
    as the answer's own fields do; they ended in +00:00."""
    gated = {**GATED_DAG, "nodes": [{**GATED_DAG["nodes"][0], "gate": {"timeout_minutes": 60}}]}
    gated["nodes"] += GATED_DAG["nodes"][1:]
    run_id = await _submit(client, gated)
    await Worker(transactions, settings).drain()

    (artifact,) = await single_page(client, f"/runs/{run_id}/artifacts")
    (waiting,) = await single_page(client, "/events", run_id=run_id, type="gate.waiting")
    in_utc = await single_page(
        client, "/events", run_id=run_id, type="gate.waiting", headers={"X-Timezone": "UTC"}
    )

    written = [*artifact["sidecar"]["timestamps"].values(), waiting["data"]["expires_at"]]
    assert artifact["created_at"].endswith("Z") and waiting["ts"].endswith("Z")
    assert all(text.endswith("Z") for text in written), written
    assert in_utc[0]["data"]["expires_at"] == waiting["data"]["expires_at"]
