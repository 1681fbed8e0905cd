"""`crew keys`: create, list and revoke API keys."""

from typing import Annotated

import typer

from apps.cli.crew import output
from apps.cli.crew.app import Json, client_of, keys_app, speaking_errors
from crew_client import KeyRole


@keys_app.command("create")
def create_key(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
    role: Annotated[KeyRole, typer.Option(help="What the key may do.")] = KeyRole.VIEWER,
    as_json: Json = False,
) -> None:
    """Create a key and print its secret, shown this once."""
    with speaking_errors():
        created = client_of(context).create_key(name, role)
    if as_json:
        output.as_json(created)
        return
    output.note(f"created {created.role} key {created.name!r}; its secret, shown once:")
    output.console.print(created.secret, markup=False, highlight=False)


@keys_app.command("list")
def list_keys(context: typer.Context, as_json: Json = False) -> None:
    """Every key, revoked ones included."""
    with speaking_errors():
        found = list(client_of(context).iter_keys())
    columns = {
        "name": "name",
        "role": "role",
        "prefix": "key_prefix",
        "created": "created_at",
        "last used": "last_used_at",
        "revoked": "revoked_at",
    }
    output.listing(found, columns, json=as_json)


@keys_app.command("revoke")
def revoke_key(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
) -> None:
    """Revoke a key: its next request is refused."""
    with speaking_errors():
        revoked = client_of(context).revoke_key(name)
    output.console.print(f"revoked key {revoked.name!r}", markup=False, highlight=False)
