"""`crew`: the operator's command over HTTP. `crew --help` lists the commands; every reading
command takes `--json` and prints the API's JSON.

Configured by CREW_URL (default http://127.0.0.1:8000) and CREW_API_KEY, or --url and --key.
The exit statuses are in `EPILOG`.
"""

import errno
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from apps.cli.crew import files, output
from apps.cli.crew.files import LocalError
from apps.cli.crew.watching import watch as watch_run
from apps.wire.event_types import event_types_named
from crew_client import (
    ApiError,
    Client,
    CrewConnectionError,
    Gate,
    GateStatus,
    InvalidId,
    InvalidKey,
    KeyRole,
    RunStatus,
    UnexpectedAnswer,
)
from crew_client.sync import DEFAULT_URL

EPILOG = (
    "Configured by CREW_URL (default http://127.0.0.1:8000) and CREW_API_KEY, or --url and --key. "
    "Exit statuses: 0 done, or the reader of the output went away (crew runs | head -1); for "
    "watch (and submit --watch) 1 the run failed, 2 it was cancelled, and an outage of the "
    "server (no connection, 502, 503, 504) is waited out; 3 the server cannot be reached; 4 no "
    "key or a wrong one (401); 5 the key's role may not (403); 6 not found (404); 7 conflict, "
    "e.g. a gate already decided (409); 8 a request the API refused (400, 413, 422); 9 the "
    "server failed (503, 5xx) or its answer is not the API's; 64 a command that cannot be done "
    "as given, with nothing changed: options that do not go together, an id that is not one, a "
    "key that is not printable ASCII, a file that cannot be read or written (the output too), "
    "an --edit that changed nothing or an editor that failed (2 for a command line that cannot "
    "be parsed at all); 130 interrupted (a watched run keeps running)."
)
EXIT_UNREACHABLE = 3
EXIT_BY_STATUS = {401: 4, 403: 5, 404: 6, 409: 7, 400: 8, 413: 8, 422: 8}
EXIT_SERVER = 9
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130


class _Commands(TyperGroup):
    """Every command, ending as a Unix tool does when its output cannot be written."""

    def invoke(self, ctx: Any) -> Any:  # the click.Context typer carries within it
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # here, not at exit, where a failure is a traceback
        except OSError as error:  # files, editors and the network raise errors of their own
            raise _unwritten(error) from None


def _unwritten(error: OSError) -> typer.Exit:
    """A reader gone away (`crew runs | head -1`) ends the command quietly, as it ends `cat`;
    any other failure to write stdout (a full disk) is one line, exit 64."""
    output.silence()
    if error.errno == errno.EPIPE:
        return typer.Exit(0)
    return _usage(f"cannot write to standard output: {error.strerror or error}")


app = typer.Typer(
    cls=_Commands,
    name="crew",
    help="Operate Crew Orchestrator over its HTTP API: runs, gates, keys.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys (needs an admin key).")
app.add_typer(keys_app, name="keys")

RunArg = Annotated[str, typer.Argument(help="The run's id.", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON (for jq).")]


@app.callback()
def configure(
    context: typer.Context,
    url: Annotated[str, typer.Option(envvar="CREW_URL", help="The API's base URL.")] = DEFAULT_URL,
    key: Annotated[
        str | None, typer.Option(envvar="CREW_API_KEY", help="API key.", show_default=False)
    ] = None,
) -> None:
    try:
        context.obj = Client(url, key)
    except InvalidKey as error:  # nothing was sent
        raise _usage(f"{error} (--key or CREW_API_KEY)") from None
    context.call_on_close(context.obj.close)


def _client(context: typer.Context) -> Client:
    client: Client = context.obj
    return client


@contextmanager
def _speaking_errors() -> Iterator[None]:
    """API errors as one line with the API's detail, and an exit status per kind."""
    try:
        yield
    except ApiError as error:
        output.fail(f"{error.detail} ({error.status})")
        raise typer.Exit(EXIT_BY_STATUS.get(error.status, EXIT_SERVER)) from None
    except CrewConnectionError as error:
        output.fail(str(error))
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except UnexpectedAnswer as error:
        output.fail(str(error))
        raise typer.Exit(EXIT_SERVER) from None
    except (InvalidId, LocalError) as error:
        raise _usage(str(error)) from None
    except KeyboardInterrupt:
        output.fail("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _usage(message: str) -> typer.Exit:
    output.fail(message)
    return typer.Exit(EXIT_USAGE)


@app.command()
def runs(
    context: typer.Context,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    search: Annotated[str | None, typer.Option(help="Only titles containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """List runs, newest first."""
    with _speaking_errors():
        page = _client(context).list_runs(status=status, q=search, limit=limit)
    if as_json:
        output.as_json(page)
        return
    rows = [
        (run.id, run.status, run.title, run.created_at, run.usage.total_tokens, run.created_by)
        for run in page.items
    ]
    output.table(("id", "status", "title", "created", "tokens", "by"), rows)


@app.command()
def show(context: typer.Context, run_id: RunArg, as_json: Json = False) -> None:
    """One run: its status, node counts, usage and error."""
    with _speaking_errors():
        run = _client(context).get_run(run_id)
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
    with _speaking_errors():
        found = list(_client(context).iter_nodes(run_id))
    if as_json:
        output.as_json(found)
        return
    rows = [
        (node.key, node.role, node.status, ",".join(node.deps) or "-", node.attempt, node.error)
        for node in found
    ]
    output.table(("key", "role", "status", "deps", "attempt", "error"), rows)


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
        raise _usage(str(error)) from None
    client = _client(context)
    with _speaking_errors():
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
    with _speaking_errors():
        content = _client(context).get_artifact_content(artifact_id)
        if out is None:
            typer.get_binary_stream("stdout").write(content)
            return
        files.write(out, content)
    output.note(f"wrote {out} ({len(content):,} bytes)")


def _spec_of(demo: bool, report: bool, sections: int | None, spec: Path | None) -> dict[str, Any]:
    if demo + report + (spec is not None) != 1:
        raise _usage("give one of --demo, --report or --spec FILE")
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
    client = _client(context)
    with _speaking_errors():
        task = _spec_of(demo, report, sections, spec)
        run = client.submit_task(title, task)
    if as_json:
        output.as_json(run)
    else:
        output.console.print(f"submitted run {run.id}", markup=False, highlight=False)
    if then_watch:
        _watch(client, str(run.id))


def _watch(client: Client, run_id: str) -> None:
    with _speaking_errors():
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
    _watch(_client(context), run_id)


@app.command()
def gates(
    context: typer.Context,
    run: Annotated[str | None, typer.Option(help="Only this run's gates.")] = None,
    status: Annotated[GateStatus, typer.Option(help="Gates in this status.")] = GateStatus.PENDING,
    as_json: Json = False,
) -> None:
    """The gates inbox: pending gates, oldest first."""
    with _speaking_errors():
        found = list(_client(context).iter_gates(status=status, run_id=run))
    if as_json:
        output.as_json(found)
        return
    rows = [
        (gate.run_id, gate.run_title, gate.node_key, gate.when, gate.opened_at, gate.expires_at)
        for gate in found
    ]
    output.table(("run", "title", "node", "when", "opened", "expires"), rows)


def _node_id(client: Client, run_id: str, key: str | None) -> uuid.UUID | None:
    if key is None:
        return None
    for node in client.iter_nodes(run_id):
        if node.key == key:
            return node.id
    raise _usage(f"run {run_id} has no node {key!r}")


def _pending_gate(client: Client, run_id: str, node_id: uuid.UUID | None) -> Gate:
    waiting = [
        gate
        for gate in client.iter_gates(status=GateStatus.PENDING, run_id=run_id)
        if node_id is None or gate.node_id == node_id
    ]
    if len(waiting) != 1:
        which = "no gate waits" if not waiting else "several gates wait; name one with --node"
        raise _usage(f"{which} on run {run_id}")
    return waiting[0]


def _edited_patch(client: Client, run_id: str, node_id: uuid.UUID | None) -> str:
    """The gated artifact's content as changed in $EDITOR (`files.edited` says when it is no
    edit, and nothing is approved)."""
    gate = _pending_gate(client, run_id, node_id)
    if gate.artifact_id is None:
        raise _usage("this gate is before its node runs: there is no artifact to edit")
    content = client.get_artifact_content(gate.artifact_id)
    return files.edited(content, client.get_artifact(gate.artifact_id).name)


def _decided(gate: Gate, as_json: bool) -> None:
    if as_json:
        output.as_json(gate)
        return
    output.console.print(
        f"{gate.status} {gate.node_key} of run {gate.run_id}", markup=False, highlight=False
    )


@app.command()
def approve(
    context: typer.Context,
    run_id: RunArg,
    node: Annotated[str | None, typer.Option(help="The gated node's key.")] = None,
    notes: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    patch_file: Annotated[
        Path | None, typer.Option(help="The artifact's new content (or a JSON merge patch).")
    ] = None,
    edit: Annotated[bool, typer.Option("--edit", help="Edit the artifact in $EDITOR.")] = False,
    as_json: Json = False,
) -> None:
    """Release a waiting gate, optionally with an edit of its artifact."""
    if patch_file is not None and edit:
        raise _usage("give --patch-file or --edit, not both")
    client = _client(context)
    with _speaking_errors():
        patch = files.read_patch(patch_file) if patch_file else None
        node_id = _node_id(client, run_id, node)
        if edit:
            patch = _edited_patch(client, run_id, node_id)
        gate = client.approve(run_id, node_id=node_id, notes=notes, patch=patch)
    _decided(gate, as_json)


@app.command()
def reject(
    context: typer.Context,
    run_id: RunArg,
    notes: Annotated[str, typer.Option(help="Why; the agent's feedback on a retry.")],
    node: Annotated[str | None, typer.Option(help="The gated node's key.")] = None,
    fail: Annotated[
        bool, typer.Option("--fail", help="Fail the node and its run instead of a retry.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Turn down a waiting gate: run the node again with the notes, or --fail it."""
    action: Literal["retry", "fail"] = "fail" if fail else "retry"
    client = _client(context)
    with _speaking_errors():
        node_id = _node_id(client, run_id, node)
        gate = client.reject(run_id, node_id=node_id, notes=notes, action=action)
    _decided(gate, as_json)


def _control(context: typer.Context, act: Callable[[Client], Any], what: str) -> None:
    with _speaking_errors():
        run = act(_client(context))
    output.console.print(f"{what} run {run.id}: {run.status}", markup=False, highlight=False)


@app.command()
def cancel(context: typer.Context, run_id: RunArg) -> None:
    """Cancel a run: nothing new starts, calls in flight are stopped."""
    _control(context, lambda client: client.cancel(run_id), "cancelling")


@app.command()
def resume(context: typer.Context, run_id: RunArg) -> None:
    """Resume a failed or cancelled run from where it stopped."""
    _control(context, lambda client: client.resume(run_id), "resumed")


@keys_app.command("create")
def create_key(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
    role: Annotated[KeyRole, typer.Option(help="What the key may do.")] = KeyRole.VIEWER,
    as_json: Json = False,
) -> None:
    """Create a key and print its secret, shown this once."""
    with _speaking_errors():
        created = _client(context).create_key(name, role)
    if as_json:
        output.as_json(created)
        return
    output.note(f"created {created.role} key {created.name!r}; its secret, shown once:")
    output.console.print(created.secret, markup=False, highlight=False)


@keys_app.command("list")
def list_keys(context: typer.Context, as_json: Json = False) -> None:
    """Every key, revoked ones included."""
    with _speaking_errors():
        found = list(_client(context).iter_keys())
    if as_json:
        output.as_json(found)
        return
    rows = [
        (key.name, key.role, key.key_prefix, key.created_at, key.last_used_at, key.revoked_at)
        for key in found
    ]
    output.table(("name", "role", "prefix", "created", "last used", "revoked"), rows)


@keys_app.command("revoke")
def revoke_key(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
) -> None:
    """Revoke a key: its next request is refused."""
    with _speaking_errors():
        revoked = _client(context).revoke_key(name)
    output.console.print(f"revoked key {revoked.name!r}", markup=False, highlight=False)


def main() -> None:
    app()
