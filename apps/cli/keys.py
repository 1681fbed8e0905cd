"""Create, list and revoke the API's keys, on the database the API reads.

    python -m apps.api.keys create --name alice --role operator
    python -m apps.api.keys list
    python -m apps.api.keys revoke --name alice

Errors are one line on stderr and a non-zero exit: 1 when the request cannot be done (a name taken
or unknown, a database that is unreachable or not migrated), 2 for bad usage or settings.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from apps.cli.startup import invoked_as
from apps.core.database import (
    SessionFactory,
    create_engine,
    create_session_factory,
    unit_of_work,
)
from apps.core.errors import CrewError
from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings, SettingsError, load_settings
from apps.orchestrator.control import api_keys
from apps.orchestrator.model.models import ApiKey, KeyRole

PROG = invoked_as("crew-keys", "apps.api.keys")
ROLES_HELP = (
    "viewer: every read; operator: reads, submitting tasks, gate decisions, cancel, resume and "
    "config validation; admin: everything"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    database = _Parser(add_help=False)
    database.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="database holding the keys (default: the DATABASE_URL setting)",
    )
    parser = _Parser(
        prog=PROG,
        parents=[database],
        description="Manage the API's keys. Only a key's SHA-256 hash is stored; the key itself "
        "is printed once, by `create`. The API_KEY setting is an admin key of its own, named "
        "'admin', that is not stored here.",
        epilog=f"Roles: {ROLES_HELP}.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create",
        parents=[database],
        help="create a key and print it, once",
        description="Create a key. The key alone is printed on stdout, so "
        "KEY=$(... create ...) captures it; it cannot be shown again.",
        epilog=f"Roles: {ROLES_HELP}.",
    )
    create.add_argument("--name", required=True, help="unique name runs and decisions record")
    create.add_argument(
        "--role",
        required=True,
        choices=[role.value for role in KeyRole],
        help="what the key may do (see Roles below)",
    )
    commands.add_parser(
        "list",
        parents=[database],
        help="list every key: name, role, prefix, created, last used, revoked",
        description="List every key, revoked ones included. Keys and hashes are never shown; "
        "the prefix tells keys apart. Last use is recorded to the minute.",
    )
    revoke = commands.add_parser(
        "revoke",
        parents=[database],
        help="revoke a key: refused from its next request on",
        description="Revoke a key. The API refuses it from its next request on, no restart "
        "needed. Its name stays taken.",
    )
    revoke.add_argument("--name", required=True, help="name of the key to revoke")
    return parser


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _cells(row: ApiKey) -> tuple[str, ...]:
    # Never the key nor its hash: the prefix is enough to tell keys apart.
    moments = (row.created_at, row.last_used_at, row.revoked_at)
    return (row.name, row.role.value, row.key_prefix, *map(_when, moments))


def _table(rows: Sequence[ApiKey]) -> list[str]:
    lines = [("NAME", "ROLE", "PREFIX", "CREATED", "LAST USED", "REVOKED"), *map(_cells, rows)]
    widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


async def _create(sessions: SessionFactory, args: argparse.Namespace) -> None:
    async with unit_of_work(sessions) as session:
        created = await api_keys.create_key(session, args.name, KeyRole(args.role))
    print(created.secret)
    print(
        f"created the {created.row.role} key {created.row.name!r}; store it now: "
        "it will not be shown again",
        file=sys.stderr,
    )


async def _list(sessions: SessionFactory, _args: argparse.Namespace) -> None:
    async with sessions() as session:
        rows = await api_keys.list_keys(session)
    if not rows:
        print(f"no API keys yet; create one with: {PROG} create --name NAME --role ROLE")
        return
    print("\n".join(_table(rows)))


async def _revoke(sessions: SessionFactory, args: argparse.Namespace) -> None:
    async with unit_of_work(sessions) as session:
        row = await api_keys.revoke_key(session, args.name)
    print(f"revoked the {row.role} key {row.name!r}; the API refuses it from its next request on")


_COMMANDS = {"create": _create, "list": _list, "revoke": _revoke}


async def run_command(args: argparse.Namespace, settings: Settings) -> None:
    """Carry out the parsed command against the settings' database."""
    engine = create_engine(settings)
    try:
        await _COMMANDS[args.command](create_session_factory(engine), args)
    finally:
        await engine.dispose()


def _database_problem(error: Exception) -> str:
    reason = str(getattr(error, "orig", None) or error).splitlines()[0]
    return (
        f"error: database error: {reason}; check DATABASE_URL (or --database-url) and that "
        "the database is migrated (make db-upgrade)"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides = {"database_url": args.database_url} if "database_url" in args else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as error:
        sys.exit(_exit_with(2, f"error: {error}"))
    secrets = configured_secrets(settings)
    try:
        asyncio.run(run_command(args, settings))
    except CrewError as error:
        sys.exit(_exit_with(1, f"error: {error.detail}", secrets))
    except (SQLAlchemyError, OSError) as error:
        sys.exit(_exit_with(1, _database_problem(error), secrets))


def _exit_with(status: int, message: str, secrets: Sequence[str] = ()) -> int:
    print(redact(message, secrets), file=sys.stderr)
    return status


if __name__ == "__main__":
    main()
