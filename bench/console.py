"""The web console's speed: pages on a big database, what Chromium makes of them, and how soon
an event reaches an open run page.

For each backend (SQLite, PostgreSQL):

1. a fresh database seeded with `--runs` runs (100,000) and `--events` events, as
   `bench.read_api` seeds them, plus one queued `--nodes`-node run (500); the app serves it with
   no worker (the seeded runs stay as they are);
2. the runs page (`GET /ui/runs`, signed in) and the 500-node run page are fetched one after the
   other, `--requests` times each after a warm-up: their p50/p95 server time on loopback;
3. Chromium (Debian's, through Playwright) opens the runs page `--loads` times: its first
   contentful paint; and the 500-node run page: when the DAG answered clicks (dag.js marks it);
4. a second app, on a fresh database with its worker and DEMO_LATENCY_MS `--latency-ms`, runs
   `--live-runs` dags of `--live-nodes` nodes, each held at a gate before its first node until
   Chromium has its run page open and watched, then approved: for every event after that, the
   time from its timestamp (taken just before its commit) to the moment its line was added to
   the page's timeline, read by a MutationObserver.

The JavaScript the console ships is summed from apps/console/static. Targets: runs page p95
<= 50 ms, first contentful paint <= 500 ms, 500-node page p95 <= 200 ms, DAG interactive <= 1 s,
event to DOM p95 <= 250 ms, JavaScript <= 100 KB.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench import read_api
from bench.harness import (
    API_COMMAND,
    API_KEY,
    HOST,
    ROOT,
    SMOKE_HELP,
    WORK,
    BenchError,
    free_port,
    fresh_database,
    run,
    scratch_dir,
    servers,
    service_env,
    spawn,
    wait_ready,
    wide_dag,
)

STATIC = ROOT / "apps" / "console" / "static"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
TARGETS = {
    "runs_page_p95_ms": 50.0,
    "fcp_ms": 500.0,
    "dag_page_p95_ms": 200.0,
    "dag_interactive_ms": 1000.0,
    "event_to_dom_p95_ms": 250.0,
    "javascript_kb": 100.0,
}


@dataclass
class Figures:
    backend: str
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], which: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(which / 100 * (len(ordered) - 1)))]


def javascript_kb() -> float:
    return sum(path.stat().st_size for path in STATIC.glob("*.js")) / 1024


# --- the served app ------------------------------------------------------------------------------


@contextlib.contextmanager
def served(url: str, workdir: Path, name: str, **settings: str) -> Iterator[str]:
    port = free_port()
    env = service_env(
        url, HOST=HOST, PORT=str(port), ARTIFACTS_DIR=str(workdir / "artifacts"), **settings
    )
    log = WORK / f"console-{name}.log"
    with spawn(API_COMMAND, env, workdir, log) as process:
        wait_ready(process, f"http://{HOST}:{port}", log)
        yield f"http://{HOST}:{port}"


@contextlib.contextmanager
def signed_in(base_url: str) -> Iterator[httpx.Client]:
    """A client holding a console session of the admin key."""
    with httpx.Client(base_url=base_url, headers={"Origin": base_url}, trust_env=False) as client:
        answer = client.post("/ui/sign-in", data={"key": API_KEY})
        if answer.status_code != 303 or "crew_console" not in client.cookies:
            raise BenchError(f"signing in failed: {answer.status_code} {answer.text[:200]}")
        yield client


def submit(base_url: str, title: str, spec: dict[str, Any]) -> str:
    answer = httpx.post(
        f"{base_url}/tasks",
        json={"title": title, "task_spec": spec},
        headers={"X-API-Key": API_KEY},
        trust_env=False,
    )
    if answer.status_code != 202:
        raise BenchError(f"POST /tasks answered {answer.status_code}: {answer.text[:300]}")
    run_id: str = answer.json()["id"]
    return run_id


def timed_gets(client: httpx.Client, path: str, count: int) -> list[float]:
    for _ in range(max(3, count // 10)):
        client.get(path)
    elapsed = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(path)
        elapsed.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"GET {path} answered {answer.status_code}")
    return elapsed


# --- in Chromium ---------------------------------------------------------------------------------

OBSERVE_TIMELINE = """() => {
  window.__arrivals = {};
  new MutationObserver((changes) => {
    const now = performance.timeOrigin + performance.now();
    for (const change of changes) for (const node of change.addedNodes) {
      if (node.dataset && node.dataset.eventId) window.__arrivals[node.dataset.eventId] = now;
    }
  }).observe(document.getElementById("timeline"), { childList: true });
}"""


# The paint entry is recorded a moment after it happens: wait for it (or for 3 s).
FIRST_PAINT = """() => new Promise((resolve) => {
  new PerformanceObserver((list) => {
    const entry = list.getEntriesByName("first-contentful-paint")[0];
    if (entry) resolve(entry.startTime);
  }).observe({ type: "paint", buffered: true });
  setTimeout(() => resolve(-1), 3000);
})"""


@contextlib.contextmanager
def chromium_page(base_url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/ui/sign-in")
            page.fill('input[name="key"]', API_KEY)
            page.click('button[type="submit"]')
            page.wait_for_url("**/ui/runs")
            yield page
        finally:
            browser.close()


def first_paints(page: Any, base_url: str, loads: int) -> list[float]:
    paints = []
    for _ in range(loads):
        page.goto(f"{base_url}/ui/runs", wait_until="load")
        paint = page.evaluate(FIRST_PAINT)
        if paint < 0:
            raise BenchError("Chromium reported no first contentful paint")
        paints.append(paint)
    return paints


def dag_interactive(page: Any, base_url: str, run_id: str, loads: int) -> list[float]:
    ready = []
    for _ in range(loads):
        page.goto(f"{base_url}/ui/runs/{run_id}")
        page.wait_for_selector("#dag[data-ready]")
        ready.append(float(page.get_attribute("#dag", "data-ready")))
    page.locator("#dag g.node").last.click()
    page.wait_for_selector("#panel .node-panel")
    return ready


def held_dag(nodes: int) -> dict[str, Any]:
    """A wide dag whose root waits for approval before it starts: the page is open and watched
    before the run's first event after the gate, however quick the run."""
    plan = wide_dag(nodes)
    plan[0] = plan[0] | {"gate": {"when": "before"}}
    return {"type": "dag", "nodes": plan}


def event_delays(page: Any, base_url: str, runs: int, nodes: int) -> list[float]:
    delays: list[float] = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, trust_env=False) as api:
        for number in range(runs):
            run_id = submit(base_url, f"Live {number}", held_dag(nodes))
            page.goto(f"{base_url}/ui/runs/{run_id}")
            page.wait_for_selector("#run-status .s-waiting", timeout=60_000)
            page.evaluate(OBSERVE_TIMELINE)
            approved = api.post(f"/runs/{run_id}/approve", json={})
            if approved.status_code != 200:
                raise BenchError(f"approving the held run answered {approved.status_code}")
            page.wait_for_selector("#run-status .s-succeeded", timeout=120_000)
            page.wait_for_timeout(200)
            arrivals: dict[str, float] = page.evaluate("() => window.__arrivals")
            events = api.get("/events", params={"run_id": run_id, "limit": 200}).json()["items"]
            for event in events:
                arrived = arrivals.get(str(event["id"]))
                if arrived is not None:
                    committed = datetime.fromisoformat(event["ts"]).timestamp() * 1000
                    delays.append(arrived - committed)
    if not delays:
        raise BenchError("no event reached an open run page after it was opened")
    return delays


# --- one backend ---------------------------------------------------------------------------------


def seed(backend: str, url: str, args: argparse.Namespace) -> None:
    shape = argparse.Namespace(seed=7, runs=args.runs, events=args.events, bulk_runs=0)
    if backend == "sqlite":
        read_api.seed_sqlite(Path(make_url(url).database or ""), shape)
    else:
        asyncio.run(read_api.seed_postgres(url, shape))


def measure_pages(backend: str, server: str | None, args: argparse.Namespace) -> Figures:
    figures = Figures(backend)
    with scratch_dir("console") as workdir, fresh_database(backend, server) as url:
        started = time.monotonic()
        seed(backend, url, args)
        figures.notes.append(f"seeded {args.runs:,} runs in {time.monotonic() - started:.0f} s")
        with served(url, workdir, f"pages-{backend}", WORKER_IN_API="0") as base:
            dag_run = submit(
                base, "Five hundred nodes", {"type": "dag", "nodes": wide_dag(args.nodes)}
            )
            with signed_in(base) as client:
                runs_page = timed_gets(client, "/ui/runs", args.requests)
                dag_page = timed_gets(client, f"/ui/runs/{dag_run}", args.requests)
            figures.values |= {
                "runs_page_p50_ms": statistics.median(runs_page),
                "runs_page_p95_ms": percentile(runs_page, 95),
                "dag_page_p50_ms": statistics.median(dag_page),
                "dag_page_p95_ms": percentile(dag_page, 95),
            }
            if browser_available(figures):
                with chromium_page(base) as page:
                    paints = first_paints(page, base, args.loads)
                    ready = dag_interactive(page, base, dag_run, args.loads)
                figures.values |= {
                    "fcp_ms": statistics.median(paints),
                    "dag_interactive_ms": statistics.median(ready),
                }
    return figures


def measure_live(
    backend: str, server: str | None, args: argparse.Namespace, figures: Figures
) -> None:
    if not browser_available(figures):
        return
    with scratch_dir("console-live") as workdir, fresh_database(backend, server) as url:
        settings = {"WORKER_IN_API": "1", "DEMO_LATENCY_MS": str(args.latency_ms)}
        with (
            served(url, workdir, f"live-{backend}", **settings) as base,
            chromium_page(base) as page,
        ):
            delays = event_delays(page, base, args.live_runs, args.live_nodes)
    figures.values |= {
        "event_to_dom_p50_ms": statistics.median(delays),
        "event_to_dom_p95_ms": percentile(delays, 95),
        "events_timed": float(len(delays)),
    }


def browser_available(figures: Figures) -> bool:
    if CHROMIUM.exists():
        return True
    if os.environ.get("REQUIRE_BROWSER"):
        raise BenchError(f"REQUIRE_BROWSER is set but there is no Chromium at {CHROMIUM}")
    note = f"no Chromium at {CHROMIUM}: browser figures skipped (apt-get install chromium)"
    if note not in figures.notes:
        figures.notes.append(note)
    return False


# --- the command ---------------------------------------------------------------------------------


def print_figures(figures: Figures, smoke: bool) -> bool:
    print(f"\n== {figures.backend} (load {Path('/proc/loadavg').read_text().split()[:3]})")
    for note in figures.notes:
        print(f"   {note}")
    passed = True
    for name, value in figures.values.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = value <= target
            passed &= ok
            verdict = f"  target <= {target:g}: {'ok' if ok else 'MISSED'}"
        print(f"   {name:24} {value:9.1f}{verdict}")
    return passed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=100_000, help="runs seeded")
    parser.add_argument("--events", type=int, default=200_000, help="events seeded")
    parser.add_argument("--nodes", type=int, default=500, help="nodes of the big run")
    parser.add_argument("--requests", type=int, default=200, help="timed GETs per page")
    parser.add_argument("--loads", type=int, default=10, help="page loads in Chromium")
    parser.add_argument("--live-runs", type=int, default=3, help="runs watched live")
    parser.add_argument("--live-nodes", type=int, default=40, help="nodes of each watched run")
    parser.add_argument("--latency-ms", type=int, default=50, help="DEMO_LATENCY_MS, live part")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.events, args.nodes, args.requests = 500, 500, 20, 10
        args.loads, args.live_runs, args.live_nodes, args.latency_ms = 1, 1, 4, 10
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    passed = True
    kb = javascript_kb()
    for backend, server in servers(args.backend):
        figures = measure_pages(backend, server, args)
        measure_live(backend, server, args, figures)
        figures.values["javascript_kb"] = kb
        passed &= print_figures(figures, args.smoke)
    if args.smoke:
        print("\nsmoke run: the targets are not judged")
        return 0
    return 0 if passed else 1


if __name__ == "__main__":
    run(main)
