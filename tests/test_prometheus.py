"""The Prometheus side, for real: Debian's Prometheus scrapes a served API with the documented
scrape config, promtool accepts the alert rules and their scenarios, and the Grafana dashboard
queries metrics the API serves."""

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.core.settings import Settings
from tests.conftest import API_KEY, ROOT
from tests.prometheus_server import PrometheusTools, prometheus_server, prometheus_tools
from tests.servers import api_process, free_port

DOCS = ROOT / "docs"
SCRAPE_CONFIG = DOCS / "prometheus" / "prometheus.yml"
ALERT_RULES = DOCS / "prometheus" / "alerts.yml"
DASHBOARD = DOCS / "grafana" / "crew-orchestrator.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}


@pytest.fixture(scope="session")
def tools() -> PrometheusTools:
    return prometheus_tools()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_enabled": True})


def eventually(check: Callable[[], Any], seconds: float = 60) -> Any:
    """`check()` once it is truthy; fails with its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, result
        time.sleep(0.5)
    return result


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def scrape_config_for(port: int, directory: Path) -> Path:
    """The documented config and its rules, aimed at the API on `port`, scraping every second."""
    config = SCRAPE_CONFIG.read_text()
    config = config.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("15s", "1s")
    (directory / "alerts.yml").write_text(ALERT_RULES.read_text())
    path = directory / "prometheus.yml"
    path.write_text(config)
    return path


def run_demo(base_url: str) -> None:
    """Submit a demo task and wait for its run to succeed (the worker runs in the API)."""
    headers = {"X-API-Key": API_KEY}
    task = {"title": "Scraped", "task_spec": {"type": "demo"}}
    location = httpx.post(f"{base_url}/tasks", headers=headers, json=task).headers["Location"]

    def succeeded() -> bool:
        return httpx.get(base_url + location, headers=headers).json()["status"] == "succeeded"

    eventually(succeeded, 30)


def test_a_real_prometheus_scrapes_the_served_api(
    migrated_database: str, tmp_path: Path, tools: PrometheusTools
) -> None:
    port = free_port()
    with api_process(migrated_database, tmp_path, port, METRICS_ENABLED="1"):
        run_demo(f"http://127.0.0.1:{port}")
        config = scrape_config_for(port, tmp_path)
        with prometheus_server(tools.server, config, tmp_path) as prometheus:

            def target_is_up() -> list[dict[str, Any]]:
                answer = httpx.get(f"{prometheus}/api/v1/targets").json()
                return [
                    target
                    for target in answer["data"]["activeTargets"]
                    if target["labels"]["job"] == "crew_ia_api" and target["health"] == "up"
                ]

            [target] = eventually(target_is_up)
            succeeded = 'crew_runs{job="crew_ia_api", status="succeeded"} == 1'
            eventually(lambda: query(prometheus, succeeded))
            tasks = 'crew_http_requests_total{route="/tasks", method="POST", status="2xx"}'
            posted = eventually(lambda: query(prometheus, tasks))
            rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
    assert [sample["value"][1] for sample in posted] == ["1"]
    assert {group["name"] for group in rules} == {"crew-orchestrator", "crew-orchestrator-records"}


def test_promtool_accepts_the_scrape_config_and_the_alert_rules(tools: PrometheusTools) -> None:
    for command in (
        ["check", "config", str(SCRAPE_CONFIG)],
        ["check", "rules", str(ALERT_RULES)],
        ["test", "rules", str(ROOT / "tests" / "prometheus_alerts_test.yml")],
    ):
        done = subprocess.run([tools.promtool, *command], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def served_names(exposition: str) -> set[str]:
    """Every name a query may use: the families, their samples and their types' suffixes."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name, *(family.name + s for s in SUFFIXES.get(family.type, ()))}
        names |= {sample.name for sample in family.samples}
    return names


async def test_the_dashboard_and_the_rules_query_metrics_the_api_serves(
    client: httpx.AsyncClient,
) -> None:
    served = served_names((await client.get("/metrics")).text)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 12
    for text in [*queries, ALERT_RULES.read_text()]:
        # Metric names, not quoted label values such as the job's name.
        used = set(re.findall(r'(?<!")\bcrew_[a-z_]+', text))
        assert used, text
        assert used <= served, used - served


def test_the_docs_show_the_scrape_config_that_is_tested() -> None:
    guide = (DOCS / "observability.md").read_text()
    assert SCRAPE_CONFIG.read_text().strip() in guide
