"""Small async factories for the read tests; keyword arguments override any column."""

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from apps.orchestrator.model.models import Artifact, Event, Node, NodeDependency, Run, utcnow
from apps.orchestrator.model.states import NodeStatus, RunStatus


async def create_run(session: AsyncSession, **overrides: Any) -> Run:
    run = Run(
        **{
            "title": "Quarterly report",
            "status": RunStatus.QUEUED,
            "task_spec": {"type": "demo"},
            **overrides,
        }
    )
    session.add(run)
    await session.flush()
    return run


async def create_node(session: AsyncSession, run: Run, **overrides: Any) -> Node:
    node = Node(
        **{
            "run_id": run.id,
            "key": "write",
            "position": 0,
            "role": "writer",
            "prompt": "Write the introduction.",
            "status": NodeStatus.PENDING,
            "provider": "demo",
            "model": "demo-1",
            **overrides,
        }
    )
    session.add(node)
    await session.flush()
    return node


async def add_dependency(session: AsyncSession, node: Node, upstream: Node) -> None:
    session.add(NodeDependency(node_id=node.id, depends_on_id=upstream.id))
    await session.flush()


async def create_artifact(
    session: AsyncSession,
    node: Node,
    artifacts_dir: Path,
    content: bytes = b"# Introduction\n",
    **overrides: Any,
) -> Artifact:
    """An artifact row and, unless `storage_key` is overridden, its file under `artifacts_dir`."""
    name = overrides.pop("name", "introduction.md")
    storage_key = overrides.pop("storage_key", None)
    if storage_key is None:
        storage_key = f"{node.run_id}/{node.id}/{name}"
        path = artifacts_dir / storage_key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    artifact = Artifact(
        **{
            "run_id": node.run_id,
            "node_id": node.id,
            "name": name,
            "media_type": "text/markdown",
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "storage_key": storage_key,
            "sidecar": {"version": 1, "provider": node.provider, "model": node.model},
            **overrides,
        }
    )
    session.add(artifact)
    await session.flush()
    return artifact


async def create_event(session: AsyncSession, run: Run, **overrides: Any) -> Event:
    event = Event(**{"run_id": run.id, "type": "run.created", "data": {}, **overrides})
    session.add(event)
    await session.flush()
    return event


def minutes_ago(minutes: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(minutes=minutes)
