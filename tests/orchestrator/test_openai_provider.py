"""The OpenAI-compatible provider against a real HTTP server on loopback."""

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.infra.providers.base import LLMRequest, ProviderError
from apps.orchestrator.infra.providers.openai_compatible import OpenAICompatibleProvider
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.worker.loop import Worker
from tests.chat_server import Script, chat_server
from tests.orchestrator.driving import run_to_the_end

KEY = "sk-test-never-leaks"


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def base_url(script: Script) -> Iterator[str]:
    with chat_server(script) as url:
        yield url


def _request(timeout: float = 5.0) -> LLMRequest:
    return LLMRequest(
        model="gpt-4o-mini", system="Be brief.", prompt="Say hi.", timeout_seconds=timeout
    )


async def test_an_answer_comes_back_with_its_usage(base_url: str, script: Script) -> None:
    script.replies.append(("answer", "Hi."))
    reply = await OpenAICompatibleProvider("openai", base_url, KEY, 5).complete(_request())

    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("Hi.", 12, 34)
    assert script.requests[0]["messages"][1] == {"role": "user", "content": "Say hi."}
    assert script.authorizations == [f"Bearer {KEY}"]


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (400, False)])
async def test_an_error_status_says_whether_to_retry_and_never_shows_the_key(
    base_url: str, script: Script, status: int, retryable: bool
) -> None:
    script.replies.append(("status", status))
    with pytest.raises(ProviderError) as failed:
        await OpenAICompatibleProvider("openai", base_url, KEY, 5).complete(_request())

    assert failed.value.retryable is retryable
    assert failed.value.message == f"openai: HTTP {status}: scripted {status}"
    assert KEY not in failed.value.message
    assert len(script.requests) == 1


async def test_a_slow_answer_times_out_as_retryable(base_url: str, script: Script) -> None:
    script.replies.append(("slow", 2.0))
    with pytest.raises(ProviderError) as failed:
        await OpenAICompatibleProvider("openai", base_url, KEY, 5).complete(_request(timeout=0.3))

    assert failed.value.retryable
    assert "no answer within 0.3s" in failed.value.message


async def test_an_unreachable_server_is_retryable() -> None:
    provider = OpenAICompatibleProvider("ollama", "http://127.0.0.1:9/v1", None, 5)
    with pytest.raises(ProviderError) as failed:
        await provider.complete(_request())
    assert failed.value.retryable
    assert failed.value.message.startswith("ollama: cannot connect")


def test_the_sdk_is_imported_at_the_first_call_not_before() -> None:
    """The API and a worker's providers are built without the SDK, which costs a process ~15 MB
    and ~0.3 s to import; a provider's first call imports it."""
    program = """
import asyncio, sys
import apps.api.app, apps.cli.worker
from apps.core.settings import load_settings
from apps.orchestrator.infra.providers.base import LLMRequest, ProviderError
from apps.orchestrator.worker.loop import default_providers

settings = load_settings(_env_file=None, ollama_base_url="http://127.0.0.1:9/v1")
provider = default_providers(settings)["ollama"]
before = "openai" in sys.modules
request = LLMRequest(model="m", system="s", prompt="p", timeout_seconds=5)
try:
    asyncio.run(provider.complete(request))
except ProviderError as error:
    print(before, "openai" in sys.modules, error.message.split(":")[0])
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True", "ollama"]


async def test_a_run_on_openai_retries_a_429_and_costs_what_the_price_table_says(
    transactions: Transactions,
    base_url: str,
    script: Script,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    script.replies.extend([("status", 429), ("status", 500)])
    on_openai = settings.model_copy(
        update={
            "llm_default_provider": "openai",
            "llm_default_model": "gpt-4o-mini",
            "openai_base_url": base_url,
        }
    )
    task = TaskRequest.model_validate(
        {
            "title": "One step",
            "task_spec": {
                "type": "dag",
                "nodes": [{"key": "draft", "role": "writer", "prompt": "Draft."}],
            },
        }
    )
    async with unit_of_work(sessions) as session:
        run_id = str(await submit_task(session, task, created_by="test", settings=on_openai))
    worker = Worker(transactions, on_openai)

    await run_to_the_end(worker, sessions, client, run_id)

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["usage"]["total_tokens"] == 46
    assert run["usage"]["cost"] == pytest.approx((12 * 0.15 + 34 * 0.60) / 1_000_000)
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    retries = [event["data"]["error"] for event in events if event["type"] == "node.retrying"]
    assert retries == ["openai: HTTP 429: scripted 429", "openai: HTTP 500: scripted 500"]
    (artifact,) = (await client.get(f"/runs/{run_id}/artifacts")).json()["items"]
    assert artifact["sidecar"]["provider"] == "openai"
    assert artifact["sidecar"]["attempt"] == 3


async def test_a_provider_error_echoing_the_key_is_stored_without_it(
    transactions: Transactions,
    base_url: str,
    script: Script,
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    script.replies.extend([("echo", 401)])
    on_openai = settings.model_copy(
        update={
            "llm_default_provider": "openai",
            "llm_default_model": "gpt-4o-mini",
            "openai_base_url": base_url,
            "openai_api_key": SecretStr(KEY),
        }
    )
    task = TaskRequest.model_validate(
        {
            "title": "Refused",
            "task_spec": {
                "type": "dag",
                "nodes": [{"key": "draft", "role": "writer", "prompt": "Draft."}],
            },
        }
    )
    async with unit_of_work(sessions) as session:
        run_id = str(await submit_task(session, task, created_by="test", settings=on_openai))

    run = await run_to_the_end(Worker(transactions, on_openai), sessions, client, run_id)

    assert script.authorizations == [f"Bearer {KEY}"]
    assert run["status"] == "failed"
    assert "HTTP 401: rejected Authorization: Bearer [redacted]" in run["error"]
    (node,) = (await client.get(f"/runs/{run_id}/nodes")).json()["items"]
    events = (await client.get("/events", params={"run_id": run_id})).json()["items"]
    for stored in (run["error"], node["error"], json.dumps(events)):
        assert KEY not in stored
