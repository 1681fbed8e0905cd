"""`crew`: the operator's command over HTTP. `crew --help` lists the commands; every reading
command takes `--json` and prints the API's JSON.

Configured by CREW_URL (default http://127.0.0.1:8000) and CREW_API_KEY, or --url and --key;
CREW_TIMEOUT or --timeout bounds each request, its retries included. The exit statuses are in
`EPILOG`. This module makes the command, its options and how it ends; the commands themselves
are in `reading`, `running`, `gating` and `keys`.
"""

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from apps.cli.crew import output
from apps.cli.crew.files import LocalError
from crew_client import (
    ApiError,
    Client,
    CrewConnectionError,
    InvalidId,
    InvalidKey,
    UnexpectedAnswer,
)
from crew_client.retry import DEFAULT_TIMEOUT
from crew_client.sync import DEFAULT_URL

EPILOG = (
    "Configured by CREW_URL (default http://127.0.0.1:8000) and CREW_API_KEY, or --url and "
    "--key; a request not answered within CREW_TIMEOUT or --timeout seconds (default 30, its "
    "retries included) fails. Exit statuses: 0 done, or the reader of the output went away (crew "
    "runs | head -1); for watch (and submit --watch) 1 the run failed, 2 it was cancelled, and "
    "an outage of the server (no connection, 502, 503, 504) is waited out; 3 the server cannot "
    "be reached or does not answer in time; 4 no key or a wrong one (401); 5 the key's role may "
    "not (403); 6 not found (404); 7 conflict, e.g. a gate already decided (409); 8 a request "
    "the API refused (400, 413, 422); 9 the server failed (503, 5xx) or its answer is not the "
    "API's; 64 a command that cannot be done as given, with nothing changed: options that do not "
    "go together, an id that is not one, a key that is not printable ASCII, a file that cannot "
    "be read or written (the output too), an --edit that changed nothing or an editor that "
    "failed (2 for a command line that cannot be parsed at all); 130 interrupted (a watched run "
    "keeps running)."
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
    return usage_error(f"cannot write to standard output: {error.strerror or error}")


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
    timeout: Annotated[
        float,
        typer.Option(
            envvar="CREW_TIMEOUT",
            min=1,
            help="Seconds to wait for an answer to a request, its retries included.",
        ),
    ] = DEFAULT_TIMEOUT,
) -> None:
    try:
        context.obj = Client(url, key, timeout=timeout)
    except InvalidKey as error:  # nothing was sent
        raise usage_error(f"{error} (--key or CREW_API_KEY)") from None
    context.call_on_close(context.obj.close)


def client_of(context: typer.Context) -> Client:
    client: Client = context.obj
    return client


@contextmanager
def speaking_errors() -> Iterator[None]:
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
        raise usage_error(str(error)) from None
    except KeyboardInterrupt:
        output.fail("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def usage_error(message: str) -> typer.Exit:
    output.fail(message)
    return typer.Exit(EXIT_USAGE)


def main() -> None:
    app()
