"""`crew watch`: a run's progress, live, until it ends; the exit status says how it ended.

An outage of the server (a restart, its database down) does not end a watch: it says so on
stderr, waits it out as the event streams do (`crew_client.outages`) and says when the server
is back. What the server answers (a run not found, a key refused) ends it."""

import time
import uuid
from datetime import UTC, datetime

from rich.live import Live
from rich.table import Table

from apps.cli.crew.output import console, note
from crew_client import Client, CrewClientError, NodeStatus, Run, RunStatus
from crew_client.outages import Outage

POLL_SECONDS = 0.5
# Exit statuses of a watch: how the run ended.
EXIT_BY_STATUS = {RunStatus.SUCCEEDED: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 2}
_FINAL_NODES = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.CANCELLED, NodeStatus.SKIPPED}
)


def _elapsed(run: Run) -> float:
    if run.started_at is None:
        return 0.0
    end = run.finished_at or datetime.now(UTC)
    return (end - run.started_at).total_seconds()


def summary(run: Run, running: list[str]) -> str:
    counts = run.node_counts.model_dump()
    total = sum(counts.values())
    done = sum(counts[status] for status in _FINAL_NODES)
    usage = run.usage
    return (
        f"{run.status}  nodes {done}/{total}  running {', '.join(running) or '-'}  "
        f"tokens {usage.total_tokens:,}  cost {usage.cost:.4f}  elapsed {_elapsed(run):.1f}s"
    )


def _view(run: Run, running: list[str]) -> Table:
    view = Table.grid(padding=(0, 2))
    view.add_row(f"[bold]{run.title}[/bold]", str(run.id))
    view.add_row(summary(run, running), "")
    return view


def _running_nodes(client: Client, run_id: uuid.UUID | str) -> list[str]:
    return [node.key for node in client.iter_nodes(run_id) if node.status == NodeStatus.RUNNING]


def _lost(error: CrewClientError) -> None:
    note(f"lost the server ({error}); still watching, trying again")


def _back() -> None:
    note("the server is back")


def watch(client: Client, run_id: uuid.UUID | str) -> int:
    """Show the run until it ends, through any outage of the server; its exit status. Ctrl-C
    stops watching, not the run."""
    outage = Outage(client.retry, on_lost=_lost, on_back=_back)
    run = outage.ride(lambda: client.get_run(run_id))
    if not console.is_terminal:
        return _watch_plainly(outage, client, run)
    with Live(_view(run, []), console=console, refresh_per_second=4) as live:
        while run.status not in EXIT_BY_STATUS:
            time.sleep(POLL_SECONDS)
            run, running = outage.ride(
                lambda: (client.get_run(run_id), _running_nodes(client, run_id))
            )
            live.update(_view(run, running))
    return _ended(run)


def _watch_plainly(outage: Outage, client: Client, run: Run) -> int:
    """One line per change of status or node counts, for a pipe or a log."""
    run_id, last = run.id, ""
    while True:
        line = summary(run, [])
        if line.split("  elapsed")[0] != last:
            console.print(line, markup=False, highlight=False)
            last = line.split("  elapsed")[0]
        if run.status in EXIT_BY_STATUS:
            return _ended(run)
        time.sleep(POLL_SECONDS)
        run = outage.ride(lambda: client.get_run(run_id))


def _ended(run: Run) -> int:
    reason = f": {run.error}" if run.error else ""
    console.print(f"run {run.id} {run.status}{reason}", markup=False, highlight=False)
    return EXIT_BY_STATUS[run.status]
