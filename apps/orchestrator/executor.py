"""Executors: one node's LLM call, its artifact file and the sidecar of LLM metadata beside it."""

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from apps.orchestrator.models import utcnow
from apps.orchestrator.planning import OUTLINE_KEY, Outline
from apps.orchestrator.providers.base import LLMReply, LLMRequest, Provider

SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".sidecar.json"

SYSTEM_PROMPTS = {
    "planner": "You plan work for a team of agents. Be concrete and brief.",
    "researcher": "You collect facts and cite their sources.",
    "writer": "You write clear, well-structured Markdown.",
    "reviewer": "You review drafts for accuracy, gaps and overlap, and say what to change.",
    "editor": "You edit text for clarity and consistency without changing its meaning.",
    "analyst": "You analyse data and state findings with their evidence.",
    "assembler": "You assemble parts into one coherent document in Markdown.",
}


@dataclass(frozen=True, slots=True)
class NodeWork:
    """What a claimed node needs to run, read when it was claimed."""

    node_id: uuid.UUID
    run_id: uuid.UUID
    run_title: str
    key: str
    role: str
    prompt: str
    provider: str
    model: str
    attempt: int
    max_attempts: int
    timeout_seconds: float
    upstream: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """A finished call's artifact as written to the store, with its sidecar."""

    name: str
    media_type: str
    storage_key: str
    size: int
    sha256: str
    sidecar: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost: float


def build_request(work: NodeWork) -> LLMRequest:
    """The call for `work`: its prompt, with its dependencies' outputs as context."""
    prompt = f"Task: {work.run_title}\n\n{work.prompt}"
    for key, text in work.upstream:
        prompt += f"\n\n### Output of {key}\n\n{text}"
    schema = Outline.model_json_schema() if work.key == OUTLINE_KEY else None
    if schema:
        prompt += "\n\nAnswer with JSON only, matching this schema:\n" + json.dumps(schema)
    return LLMRequest(
        model=work.model,
        system=SYSTEM_PROMPTS.get(work.role, SYSTEM_PROMPTS["writer"]),
        prompt=prompt,
        timeout_seconds=work.timeout_seconds,
        json_schema=schema,
        role=work.role,
        context=work.upstream,
    )


async def call_agent(provider: Provider, request: LLMRequest) -> tuple[LLMReply, float, datetime]:
    """The provider's reply, the call's latency in milliseconds and when it started."""
    started_at = utcnow()
    clock = time.perf_counter()
    reply = await provider.complete(request)
    return reply, (time.perf_counter() - clock) * 1000, started_at


def write_output(
    root: Path,
    work: NodeWork,
    request: LLMRequest,
    reply: LLMReply,
    *,
    latency_ms: float,
    started_at: datetime,
    cost: float,
) -> NodeOutput:
    """Write the artifact and its sidecar under `root/<run>/<node>/` and describe them.

    The path depends only on the run, the node and its key, so a retried attempt overwrites the
    files of one that died before it was recorded instead of leaving a second copy.
    """
    is_json = request.json_schema is not None
    name = f"{work.key}.json" if is_json else f"{work.key}.md"
    storage_key = f"{work.run_id}/{work.node_id}/{name}"
    content = reply.text.encode()
    sidecar = {
        "version": SIDECAR_VERSION,
        "run_id": str(work.run_id),
        "node_id": str(work.node_id),
        "attempt": work.attempt,
        "provider": work.provider,
        "model": work.model,
        "latency_ms": round(latency_ms, 3),
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
        "cost": cost,
        "prompts": {"system": request.system, "user": request.prompt},
        "timestamps": {"started_at": started_at.isoformat(), "finished_at": utcnow().isoformat()},
    }
    path = root / storage_key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.with_name(name + SIDECAR_SUFFIX).write_text(json.dumps(sidecar, indent=2))
    return NodeOutput(
        name=name,
        media_type="application/json" if is_json else "text/markdown",
        storage_key=storage_key,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        sidecar=sidecar,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        cost=cost,
    )


def remove_output(root: Path, output: NodeOutput) -> None:
    """Take back files whose node could not be recorded as succeeded (it ended meanwhile)."""
    path = root / output.storage_key
    path.unlink(missing_ok=True)
    path.with_name(output.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
