"""Input no database stores as sent (non-finite numbers, integers past 64 bits, NUL characters) is
a 422 naming where it is, on every route, and writes nothing."""

import tracemalloc
from typing import Any

import httpx
import pytest

from apps.api.errors import MAX_REPORTED_ERRORS
from apps.api.storable_input import unstorable_values
from apps.core.database import Transactions
from apps.core.settings import Settings
from tests.orchestrator.test_run_control import _waiting_at_its_gate

JSON = {"Content-Type": "application/json"}


async def _post_raw(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    return await client.post(path, content=body.encode(), headers=JSON)


async def _run_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/runs", params={"limit": 200})).json()["items"])


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"title":"t","task_spec":{"type":"demo","budget":{"max_cost":1e400}}}', "max_cost"),
        ('{"title":"t","task_spec":{"type":"demo","budget":{"max_cost":NaN}}}', "max_cost"),
        ('{"title":"t","task_spec":{"type":"report","budget":{"max_cost":Infinity}}}', "max_cost"),
        ('{"title":"t","task_spec":{"type":"demo","budget":{"max_tokens":1e999}}}', "max_tokens"),
        (
            '{"title":"t","task_spec":{"type":"demo","budget":{"max_tokens":99999999999999999999}}}',
            "max_tokens",
        ),
        ('{"title":"t","task_spec":{"type":"demo","budget":{"max_cost":-Infinity}}}', "max_cost"),
    ],
)
async def test_a_task_with_a_number_no_column_holds_is_a_422_naming_it(
    client: httpx.AsyncClient, body: str, where: str
) -> None:
    response = await _post_raw(client, "/tasks", body)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["loc"] == ["body", "task_spec", "budget", where]
    assert f"body task_spec.budget.{where}:" in response.json()["detail"]
    assert await _run_count(client) == 0


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"type": "demo"}, ["body", "title"]),
        ({"type": "report", "audience": "the b\x00ard"}, ["body", "task_spec", "audience"]),
        (
            {"type": "dag", "nodes": [{"key": "a", "role": "writer", "prompt": "Wr\x00te"}]},
            ["body", "task_spec", "nodes", 0, "prompt"],
        ),
    ],
)
async def test_text_with_a_nul_character_is_a_422_naming_the_field(
    client: httpx.AsyncClient, spec: dict[str, Any], loc: list[Any]
) -> None:
    title = "Quarterly\x00report" if loc == ["body", "title"] else "Quarterly report"
    response = await client.post("/tasks", json={"title": title, "task_spec": spec})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"loc": loc, "msg": "Text may not contain NUL characters (\\u0000)", "type": "string_nul"}
    ]
    assert await _run_count(client) == 0


async def test_every_problem_is_listed_in_document_order(client: httpx.AsyncClient) -> None:
    budget = '{"max_cost":NaN,"max_tokens":1e400}'
    body = '{"title":"a\\u0000","task_spec":{"type":"demo","budget":' + budget + "}}"
    response = await _post_raw(client, "/tasks", body)
    assert [error["loc"][-1] for error in response.json()["errors"]] == [
        "title",
        "max_cost",
        "max_tokens",
    ]


async def test_a_nul_in_a_key_of_an_object_is_refused(client: httpx.AsyncClient) -> None:
    body = '{"title":"t","task_spec":{"type":"demo","bud\\u0000get":{}}}'
    response = await _post_raw(client, "/tasks", body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "task_spec"]


async def test_a_deeply_nested_body_is_checked_without_exhausting_the_stack(
    client: httpx.AsyncClient,
) -> None:
    depth = 50_000
    body = '{"title":"t","task_spec":' + "[" * depth + "NaN" + "]" * depth + "}"
    response = await _post_raw(client, "/tasks", body)
    assert response.status_code in (400, 422)
    assert await _run_count(client) == 0


async def test_a_nul_in_a_query_parameter_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    for path in ("/runs?q=a%00b", "/events?type=run.%00", "/gates?status=pending%00"):
        response = await client.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["loc"][0] == "query"


async def test_a_decision_with_a_nul_in_its_notes_leaves_the_gate_waiting(
    client: httpx.AsyncClient, transactions: Transactions, settings: Settings
) -> None:
    run_id = await _waiting_at_its_gate(client, transactions, settings)
    for decision in ("approve", "reject"):
        response = await client.post(f"/runs/{run_id}/{decision}", json={"notes": "ok\x00"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "notes"]
    patch = '{"patch": {"score": Infinity}}'
    response = await _post_raw(client, f"/runs/{run_id}/approve", patch)
    assert response.json()["errors"][0]["loc"] == ["body", "patch", "score"]
    gates = (await client.get("/gates", params={"run_id": run_id})).json()["items"]
    assert [gate["status"] for gate in gates] == ["pending"]


async def test_without_a_key_the_answer_is_401_whatever_the_body(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as anonymous:
        response = await _post_raw(anonymous, "/tasks", '{"title":"t\\u0000"}')
    assert response.status_code == 401


async def test_a_flood_of_bad_values_is_answered_with_the_first_hundred(
    client: httpx.AsyncClient,
) -> None:
    """A body of 50,000 NaNs made a 422 listing 50,000 errors, many times the body's size."""
    body = '{"title":"t","task_spec":{"type":"demo","x":[' + ",".join(["NaN"] * 50_000) + "]}}"
    nodes = [{"key": "a", "role": "writer", "prompt": "p", "deps": ["Not A Key!"] * 400}]
    invalid_deps = {"title": "t", "task_spec": {"type": "dag", "nodes": nodes}}

    nans = await _post_raw(client, "/tasks", body)
    deps = await client.post("/tasks", json=invalid_deps)

    assert (nans.status_code, deps.status_code) == (422, 422)
    assert len(nans.json()["errors"]) == len(deps.json()["errors"]) == MAX_REPORTED_ERRORS
    assert deps.json()["detail"].endswith("; and 300 more problems like these")
    assert len(nans.content) + len(deps.content) < 50_000
    assert await _run_count(client) == 0


async def test_a_flood_of_unknown_fields_is_one_error(client: httpx.AsyncClient) -> None:
    flood = {f"field{index}": 0 for index in range(100_000)}
    small_flood = {f"field{index}": 0 for index in range(3_000)}
    for path, body, count in [
        ("/tasks", {"title": "t", "task_spec": {"type": "demo"}, **flood}, "100,000"),
        ("/tasks", {"title": "t", "task_spec": {"type": "demo", **flood}}, "100,000"),
        ("/runs/00000000-0000-0000-0000-000000000000/reject", small_flood, "3,000"),
    ]:
        response = await client.post(path, json=body)
        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert f"{count} unknown fields, such as 'field0'" in error["msg"]


def test_walking_a_body_of_a_million_values_allocates_nothing_per_value() -> None:
    body = {"title": "t", "task_spec": {"type": "demo", "values": [0.5] * 1_000_000}}
    tracemalloc.start()
    try:
        problems = list(unstorable_values(body, ("body",)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == []
    assert peak < 100_000
