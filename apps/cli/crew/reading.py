"""The commands that read: runs, a run, its nodes and events, an artifact's content."""

import json
from pathlib import Path
from typing import Annotated

import typer

from apps.cli.crew import files, output
from apps.cli.crew.app import Json, RunArg, app, client_of, speaking_errors, usage_error
from apps.wire.event_types import event_types_named
from crew_client import RunStatus


@app.command()
def runs(
    context: typer.Context,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    search: Annotated[str | None, typer.Option(help="Only titles containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """List runs, newest first."""
    with speaking_errors():
        page = client_of(context).list_runs(status=status, q=search, limit=limit)
    columns = {
        "id": "id",
        "status": "status",
        "title": "title",
        "created": "created_at",
        "tokens": "usage.total_tokens",
        "by": "created_by",
    }
    output.listing(page, columns, json=as_json)


@app.command()
def show(context: typer.Context, run_id: RunArg, as_json: Json = False) -> None:
    """One run: its status, node counts, usage and error."""
    with speaking_errors():
        run = client_of(context).get_run(run_id)
    if as_json:
        output.as_json(run)
        return
    counts = ", ".join(f"{name} {n}" for name, n in run.node_counts.model_dump().items() if n)
    output.fields(
        [
            ("id", run.id),
            ("title", run.title),
            ("status", run.status),
            ("type", run.task_type),
            ("created", run.created_at),
            ("started", run.started_at),
            ("finished", run.finished_at),
            ("nodes", counts or "-"),
            ("tokens", f"{run.usage.total_tokens:,}"),
            ("cost", f"{run.usage.cost:.4f}"),
            ("error", run.error),
        ]
    )


@app.command()
def nodes(context: typer.Context, run_id: RunArg, as_json: Json = False) -> None:
    """A run's nodes in plan order."""
    with speaking_errors():
        found = list(client_of(context).iter_nodes(run_id))
    columns: dict[str, output.Column] = {
        "key": "key",
        "role": "role",
        "status": "status",
        "deps": lambda node: ",".join(node.deps) or "-",
        "attempt": "attempt",
        "error": "error",
    }
    output.listing(found, columns, json=as_json)


@app.command()
def events(
    context: typer.Context,
    run_id: RunArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events live until the run ends.")
    ] = False,
    types: Annotated[
        str | None,
        typer.Option(
            "--type", help="Only events of these types, comma-separated (node.failed,run.failed)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """A run's events in order; with --follow, live until the run ends."""
    try:
        wanted = event_types_named(types) if types else []
    except ValueError as error:
        raise usage_error(str(error)) from None
    client = client_of(context)
    with speaking_errors():
        if follow:
            stream = client.stream_events(run_id)
        else:
            stream = client.iter_events(run_id=run_id, types=wanted)
        for event in stream:
            # The streams send every type: a followed run's are picked here.
            if wanted and event.type not in wanted:
                continue
            if as_json:
                output.json_line(event)
                continue
            data = json.dumps(event.data, separators=(",", ":")) if event.data else ""
            node = f" {event.node_id}" if event.node_id else ""
            output.console.print(
                f"{event.id} {output.cell(event.ts)} {event.type}{node} {data}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def artifact(
    context: typer.Context,
    artifact_id: Annotated[str, typer.Argument(help="The artifact's id.", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the file here, not to stdout.")
    ] = None,
) -> None:
    """An artifact's content."""
    with speaking_errors():
        content = client_of(context).get_artifact_content(artifact_id)
        if out is None:
            typer.get_binary_stream("stdout").write(content)
            return
        files.write(out, content)
    output.note(f"wrote {out} ({len(content):,} bytes)")
