"""Control requests racing on one run, through the API and the worker at once: every pair ends in
one consistent outcome (the outcome of one order or the other), and none answers a 5xx.

Each test races a dozen runs at once, so that on PostgreSQL the transactions really overlap.
"""

import asyncio
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine import leases, passes
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest
from apps.orchestrator.infra.providers.demo import DemoProvider
from apps.orchestrator.model.models import Artifact, Gate, Node, utcnow
from apps.orchestrator.worker.loop import Worker
from tests.orchestrator.test_cancel_outcomes import _ended
from tests.orchestrator.test_run_control import _nodes, _wait_for, _working
from tests.orchestrator.test_worker import _assert_events_replay_to_the_database, _submit

RACES = 12


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Connections enough for every request of a race to hold one at once, as they would
    across API processes: the races then overlap inside the database, not in a queue for the
    pool."""
    return settings.model_copy(update={"db_pool_size": 2 * RACES + 2})


def _gated(gate: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "dag",
        "nodes": [
            {"key": "draft", "role": "writer", "prompt": "Draft it.", "gate": gate or {}},
            {"key": "final", "role": "assembler", "prompt": "Assemble.", "deps": ["draft"]},
        ],
    }


ONE_NODE = {"type": "dag", "nodes": [{"key": "draft", "role": "writer", "prompt": "Draft it."}]}


async def _runs_at_their_gates(
    client: httpx.AsyncClient,
    transactions: Transactions,
    settings: Settings,
    spec: dict[str, Any] | None = None,
) -> list[str]:
    run_ids = [await _submit(client, spec or _gated()) for _ in range(RACES)]
    await Worker(transactions, settings).drain()
    return run_ids


async def _race(
    client: httpx.AsyncClient, pairs: list[tuple[tuple[str, Any], tuple[str, Any]]]
) -> list[tuple[httpx.Response, httpx.Response]]:
    """Send every request of every pair at once, each pair's two in a random order; the answers
    of each pair, in the pair's order."""
    order = [(index, side) for index in range(len(pairs)) for side in (0, 1)]
    random.shuffle(order)
    answers = await asyncio.gather(
        *(client.post(pairs[index][side][0], json=pairs[index][side][1]) for index, side in order)
    )
    by_request = dict(zip(order, answers, strict=True))
    results = [(by_request[(index, 0)], by_request[(index, 1)]) for index in range(len(pairs))]
    for first, second in results:
        assert first.status_code < 500, first.text
        assert second.status_code < 500, second.text
    return results


async def _gate_of(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    (gate,) = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    return gate


async def _assert_store_holds_only_artifacts(sessions: SessionFactory, settings: Settings) -> None:
    """Every file in the store is an artifact's or its sidecar, and every artifact's is there."""
    async with sessions() as session:
        keys = set((await session.scalars(select(Artifact.storage_key))).all())
    expected = keys | {f"{key}.sidecar.json" for key in keys}
    root = settings.artifacts_dir
    stored = {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}
    assert stored == expected


async def test_approve_racing_cancel_the_run_is_cancelled_and_the_gate_decided_once(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_ids = await _runs_at_their_gates(client, transactions, settings)
    approvals = [{"patch": f"# Edited {index}\n"} if index % 2 else {} for index in range(RACES)]

    answers = await _race(
        client,
        [
            ((f"/runs/{run_id}/approve", approval), (f"/runs/{run_id}/cancel", None))
            for run_id, approval in zip(run_ids, approvals, strict=True)
        ],
    )
    await Worker(transactions, settings).drain()

    for run_id, (approve, cancel) in zip(run_ids, answers, strict=True):
        assert cancel.status_code == 202, cancel.text
        assert approve.status_code in (200, 409), approve.text
        assert (await _ended(client, run_id))["status"] == "cancelled"
        gate = await _gate_of(client, run_id)
        assert gate["status"] == ("approved" if approve.status_code == 200 else "cancelled")
        await _assert_events_replay_to_the_database(client, run_id)
    await _assert_store_holds_only_artifacts(sessions, settings)


async def test_reject_racing_cancel_the_run_is_cancelled_and_the_gate_decided_once(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_ids = await _runs_at_their_gates(client, transactions, settings)
    actions = ["retry" if index % 2 else "fail" for index in range(RACES)]

    answers = await _race(
        client,
        [
            ((f"/runs/{run_id}/reject", {"action": action}), (f"/runs/{run_id}/cancel", None))
            for run_id, action in zip(run_ids, actions, strict=True)
        ],
    )
    await Worker(transactions, settings).drain()

    for run_id, action, (reject, cancel) in zip(run_ids, actions, answers, strict=True):
        run = await _ended(client, run_id)
        gate = await _gate_of(client, run_id)
        if reject.status_code == 409:
            # Cancelled first: the gate was closed with the run.
            assert (cancel.status_code, gate["status"], run["status"]) == (
                202,
                "cancelled",
                "cancelled",
            )
        elif action == "retry":
            # Rejected first, then cancelled with its node ready to run again.
            assert (reject.status_code, gate["status"]) == (200, "rejected")
            assert (cancel.status_code, run["status"]) == (202, "cancelled")
        else:
            # Rejected first, failing the run at once: there was nothing left to cancel.
            assert (cancel.status_code, run["status"]) == (409, "failed")
            assert cancel.json()["detail"].startswith("run is failed")
        await _assert_events_replay_to_the_database(client, run_id)
    await _assert_store_holds_only_artifacts(sessions, settings)


async def test_resume_racing_cancel_the_answers_say_how_the_run_ends(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_ids = await _runs_at_their_gates(client, transactions, settings)
    for run_id in run_ids:
        assert (await client.post(f"/runs/{run_id}/cancel")).json()["status"] == "cancelled"

    answers = await _race(
        client,
        [
            ((f"/runs/{run_id}/resume", None), (f"/runs/{run_id}/cancel", None))
            for run_id in run_ids
        ],
    )
    await Worker(transactions, settings).drain()

    for run_id, (resume, cancel) in zip(run_ids, answers, strict=True):
        assert resume.status_code == 202, resume.text
        run = (await client.get(f"/runs/{run_id}")).json()
        if cancel.status_code == 202:
            # Resumed, then cancelled.
            assert run["status"] == "cancelled"
        else:
            # Refused while the run was still cancelled, then resumed: it went on to its gate.
            assert (cancel.status_code, cancel.json()["detail"]) == (
                409,
                "run is cancelled; only a run that has not ended can be cancelled",
            )
            assert (run["status"], run["cancel_requested_at"]) == ("waiting", None)
        await _assert_events_replay_to_the_database(client, run_id)
    await _assert_store_holds_only_artifacts(sessions, settings)


async def test_two_cancels_or_two_resumes_racing_one_is_refused_or_both_agree(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_ids = await _runs_at_their_gates(client, transactions, settings)

    cancels = await _race(
        client, [((f"/runs/{r}/cancel", None), (f"/runs/{r}/cancel", None)) for r in run_ids]
    )
    resumes = await _race(
        client, [((f"/runs/{r}/resume", None), (f"/runs/{r}/resume", None)) for r in run_ids]
    )
    await Worker(transactions, settings).drain()

    for run_id, cancel, resume in zip(run_ids, cancels, resumes, strict=True):
        # A run cancelled at once: the later cancel finds it cancelled.
        assert sorted(answer.status_code for answer in cancel) == [202, 409]
        assert sorted(answer.status_code for answer in resume) == [202, 409]
        assert (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting"
        events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
        assert [event["type"] for event in events].count("run.resumed") == 1
        await _assert_events_replay_to_the_database(client, run_id)


async def test_approve_racing_the_gates_timeout_one_decides_and_the_worker_goes_on(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    spec = _gated({"timeout_minutes": 60, "on_timeout": "fail"})
    run_ids = await _runs_at_their_gates(client, transactions, settings, spec)
    async with unit_of_work(sessions) as session:
        await session.execute(update(Gate).values(expires_at=utcnow() - timedelta(seconds=1)))
    approved = run_ids[::2]

    async with _working(Worker(transactions, settings)):
        answers = await asyncio.gather(
            *(client.post(f"/runs/{run_id}/approve", json={}) for run_id in approved)
        )
        ended = {run_id: await _ended(client, run_id) for run_id in run_ids}

        # The worker still expires gates: a gate opened after the race times out too.
        (later,) = await _runs_at_their_gates_now(client, spec)
        async with unit_of_work(sessions) as session:
            await session.execute(
                update(Gate)
                .where(Gate.status == "pending")
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        assert (await _ended(client, later))["status"] == "failed"

    for run_id in run_ids:
        gate = await _gate_of(client, run_id)
        answer = answers[approved.index(run_id)] if run_id in approved else None
        assert answer is None or answer.status_code in (200, 409), answer.text
        if answer is not None and answer.status_code == 200:
            assert (ended[run_id]["status"], gate["decided_by"]) == ("succeeded", "admin")
        else:
            assert (ended[run_id]["status"], gate["decided_by"]) == ("failed", "timeout")
        await _assert_events_replay_to_the_database(client, run_id)


async def _runs_at_their_gates_now(client: httpx.AsyncClient, spec: dict[str, Any]) -> list[str]:
    """A run submitted to the running worker, once it waits at its gate."""
    run_id = await _submit(client, spec)

    async def waiting() -> bool:
        return (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting"

    await _wait_for(waiting)
    return [run_id]


class Released:
    """Answers every call at once when released; counts the calls under way."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.calls += 1
        # A reply already on its way when the worker learns of a cancel still arrives.
        await asyncio.shield(self.release.wait())
        return await DemoProvider(0).complete(request)


async def test_cancel_racing_the_pass_that_finishes_the_run(
    transactions: Transactions,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    provider = Released()
    wide = settings.model_copy(update={"worker_concurrency": RACES})
    run_ids = [await _submit(client, ONE_NODE) for _ in range(RACES)]

    async with _working(Worker(transactions, wide, {"demo": provider})):

        async def all_running() -> bool:
            return provider.calls == RACES

        await _wait_for(all_running)

        async def release() -> None:
            provider.release.set()

        cancels = await asyncio.gather(
            release(), *(client.post(f"/runs/{run_id}/cancel") for run_id in run_ids)
        )
        ended = {run_id: await _ended(client, run_id) for run_id in run_ids}

    for run_id, cancel in zip(run_ids, cancels[1:], strict=True):
        assert cancel.status_code in (202, 409), cancel.text
        run = ended[run_id]
        if cancel.status_code == 202:
            assert run["status"] == "cancelled"
        else:
            assert cancel.json()["detail"].startswith("run is succeeded")
            assert (run["status"], run["cancel_requested_at"]) == ("succeeded", None)
        await _assert_events_replay_to_the_database(client, run_id)


async def test_cancel_racing_a_lease_taken_back(
    transactions: Transactions,
    sessions: SessionFactory,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    run_ids = [await _submit(client, ONE_NODE) for _ in range(RACES)]
    wide = settings.model_copy(update={"worker_concurrency": RACES})
    claimed = await transactions.run(
        passes.run_pass, [], worker="dead-worker", slots=RACES, settings=wide
    )
    assert len(claimed.claimed) == RACES
    async with unit_of_work(sessions) as session:
        await session.execute(update(Node).values(lease_expires_at=utcnow() - timedelta(seconds=1)))

    async def take_back() -> int:
        return await transactions.run(leases.take_back_expired_leases)

    answers = await asyncio.gather(
        take_back(), *(client.post(f"/runs/{run_id}/cancel") for run_id in run_ids)
    )
    await Worker(transactions, settings).drain()

    for run_id, cancel in zip(run_ids, answers[1:], strict=True):
        assert cancel.status_code == 202, cancel.text
        assert (await _ended(client, run_id))["status"] == "cancelled"
        nodes = await _nodes(client, run_id)
        assert nodes["draft"]["status"] == "cancelled"
        await _assert_events_replay_to_the_database(client, run_id)
