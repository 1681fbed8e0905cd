"""The gates inbox and the decisions on it: gates, approve, reject."""

import uuid
from pathlib import Path
from typing import Annotated, Literal

import typer

from apps.cli.crew import files, output
from apps.cli.crew.app import Json, RunArg, app, client_of, speaking_errors, usage_error
from crew_client import Client, Gate, GateStatus


@app.command()
def gates(
    context: typer.Context,
    run: Annotated[str | None, typer.Option(help="Only this run's gates.")] = None,
    status: Annotated[GateStatus, typer.Option(help="Gates in this status.")] = GateStatus.PENDING,
    as_json: Json = False,
) -> None:
    """The gates inbox: pending gates, oldest first."""
    with speaking_errors():
        found = list(client_of(context).iter_gates(status=status, run_id=run))
    columns = {
        "run": "run_id",
        "title": "run_title",
        "node": "node_key",
        "when": "when",
        "opened": "opened_at",
        "expires": "expires_at",
    }
    output.listing(found, columns, json=as_json)


def _node_id(client: Client, run_id: str, key: str | None) -> uuid.UUID | None:
    if key is None:
        return None
    for node in client.iter_nodes(run_id):
        if node.key == key:
            return node.id
    raise usage_error(f"run {run_id} has no node {key!r}")


def _pending_gate(client: Client, run_id: str, node_id: uuid.UUID | None) -> Gate:
    waiting = [
        gate
        for gate in client.iter_gates(status=GateStatus.PENDING, run_id=run_id)
        if node_id is None or gate.node_id == node_id
    ]
    if len(waiting) != 1:
        which = "no gate waits" if not waiting else "several gates wait; name one with --node"
        raise usage_error(f"{which} on run {run_id}")
    return waiting[0]


def _edited_patch(client: Client, run_id: str, node_id: uuid.UUID | None) -> str:
    """The gated artifact's content as changed in $EDITOR (`files.edited` says when it is no
    edit, and nothing is approved)."""
    gate = _pending_gate(client, run_id, node_id)
    if gate.artifact_id is None:
        raise usage_error("this gate is before its node runs: there is no artifact to edit")
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
        raise usage_error("give --patch-file or --edit, not both")
    client = client_of(context)
    with speaking_errors():
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
    client = client_of(context)
    with speaking_errors():
        node_id = _node_id(client, run_id, node)
        gate = client.reject(run_id, node_id=node_id, notes=notes, action=action)
    _decided(gate, as_json)
