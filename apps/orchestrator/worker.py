"""The worker: runs the Manager's loop and executes claimed nodes with their agents.

It runs inside the API process by default (the lifespan starts and stops it) or on its own
(`python -m apps.orchestrator.worker`, `make worker`). Several may share one database: nodes are
claimed under a lease the worker's heartbeat renews, and a node whose worker died is taken back
when its lease expires and retried.
"""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apps.core.database import (
    SessionFactory,
    create_engine,
    create_session_factory,
    unit_of_work,
)
from apps.core.errors import InvalidTransition
from apps.core.settings import Settings, SettingsError, load_settings
from apps.orchestrator import scheduling
from apps.orchestrator.artifact_store import LocalArtifactStore
from apps.orchestrator.executor import (
    NodeWork,
    build_request,
    call_agent,
    remove_output,
    write_output,
)
from apps.orchestrator.models import Artifact, Node, NodeDependency, Run
from apps.orchestrator.planning import (
    OUTLINE_KEY,
    InvalidOutline,
    Outline,
    parse_outline,
    plan_report_body,
)
from apps.orchestrator.providers.base import Provider, ProviderError
from apps.orchestrator.providers.demo import DemoProvider
from apps.orchestrator.providers.openai_compatible import OpenAICompatibleProvider
from apps.orchestrator.submission import add_plan

logger = logging.getLogger(__name__)

IDLE_SECONDS = 0.5
BUSY_SECONDS = 0.02


def default_providers(settings: Settings) -> dict[str, Provider]:
    """The providers a worker offers, configured by the settings."""
    openai_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    timeout = settings.llm_timeout_seconds
    return {
        "demo": DemoProvider(settings.demo_latency_ms / 1000),
        "openai": OpenAICompatibleProvider("openai", settings.openai_base_url, openai_key, timeout),
        "ollama": OpenAICompatibleProvider("ollama", settings.ollama_base_url, None, timeout),
    }


class Worker:
    """Starts queued runs, dispatches ready nodes, runs them and finishes runs, until stopped."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.providers = providers if providers is not None else default_providers(settings)
        self.store = LocalArtifactStore(settings.artifacts_dir)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Look for work now (a task was submitted in this process)."""
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled; in-flight nodes are handed back as ready when it stops."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                found = await self.step()
                await self._pause(BUSY_SECONDS if found or self._tasks else IDLE_SECONDS)
        finally:
            heartbeat.cancel()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(heartbeat, *self._tasks.values(), return_exceptions=True)

    async def step(self) -> bool:
        """One pass of the Manager's loop; whether it found anything to do."""
        async with unit_of_work(self.sessions) as session:
            changed = await scheduling.start_queued_runs(session)
            changed += await scheduling.stop_runs_over_budget(session)
            changed += await scheduling.promote_ready_nodes(session)
        for node_id in await self._claim():
            self._tasks[node_id] = asyncio.create_task(self._execute(node_id))
            self._tasks[node_id].add_done_callback(lambda _, key=node_id: self._tasks.pop(key))
            changed += 1
        async with unit_of_work(self.sessions) as session:
            changed += await scheduling.finish_runs(session)
        return changed > 0

    async def drain(self) -> None:
        """Step until nothing is left to do and no node is running (for the CLI and tests)."""
        while await self.step() or self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _heartbeat(self) -> None:
        lease = self.settings.lease_seconds
        while True:
            async with unit_of_work(self.sessions) as session:
                await scheduling.renew_leases(session, worker=self.name, lease_seconds=lease)
                await scheduling.take_back_expired_leases(session)
            await asyncio.sleep(lease / 3)

    async def _claim(self) -> list[uuid.UUID]:
        slots = self.settings.worker_concurrency - len(self._tasks)
        if slots <= 0:
            return []
        async with unit_of_work(self.sessions) as session:
            return await scheduling.claim_ready_nodes(
                session,
                worker=self.name,
                slots=slots,
                per_run=self.settings.run_concurrency,
                lease_seconds=self.settings.lease_seconds,
            )

    async def _execute(self, node_id: uuid.UUID) -> None:
        work = await self._load(node_id)
        try:
            await self._attempt(work)
        except asyncio.CancelledError:
            await self._end(work, "the worker stopped", retryable=True, cause="worker_stopped")
            raise
        except Exception as error:
            logger.exception("node %s of run %s failed unexpectedly", work.key, work.run_id)
            await self._end(work, f"unexpected error: {error}", retryable=False, cause="error")

    async def _attempt(self, work: NodeWork) -> None:
        provider = self.providers.get(work.provider)
        if provider is None:
            await self._end(
                work, f"provider {work.provider!r} is not set up", retryable=False, cause="config"
            )
            return
        request = build_request(work)
        try:
            async with asyncio.timeout(work.timeout_seconds):
                reply, latency_ms, started_at = await call_agent(provider, request)
        except TimeoutError:
            message = f"no answer within {work.timeout_seconds:g}s"
            await self._end(work, message, retryable=True, cause="timeout")
            return
        except ProviderError as error:
            await self._end(work, error.message, retryable=error.retryable, cause="provider")
            return
        outline = None
        if work.key == OUTLINE_KEY:
            try:
                outline = parse_outline(reply.text)
            except InvalidOutline as error:
                message = f"the planner's outline is invalid: {error}"
                await self._end(work, message, retryable=True, cause="invalid_outline")
                return
        cost = self.settings.cost_of(
            work.provider, work.model, reply.prompt_tokens, reply.completion_tokens
        )
        output = write_output(
            self.store.root,
            work,
            request,
            reply,
            latency_ms=latency_ms,
            started_at=started_at,
            cost=cost,
        )
        try:
            async with unit_of_work(self.sessions) as session:
                node = await session.get_one(Node, work.node_id)
                await scheduling.record_success(session, node, output)
                if outline is not None:
                    await self._expand_report(session, work, outline)
        except InvalidTransition:
            remove_output(self.store.root, output)
            logger.info(
                "node %s of run %s ended meanwhile; its output is dropped", work.key, work.run_id
            )

    async def _expand_report(self, session: AsyncSession, work: NodeWork, outline: Outline) -> None:
        """Plan a report's sections, review and assembly once its outline is in."""
        last = await session.scalar(
            select(func.max(Node.position)).where(Node.run_id == work.run_id)
        )
        add_plan(
            session,
            work.run_id,
            plan_report_body(work.run_title, outline),
            self.settings,
            first_position=(last or 0) + 1,
            planned_before={OUTLINE_KEY: work.node_id},
        )

    async def _end(self, work: NodeWork, message: str, *, retryable: bool, cause: str) -> None:
        with contextlib.suppress(InvalidTransition):
            async with unit_of_work(self.sessions) as session:
                node = await session.get_one(Node, work.node_id)
                await scheduling.end_attempt(
                    session, node, message, retryable=retryable, cause=cause
                )

    async def _load(self, node_id: uuid.UUID) -> NodeWork:
        async with self.sessions() as session:
            node = await session.get_one(Node, node_id)
            title = await session.scalar(select(Run.title).where(Run.id == node.run_id))
            upstream = await session.execute(
                select(Node.key, Artifact.storage_key)
                .join(NodeDependency, NodeDependency.depends_on_id == Node.id)
                .join(Artifact, Artifact.node_id == Node.id)
                .where(NodeDependency.node_id == node_id)
                .order_by(Node.position, Artifact.created_at)
            )
            outputs = tuple(
                (key, self.store.path_for(storage_key).read_text()) for key, storage_key in upstream
            )
        return NodeWork(
            node_id=node.id,
            run_id=node.run_id,
            run_title=title or "",
            key=node.key,
            role=node.role,
            prompt=node.prompt,
            provider=node.provider,
            model=node.model,
            attempt=node.attempt,
            max_attempts=node.max_attempts,
            timeout_seconds=node.timeout_seconds or self.settings.llm_timeout_seconds,
            upstream=outputs,
        )


async def serve(settings: Settings) -> None:
    """Run one worker process until SIGINT or SIGTERM, then hand its nodes back."""
    engine = create_engine(settings)
    worker = Worker(create_session_factory(engine), settings)
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop, task.cancel)
    logger.info("worker %s started", worker.name)
    try:
        await task
    except asyncio.CancelledError:
        logger.info("worker %s stopped", worker.name)
    finally:
        await engine.dispose()


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
