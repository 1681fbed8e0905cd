"""Every value the client puts into a request's path is checked for what it names and
percent-encoded: an id such as `../keys/alice/revoke?` is refused before anything is sent,
instead of reaching another route with the caller's key."""

import inspect
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from crew_client import AsyncClient, Client, InvalidId

RUN = "5c1b2b6e-0000-4000-8000-000000000000"
# What an attacker or a slip of the keyboard passes as an id.
NOT_IDS = ["../keys/alice/revoke?", "..", ".", "", f"{RUN}?x=1", f"{RUN}/cancel", f"{RUN}#", " "]
NOT_KEY_NAMES = ["../runs", "..", "", "a/b", "a?b", "alice/revoke", ".hidden", "x" * 101]

# Each method that takes an id, called with `bad` where the id goes.
BAD_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "get_run": lambda crew, bad: crew.get_run(bad),
    "list_nodes": lambda crew, bad: crew.list_nodes(bad),
    "iter_nodes": lambda crew, bad: crew.iter_nodes(bad),
    "get_node": lambda crew, bad: crew.get_node(bad),
    "list_artifacts": lambda crew, bad: crew.list_artifacts(node_id=bad),
    "iter_artifacts": lambda crew, bad: crew.iter_artifacts(run_id=bad),
    "get_artifact": lambda crew, bad: crew.get_artifact(bad),
    "get_artifact_content": lambda crew, bad: crew.get_artifact_content(bad),
    "list_events": lambda crew, bad: crew.list_events(run_id=bad),
    "iter_events": lambda crew, bad: crew.iter_events(run_id=bad),
    "stream_events": lambda crew, bad: crew.stream_events(bad),
    "list_gates": lambda crew, bad: crew.list_gates(run_id=bad),
    "iter_gates": lambda crew, bad: crew.iter_gates(run_id=bad),
    "approve": lambda crew, bad: crew.approve(bad, notes="ok"),
    "reject": lambda crew, bad: crew.reject(bad, notes="no"),
    "cancel": lambda crew, bad: crew.cancel(bad),
    "resume": lambda crew, bad: crew.resume(bad),
}
BAD_KEY_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "get_key": lambda crew, bad: crew.get_key(bad),
    "revoke_key": lambda crew, bad: crew.revoke_key(bad),
}
NOT_AN_ID = r"is not an? (run|node|artifact) id \(a UUID\)"
# `create_key` sends its name in the body, where the API judges it: it is no path.
ID_PARAMETERS = {"run_id", "node_id", "artifact_id", "name"}


class Recorder:
    """A transport that records what would have been sent and answers 404."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(404, json={"detail": "not found"})


def _sync(recorder: Recorder) -> Client:
    return Client("http://crew.test/prefix", "key", transport=recorder.transport)


def _drain(result: Any) -> None:
    if inspect.isgenerator(result):
        list(result)


async def _adrain(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
    elif inspect.isasyncgen(result):
        async for _ in result:
            pass


def test_every_method_that_takes_an_id_is_checked_here() -> None:
    for client in (Client, AsyncClient):
        taking = {
            name
            for name, method in inspect.getmembers(client, inspect.isfunction)
            if not name.startswith("_")
            and ID_PARAMETERS & inspect.signature(method).parameters.keys()
        }
        assert taking - {"create_key"} == BAD_CALLS.keys() | BAD_KEY_CALLS.keys()


@pytest.mark.parametrize("method", sorted(BAD_CALLS))
@pytest.mark.parametrize("bad", NOT_IDS)
def test_an_id_that_is_not_a_uuid_sends_nothing(method: str, bad: str) -> None:
    recorder = Recorder()
    with _sync(recorder) as crew, pytest.raises(InvalidId, match=NOT_AN_ID):
        _drain(BAD_CALLS[method](crew, bad))
    assert recorder.sent == []


@pytest.mark.parametrize("method", sorted(BAD_CALLS))
async def test_the_async_client_checks_ids_too(method: str) -> None:
    recorder = Recorder()
    async with AsyncClient("http://crew.test", "key", transport=recorder.transport) as crew:
        with pytest.raises(InvalidId):
            await _adrain(BAD_CALLS[method](crew, "../keys/alice/revoke?"))
    assert recorder.sent == []


@pytest.mark.parametrize("method", sorted(BAD_KEY_CALLS))
@pytest.mark.parametrize("bad", NOT_KEY_NAMES)
def test_a_name_no_key_may_have_sends_nothing(method: str, bad: str) -> None:
    recorder = Recorder()
    with _sync(recorder) as crew, pytest.raises(InvalidId, match="is not a key name"):
        BAD_KEY_CALLS[method](crew, bad)
    assert recorder.sent == []


@pytest.mark.parametrize("method", sorted(BAD_KEY_CALLS))
async def test_the_async_client_checks_key_names_too(method: str) -> None:
    recorder = Recorder()
    async with AsyncClient("http://crew.test", "key", transport=recorder.transport) as crew:
        with pytest.raises(InvalidId):
            await BAD_KEY_CALLS[method](crew, "../runs")
    assert recorder.sent == []


def test_a_bad_id_is_a_value_error_naming_what_it_should_be() -> None:
    with _sync(Recorder()) as crew, pytest.raises(ValueError) as refused:
        crew.cancel("../keys/alice/revoke?")
    assert str(refused.value) == "'../keys/alice/revoke?' is not a run id (a UUID)"


def test_ids_are_sent_in_their_canonical_form_under_the_base_path() -> None:
    recorder = Recorder()
    compact = uuid.UUID(RUN).hex.upper()
    with _sync(recorder) as crew:
        for call in (
            lambda: crew.get_run(compact),
            lambda: crew.cancel(uuid.UUID(RUN)),
            lambda: crew.list_events(run_id=compact),
            lambda: list(crew.stream_events(compact)),
        ):
            with pytest.raises(Exception, match="not found"):
                call()
    assert [request.url.raw_path for request in recorder.sent] == [
        f"/prefix/runs/{RUN}".encode(),
        f"/prefix/runs/{RUN}/cancel".encode(),
        f"/prefix/events?run_id={RUN}".encode(),
        f"/prefix/runs/{RUN}/events/stream".encode(),
    ]


def test_key_names_are_percent_encoded_in_the_path() -> None:
    recorder = Recorder()
    with _sync(recorder) as crew:
        for call in (lambda: crew.get_key("ops@team"), lambda: crew.revoke_key("ci.bot-2_a")):
            with pytest.raises(Exception, match="not found"):
                call()
    assert [request.url.raw_path for request in recorder.sent] == [
        b"/prefix/keys/ops%40team",
        b"/prefix/keys/ci.bot-2_a/revoke",
    ]
