"""POST /keys refuses a name that differs from a key's only in case: keys are addressed by name
(`/keys/{name}`, `crew keys revoke NAME`, the console's revoke) and runs and decisions record
theirs, so `ops` and `OPS` would be taken for each other. Two such creations at once: one wins."""

import asyncio

import httpx
import pytest

ROUNDS = 10


async def _create(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/keys", json={"name": name, "role": "viewer"})


async def test_a_name_differing_only_in_case_is_409_naming_the_key(
    client: httpx.AsyncClient,
) -> None:
    assert (await _create(client, "ops")).status_code == 201

    refused = await _create(client, "OPS")

    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "an API key named 'ops' already exists, and 'OPS' differs from it only in "
        "case; choose another name (names are compared ignoring case, and revoked keys keep "
        "theirs)"
    }
    names = [key["name"] for key in (await client.get("/keys")).json()["items"]]
    assert names == ["ops"]
    assert (await client.get("/keys/OPS")).status_code == 404


@pytest.mark.parametrize("cased", ["ops", "OPS"])
async def test_once_revoked_the_name_stays_taken_in_every_case(
    client: httpx.AsyncClient, cased: str
) -> None:
    await _create(client, "ops")
    assert (await client.post("/keys/ops/revoke")).status_code == 200

    refused = await _create(client, cased)

    assert refused.status_code == 409
    assert "named 'ops' already exists" in refused.json()["detail"]


async def test_two_creations_differing_only_in_case_at_once_make_one_key(
    client: httpx.AsyncClient,
) -> None:
    for round_ in range(ROUNDS):
        lower, upper = f"ops-{round_}", f"OPS-{round_}"

        answers = await asyncio.gather(_create(client, lower), _create(client, upper))

        assert sorted(answer.status_code for answer in answers) == [201, 409]
    names = [key["name"].casefold() for key in (await client.get("/keys")).json()["items"]]
    assert sorted(names) == sorted(f"ops-{round_}" for round_ in range(ROUNDS))
