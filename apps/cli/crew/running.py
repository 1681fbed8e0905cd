"""The commands that start and steer runs: submit, watch, cancel and resume."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from apps.cli.crew import files, output
from apps.cli.crew.app import (
    EXIT_INTERRUPTED,
    Json,
    RunArg,
    app,
    client_of,
    speaking_errors,
    usage_error,
)
from apps.cli.crew.watching import watch as watch_run
from crew_client import Client


def _spec_of(demo: bool, report: bool, sections: int | None, spec: Path | None) -> dict[str, Any]:
    if demo + report + (spec is not None) != 1:
        raise usage_error("give one of --demo, --report or --spec FILE")
    if spec is not None:
        return files.read_spec(spec)
    task: dict[str, Any] = {"type": "demo" if demo else "report"}
    if sections is not None:
        task["sections"] = sections
    return task


@app.command()
def submit(
    context: typer.Context,
    title: Annotated[str, typer.Option(help="The run's title.", show_default=False)],
    demo: Annotated[bool, typer.Option("--demo", help="The small demo task.")] = False,
    report: Annotated[bool, typer.Option("--report", help="A planned report.")] = False,
    sections: Annotated[
        int | None, typer.Option(min=1, help="Sections (parallel writers).")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="A task spec file, JSON or YAML.", show_default=False)
    ] = None,
    then_watch: Annotated[bool, typer.Option("--watch", help="Watch it until it ends.")] = False,
    as_json: Json = False,
) -> None:
    """Submit a task; with --watch, follow its run to the end (exit 0, 1 or 2 as `watch`)."""
    client = client_of(context)
    with speaking_errors():
        task = _spec_of(demo, report, sections, spec)
        run = client.submit_task(title, task)
    if as_json:
        output.as_json(run)
    else:
        output.console.print(f"submitted run {run.id}", markup=False, highlight=False)
    if then_watch:
        _watch(client, str(run.id))


def _watch(client: Client, run_id: str) -> None:
    with speaking_errors():
        try:
            status = watch_run(client, run_id)
        except KeyboardInterrupt:
            output.fail(f"stopped watching; run {run_id} keeps running")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(status)


@app.command()
def watch(context: typer.Context, run_id: RunArg) -> None:
    """Follow a run live until it ends (exit 0 succeeded, 1 failed, 2 cancelled); Ctrl-C stops
    watching, the run goes on."""
    _watch(client_of(context), run_id)


def _control(context: typer.Context, act: Callable[[Client], Any], what: str) -> None:
    with speaking_errors():
        run = act(client_of(context))
    output.console.print(f"{what} run {run.id}: {run.status}", markup=False, highlight=False)


@app.command()
def cancel(context: typer.Context, run_id: RunArg) -> None:
    """Cancel a run: nothing new starts, calls in flight are stopped."""
    _control(context, lambda client: client.cancel(run_id), "cancelling")


@app.command()
def resume(context: typer.Context, run_id: RunArg) -> None:
    """Resume a failed or cancelled run from where it stopped."""
    _control(context, lambda client: client.resume(run_id), "resumed")
