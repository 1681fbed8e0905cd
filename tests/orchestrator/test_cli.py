"""The CLI as a user runs it: a real process on a database of its own."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from apps.api.app import create_app
from apps.cli.task import _PlanPrinter, _watch
from apps.core.database import SessionFactory, Transactions, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.engine.submission import submit_task
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.worker.loop import Worker
from tests.conftest import API_KEY, process_env

CLI = [sys.executable, "-m", "apps.orchestrator.main"]


def _env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = {"DATABASE_URL": database_url, "ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    return process_env(**{**settings, "DEMO_LATENCY_MS": "0", **extra})


def _cli(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=tmp_path,
        env=_env(database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _read_api(settings: Settings, database_url: str, path: str) -> dict:
    app: FastAPI = create_app(settings.model_copy(update={"database_url": database_url}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": API_KEY}
        ) as client:
            return (await client.get(path)).json()


async def test_the_supervisor_plans_and_runs_a_report_to_its_assembled_document(
    migrated_database: str, tmp_path: Path, settings: Settings
) -> None:
    result = _cli(migrated_database, tmp_path, "--use-supervisor", "--title", "Rapport 80p")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(": Rapport 80p")
    assert lines[1].split()[:3] == ["outline", "planner", "demo:demo-1"]
    assert "Outline the document 'Rapport 80p'" in lines[1]
    assert "sections, review and assembly" in lines[2]
    assert "6 nodes done" not in "\n".join(lines[:4])
    grown = lines.index("the plan grows, from the outline:")
    assert [line.split()[0] for line in lines[grown + 1 : grown + 6]] == [
        "section-1", "section-2", "section-3", "review", "assemble",
    ]  # fmt: skip
    assert "Write the section '" in lines[grown + 1]
    assert lines.index("the plan grows, from the outline:") < next(
        number for number, line in enumerate(lines) if "6/6 nodes done" in line
    )
    assert "succeeded 6/6 nodes done" in result.stdout
    report = Path(lines[-1].removeprefix("succeeded; the result is "))
    assert report.name == "assemble.md"
    assembled = (tmp_path / report).read_text()
    assert assembled.startswith("# Rapport 80p\n")
    assert assembled.count("## Write the section") == 3
    runs = await _read_api(settings, migrated_database, "/runs")
    assert [(run["title"], run["status"], run["created_by"]) for run in runs["items"]] == [
        ("Rapport 80p", "succeeded", "cli")
    ]


async def test_no_wait_only_queues_the_run(
    migrated_database: str, tmp_path: Path, settings: Settings
) -> None:
    result = _cli(migrated_database, tmp_path, "--title", "Later", "--no-wait")

    assert result.returncode == 0, result.stderr
    runs = await _read_api(settings, migrated_database, "/runs")
    assert [run["status"] for run in runs["items"]] == ["queued"]


def test_a_bad_option_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    result = _cli("sqlite+aiosqlite:///unused.db", tmp_path, "--title", "X", "--sections", "0")

    assert result.returncode != 0
    assert result.stderr.startswith("error: invalid task: ")
    assert "Traceback" not in result.stderr


def _interrupt_once_running(database_url: str, tmp_path: Path) -> tuple[int, str]:
    """Start a slow run, press Ctrl-C while a node is running; the exit status and stderr."""
    with subprocess.Popen(
        [*CLI, "--title", "Slow"],
        cwd=tmp_path,
        env=_env(database_url, tmp_path, DEMO_LATENCY_MS="5000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as cli:
        assert cli.stdout is not None
        deadline = time.monotonic() + 60
        while "running: plan" not in (line := cli.stdout.readline()):
            if not line:
                pytest.fail("the CLI ended before it ran its plan")
            if time.monotonic() > deadline:
                pytest.fail("the CLI did not run its plan within 60 s")
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=30)
    return cli.returncode, stderr


async def test_ctrl_c_cancels_the_run(
    migrated_database: str, tmp_path: Path, settings: Settings
) -> None:
    status, stderr = await asyncio.to_thread(_interrupt_once_running, migrated_database, tmp_path)

    assert status == 130, stderr
    runs = await _read_api(settings, migrated_database, "/runs")
    (run,) = runs["items"]
    assert run["status"] == "cancelled"
    assert run["node_counts"]["cancelled"] >= 1
    assert run["node_counts"]["succeeded"] == 0


def test_help_documents_every_option(tmp_path: Path) -> None:
    result = _cli("sqlite+aiosqlite:///unused.db", tmp_path, "--help")
    for documented in ("--use-supervisor", "--provider", "--model", "--no-wait", "--database-url"):
        assert documented in result.stdout


async def test_nodes_that_joined_and_ran_between_two_looks_are_printed_before_the_end(
    transactions: Transactions,
    sessions: SessionFactory,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loaded machine can run the whole grown plan between the watch's look at the plan and
    its look at the run: the growth is printed all the same, before the final line."""
    task = TaskRequest.model_validate({"title": "Quick", "task_spec": {"type": "report"}})
    async with unit_of_work(sessions) as session:
        run_id = await submit_task(session, task, created_by="cli", settings=settings)
    worker = Worker(transactions, settings)

    class RunsEverythingRightAfterItsFirstLook(_PlanPrinter):
        looks = 0

        async def print_new(self, heading: str) -> None:
            await super().print_new(heading)
            self.looks += 1
            if self.looks == 2:  # the watch's first look saw the outline alone
                await worker.drain()

    plan = RunsEverythingRightAfterItsFirstLook(sessions, run_id)
    await plan.print_new("")
    run = await _watch(sessions, run_id, plan)

    lines = capsys.readouterr().out.splitlines()
    assert run.status == "succeeded"
    assert lines[1] == "the plan grows, from the outline:"
    assert lines[-1].startswith("succeeded 6/6 nodes done")
