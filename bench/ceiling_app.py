"""The benchmark's app: the product app plus one route of the benchmark's own, `/bench/ceiling`.

`/bench/ceiling` answers a `Page[RunSummary]` of 50 runs built once at startup, behind the same
auth and app-wide dependencies as the product routes, without touching the database: the most a
list page can do on this stack, the yardstick `bench/read_api.py` measures `GET /runs` against.

The realistic run values served here (`fake_run`) are also what `bench/read_api.py` seeds the
database with, so the ceiling and the real pages carry the same kind of data.

Served by `bench/read_api.py` as `uvicorn --factory bench.ceiling_app:create_bench_app`, configured
by the service's usual environment variables (DATABASE_URL, API_KEY, ARTIFACTS_DIR, LOG_LEVEL).
"""

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from fastapi import Depends, FastAPI

from apps.api.app import create_app
from apps.api.auth import authenticate
from apps.api.timezone import use_request_timezone
from apps.core.settings import load_settings
from apps.orchestrator.model.states import NodeStatus, RunStatus
from apps.orchestrator.reading.runs import RUN_ORDER
from apps.wire.schemas import Page, RunSummary

CEILING_PATH = "/bench/ceiling"
CEILING_ITEMS = 50

_TASKS = (
    "Summarize the Q{q} earnings call of {org}",
    "Draft release notes for {org} {version}",
    "Triage {n} support tickets about {topic}",
    "Competitive analysis of {org} in {topic}",
    "Translate the {topic} onboarding guide to {lang}",
    "Review the {topic} incident postmortem for {org}",
    "Write a customer FAQ on {topic}",
    "Research {topic} regulations for {org} in {lang}-speaking markets",
)
_ORGS = ("Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Logistics", "Wayne Capital")
_TOPICS = ("billing", "data retention", "SSO", "pricing", "latency", "GDPR", "mobile checkout")
_LANGS = ("German", "French", "Japanese", "Spanish", "Portuguese")
_STEPS = (
    ("plan", "planner", "Break the task into research questions and an outline."),
    ("research", "researcher", "Collect sources for each question; cite every claim."),
    ("analyze", "analyst", "Compare the findings and list the open risks."),
    ("draft", "writer", "Write the deliverable from the outline and the analysis."),
    ("review", "reviewer", "Check the draft against the sources and flag errors."),
    ("edit", "editor", "Apply the review and tighten the prose to house style."),
)
_MODELS = (("openai", "gpt-4o-mini"), ("ollama", "llama3.1:8b"), ("demo", "demo-1"))
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost")
_CREATORS = ("admin", "ops-dashboard", "nightly-scheduler", "ci-bot")
# (nodes already finished, the current node, the nodes after it) for each run status.
_NODE_SHAPES = {
    RunStatus.QUEUED: (NodeStatus.PENDING, NodeStatus.PENDING, NodeStatus.PENDING),
    RunStatus.RUNNING: (NodeStatus.SUCCEEDED, NodeStatus.RUNNING, NodeStatus.PENDING),
    RunStatus.WAITING: (NodeStatus.SUCCEEDED, NodeStatus.WAITING_APPROVAL, NodeStatus.PENDING),
    RunStatus.SUCCEEDED: (NodeStatus.SUCCEEDED, NodeStatus.SUCCEEDED, NodeStatus.SUCCEEDED),
    RunStatus.FAILED: (NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED),
    RunStatus.CANCELLED: (NodeStatus.SUCCEEDED, NodeStatus.CANCELLED, NodeStatus.CANCELLED),
}
_FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
_UNSTARTED = frozenset({NodeStatus.PENDING, NodeStatus.READY})
_FINISHED = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.CANCELLED, NodeStatus.SKIPPED}
)


@dataclass(frozen=True, slots=True)
class FakeRun:
    """One run's row and its nodes' rows, column name to value as the ORM reads them."""

    run: dict[str, Any]
    nodes: list[dict[str, Any]]


def fake_uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def fake_title(rng: random.Random) -> str:
    return rng.choice(_TASKS).format(
        q=rng.randint(1, 4),
        org=rng.choice(_ORGS),
        version=f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}",
        n=rng.randint(5, 400),
        topic=rng.choice(_TOPICS),
        lang=rng.choice(_LANGS),
    )


def _node_statuses(rng: random.Random, status: RunStatus, count: int) -> list[NodeStatus]:
    if count == 0:
        return []
    done = count if status == RunStatus.SUCCEEDED else rng.randrange(count)
    head, current, tail = _NODE_SHAPES[status]
    return ([head] * done + [current] + [tail] * count)[:count]


@cache
def _planned_nodes(count: int) -> tuple[dict[str, Any], ...]:
    """The task spec's plan of `count` steps, each after the one before (shared, never mutated)."""
    plan = []
    for position in range(count):
        _, role, prompt = _STEPS[position % len(_STEPS)]
        deps = [_node_key(position - 1)] if position else []
        plan.append({"key": _node_key(position), "role": role, "prompt": prompt, "deps": deps})
    return tuple(plan)


def _node_key(position: int) -> str:
    key = _STEPS[position % len(_STEPS)][0]
    return key if position < len(_STEPS) else f"{key}-{position}"


def _task_spec(title: str, node_count: int) -> dict[str, Any]:
    nodes = list(_planned_nodes(node_count))
    return {
        "type": "dag",
        "title": title,
        "nodes": nodes,
        "inputs": {"audience": "internal", "max_words": 1200},
    }


def _node_times(
    rng: random.Random, created_at: datetime, position: int, status: NodeStatus
) -> dict[str, datetime | None]:
    ran = status not in _UNSTARTED and status != NodeStatus.SKIPPED
    started = created_at + timedelta(seconds=2 + 40 * position) if ran else None
    finished = None
    if status in _FINISHED:
        finished = (started or created_at) + timedelta(seconds=rng.uniform(3, 40))
    return {
        "created_at": created_at,
        "updated_at": finished or started or created_at,
        "started_at": started,
        "finished_at": finished,
    }


def _fake_node(
    rng: random.Random, run: dict[str, Any], position: int, status: NodeStatus
) -> dict[str, Any]:
    _, role, prompt = _STEPS[position % len(_STEPS)]
    provider, model = _MODELS[rng.randrange(len(_MODELS))]
    times = _node_times(rng, run["created_at"], position, status)
    return {
        "id": fake_uuid(rng),
        "run_id": run["id"],
        "key": _node_key(position),
        "position": position,
        "role": role,
        "prompt": prompt,
        "status": status,
        "attempt": 0 if times["started_at"] is None else 1,
        "max_attempts": 3,
        "timeout_seconds": 120.0,
        "provider": provider,
        "model": model,
        "gate": None,
        "error": "provider timeout after 120s" if status == NodeStatus.FAILED else None,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": None,
        **times,
    }


def _run_times(
    rng: random.Random, status: RunStatus, created_at: datetime
) -> dict[str, datetime | None]:
    started = None
    if status != RunStatus.QUEUED:
        started = created_at + timedelta(seconds=rng.uniform(1, 5))
    finished = None
    if started is not None and status in _FINAL_RUN:
        finished = started + timedelta(seconds=rng.uniform(30, 900))
    cancelled = status == RunStatus.CANCELLED and finished is not None
    return {
        "created_at": created_at,
        "updated_at": finished or started or created_at,
        "started_at": started,
        "finished_at": finished,
        "cancel_requested_at": finished - timedelta(seconds=1) if cancelled else None,
    }


def _usage(rng: random.Random, started_nodes: int) -> dict[str, Any]:
    prompt = int(started_nodes * (400 + 2600 * rng.random()))
    completion = int(started_nodes * (150 + 1050 * rng.random()))
    cost = round(prompt * 0.15e-6 + completion * 0.6e-6, 6)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": cost,
    }


def fake_run(
    rng: random.Random, created_at: datetime, status: RunStatus, node_count: int, title: str = ""
) -> FakeRun:
    """A run created at `created_at` in `status`, with `node_count` nodes consistent with it."""
    title = title or fake_title(rng)
    statuses = _node_statuses(rng, status, node_count)
    run: dict[str, Any] = {
        "id": fake_uuid(rng),
        "title": title,
        "status": status,
        "task_spec": _task_spec(title, node_count),
        "error": "node 'draft' failed after 3 attempts" if status == RunStatus.FAILED else None,
        "created_by": rng.choice(_CREATORS),
        **_run_times(rng, status, created_at),
        **_usage(rng, sum(s not in _UNSTARTED for s in statuses)),
    }
    nodes = [_fake_node(rng, run, i, s) for i, s in enumerate(statuses)]
    return FakeRun(run=run, nodes=nodes)


def _as_row(fake: FakeRun) -> dict[str, Any]:
    """The run as the list query returns it, node counts and usage as JSON text."""
    usage = {key: fake.run[key] for key in _USAGE_KEYS}
    return {
        **{key: value for key, value in fake.run.items() if key not in _USAGE_KEYS},
        "task_type": fake.run["task_spec"]["type"],
        "node_counts": json.dumps(Counter(node["status"].value for node in fake.nodes)),
        "usage": json.dumps(usage),
    }


def ceiling_page(count: int = CEILING_ITEMS) -> Page[RunSummary]:
    """`count` realistic runs, newest first, validated once into the response model."""
    rng = random.Random(count)
    now = datetime.now(UTC)
    statuses = list(RunStatus)
    fakes = [
        fake_run(rng, now - timedelta(minutes=5 * i), rng.choice(statuses), rng.randint(2, 6))
        for i in range(count)
    ]
    items = [RunSummary.model_validate(_as_row(fake)) for fake in fakes]
    last = items[-1]
    cursor = RUN_ORDER.cursor_of({"created_at": last.created_at, "id": last.id})
    return Page[RunSummary](items=items, next_cursor=cursor)


def create_bench_app() -> FastAPI:
    """The product app, configured from the environment, plus `/bench/ceiling`."""
    app = create_app(load_settings(_env_file=None))
    page = ceiling_page()

    # The product routes' own dependencies (the time zone is theirs, not the app's, since health
    # and metrics ignore it).
    checks = [Depends(authenticate), Depends(use_request_timezone)]

    @app.get(CEILING_PATH, dependencies=checks, include_in_schema=False)
    async def bench_ceiling() -> Page[RunSummary]:
        """The benchmark's ceiling: a pre-built page, no database."""
        return page

    return app
