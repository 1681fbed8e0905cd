"""Plan and run a task from the command line, into the same database the API reads.

    python -m apps.orchestrator.main --use-supervisor --title "Rapport 80p"

prints the plan, runs it with a worker in this process (other workers on the database may take
nodes too), shows progress, and exits 0 when the run succeeds or 1 with the reason when it does
not. Ctrl-C cancels the run. A report's plan starts as the Supervisor's outline node; the nodes
the outline adds (a writer per section, the review, the assembly) are printed when they join it.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from typing import Any

from sqlalchemy import func, select

from apps.cli.startup import StartupError, check_can_start, invoked_as, load_checked_settings
from apps.core.database import Database, SessionFactory, open_database, unit_of_work
from apps.core.settings import Settings, SettingsError
from apps.core.supervision import start_supervised
from apps.orchestrator.control.run_control import request_cancel
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.infra.storage import open_artifact_store
from apps.orchestrator.model.models import Artifact, Node, Run
from apps.orchestrator.model.states import RUN_TERMINAL, NodeStatus, RunStatus
from apps.orchestrator.plans.planning import OUTLINE_KEY
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.worker.loop import Worker

PROGRESS_SECONDS = 0.5
# What a node's line shows of its prompt: enough for a section's title.
PROMPT_SHOWN = 72
_GROWING = "the plan grows, from the outline:"
# How long Ctrl-C waits for the calls in flight to stop before giving up on a clean end.
CANCEL_WAIT_SECONDS = 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=invoked_as("crew-task", "apps.orchestrator.main"),
        description="Plan a task, run it and show its progress.",
    )
    parser.add_argument("--title", required=True, help="what the task is about")
    parser.add_argument(
        "--use-supervisor",
        action="store_true",
        help="let the Supervisor plan a report (outline, sections, review, assembly); "
        "without it the task is the small demo plan",
    )
    parser.add_argument("--sections", type=int, help="sections of the report or demo")
    parser.add_argument("--provider", choices=("demo", "openai", "ollama"), help="default provider")
    parser.add_argument("--model", help="default model")
    parser.add_argument("--database-url", help="database to use (default: DATABASE_URL)")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="only plan and queue the run; the API's or `make worker`'s workers run it",
    )
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "llm_default_provider": args.provider,
        "llm_default_model": args.model,
        "database_url": args.database_url,
    }
    return load_checked_settings(
        **{key: value for key, value in overrides.items() if value is not None}
    )


def _task(args: argparse.Namespace) -> TaskRequest:
    spec: dict[str, Any] = {"type": "report" if args.use_supervisor else "demo"}
    if args.sections is not None:
        spec["sections"] = args.sections
    return TaskRequest.model_validate({"title": args.title, "task_spec": spec})


PlannedRow = tuple[str, str, str, str]


async def _plan(sessions: SessionFactory, run_id: uuid.UUID) -> list[PlannedRow]:
    """The run's nodes in plan order: key, role, agent, prompt."""
    async with sessions() as session:
        rows = await session.execute(
            select(Node.key, Node.role, Node.provider + ":" + Node.model, Node.prompt)
            .where(Node.run_id == run_id)
            .order_by(Node.position)
        )
        return [(key, role, agent, prompt) for key, role, agent, prompt in rows]


def _print_nodes(rows: list[PlannedRow]) -> None:
    for key, role, agent, prompt in rows:
        shown = prompt if len(prompt) <= PROMPT_SHOWN else prompt[: PROMPT_SHOWN - 1] + "…"
        print(f"  {key:<12} {role:<10} {agent:<16} {shown}", flush=True)


class _PlanPrinter:
    """Prints the nodes of the run's plan not printed yet: the plan as it grows."""

    def __init__(self, sessions: SessionFactory, run_id: uuid.UUID) -> None:
        self.sessions, self.run_id = sessions, run_id
        self.shown: set[str] = set()

    async def print_new(self, heading: str) -> None:
        fresh = [row for row in await _plan(self.sessions, self.run_id) if row[0] not in self.shown]
        if fresh:
            if heading:
                print(heading, flush=True)
            _print_nodes(fresh)
            self.shown.update(row[0] for row in fresh)


async def _progress(sessions: SessionFactory, run_id: uuid.UUID) -> tuple[Run, str]:
    async with sessions() as session:
        run = await session.get_one(Run, run_id, populate_existing=True)
        counts = dict(
            (
                await session.execute(
                    select(Node.status, func.count())
                    .where(Node.run_id == run_id)
                    .group_by(Node.status)
                )
            ).all()
        )
        running = (
            await session.scalars(
                select(Node.key).where(Node.run_id == run_id, Node.status == NodeStatus.RUNNING)
            )
        ).all()
    done = counts.get(NodeStatus.SUCCEEDED, 0)
    line = (
        f"{run.status:<9} {done}/{sum(counts.values())} nodes done"
        f" | running: {', '.join(running) or '-'}"
        f" | {run.total_tokens} tokens, ${run.cost:.6f}"
    )
    return run, line


async def _final_artifact(sessions: SessionFactory, run_id: uuid.UUID) -> str | None:
    async with sessions() as session:
        return await session.scalar(
            select(Artifact.storage_key)
            .where(Artifact.run_id == run_id)
            .order_by(Artifact.created_at.desc())
            .limit(1)
        )


async def _watch(sessions: SessionFactory, run_id: uuid.UUID, plan: _PlanPrinter) -> Run:
    last = ""
    while True:
        await plan.print_new(_GROWING)
        run, line = await _progress(sessions, run_id)
        if run.status in RUN_TERMINAL:
            # What joined the plan and ran between the two looks, all within one tick.
            await plan.print_new(_GROWING)
        if line != last:
            print(line, flush=True)
            last = line
        if run.status in RUN_TERMINAL:
            return run
        await asyncio.sleep(PROGRESS_SECONDS)


async def run_task(task: TaskRequest, settings: Settings, *, wait: bool) -> int:
    """Submit `task`, print its plan and, if `wait`, run it to the end; the exit status."""
    async with open_database(settings) as database:
        sessions = database.sessions
        async with unit_of_work(sessions) as session:
            run_id = await submit_task(session, task, created_by="cli", settings=settings)
        print(f"run {run_id}: {task.title}")
        plan = _PlanPrinter(sessions, run_id)
        await plan.print_new("")
        if plan.shown == {OUTLINE_KEY}:
            print("  (the Supervisor outlines the report first; its sections, review and assembly")
            print("   join the plan when the outline is written)", flush=True)
        if not wait:
            return 0
        return await _execute(database, settings, run_id, plan)


async def _execute(
    database: Database, settings: Settings, run_id: uuid.UUID, plan: _PlanPrinter
) -> int:
    sessions = database.sessions
    worker = Worker(database.transactions, settings)
    working = start_supervised("worker", worker.run)
    watching = asyncio.create_task(_watch(sessions, run_id, plan))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, watching.cancel)
    try:
        run = await watching
    except asyncio.CancelledError:
        loop.remove_signal_handler(signal.SIGINT)
        print("cancelling: the calls in flight are being stopped", file=sys.stderr)
        await database.transactions.run(request_cancel, run_id, by="cli")
        async with asyncio.timeout(CANCEL_WAIT_SECONDS):
            run = await _watch(sessions, run_id, plan)
        print(run.status, file=sys.stderr)
        return 130
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
    if run.status is RunStatus.SUCCEEDED:
        final = await _final_artifact(sessions, run_id)
        where = open_artifact_store(settings).location(final) if final else None
        print(f"succeeded; the result is {where}" if where else "succeeded")
        return 0
    print(f"{run.status}: {run.error}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = _settings(args)
        task = _task(args)
        check_can_start(settings)
    except (SettingsError, StartupError) as error:
        sys.exit(f"error: {error}")
    except ValueError as error:
        sys.exit(f"error: invalid task: {error}")
    sys.exit(asyncio.run(run_task(task, settings, wait=not args.no_wait)))


if __name__ == "__main__":
    main()
