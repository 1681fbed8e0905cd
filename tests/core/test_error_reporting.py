from types import SimpleNamespace

import sentry_sdk

from apps.core.error_reporting import FILTERED, Scrubber, init_sentry, report_run_error
from apps.core.logs import log_context, request_context
from apps.core.settings import load_settings


def test_with_no_dsn_sentry_is_not_set_up_and_reporting_is_a_no_op() -> None:
    assert init_sentry(load_settings(_env_file=None, sentry_dsn=None)) is False
    assert not sentry_sdk.is_initialized()
    report_run_error(RuntimeError("unseen"), run_id="r", node_id="n")


def test_an_event_loses_keys_cookies_bodies_and_prompts() -> None:
    event = {
        "request": {
            "headers": {"X-Api-Key": "k1", "Authorization": "Bearer k1", "Accept": "*/*"},
            "cookies": {"session": "c"},
            "data": {"title": "t", "task_spec": {"nodes": [{"prompt": "secret plan"}]}},
        },
        "extra": {"sidecar": {"prompts": {"user": "secret plan"}, "model": "gpt-4o"}},
        "exception": {"values": [{"value": "failed calling with sk-openai-secret"}]},
    }
    cleaned = Scrubber(["sk-openai-secret"]).before_send(event, {})
    assert cleaned["request"]["headers"] == {
        "X-Api-Key": FILTERED,
        "Authorization": FILTERED,
        "Accept": "*/*",
    }
    assert set(cleaned["request"]) == {"headers"}
    assert cleaned["extra"]["sidecar"] == {"prompts": FILTERED, "model": "gpt-4o"}
    assert cleaned["exception"]["values"][0]["value"] == f"failed calling with {FILTERED}"


def test_an_event_is_tagged_with_the_ids_bound_where_it_happened() -> None:
    with request_context("req-9", {"path_params": {"node_id": "n-1"}}), log_context(run_id="r-1"):
        cleaned = Scrubber([]).before_send({"tags": {"run_id": "set-by-scope"}}, {})
    assert cleaned["tags"] == {"request_id": "req-9", "run_id": "set-by-scope", "node_id": "n-1"}


def test_a_breadcrumb_loses_prompts_and_secrets() -> None:
    crumb = {"message": "POST with key-123", "data": {"messages": [{"content": "p"}], "url": "/x"}}
    cleaned = Scrubber(["key-123"]).before_breadcrumb(crumb, {})
    assert cleaned == {
        "message": f"POST with {FILTERED}",
        "data": {"messages": FILTERED, "url": "/x"},
    }


def test_an_event_loses_credentials_no_setting_names() -> None:
    event = {
        "request": {"url": "http://api/runs", "query_string": "api_key=k-123456&limit=5"},
        "exception": {
            "values": [{"value": "cannot connect to postgresql://crew:Hunter2-pw@db/crew"}]
        },
        "breadcrumbs": {"values": [{"message": "HTTP 401: Authorization: Bearer sk-echoed-123"}]},
    }
    cleaned = Scrubber([]).before_send(event, {})
    assert cleaned["request"]["query_string"] == f"api_key={FILTERED}&limit=5"
    assert "Hunter2-pw" not in cleaned["exception"]["values"][0]["value"]
    assert "sk-echoed-123" not in cleaned["breadcrumbs"]["values"][0]["message"]


def test_an_event_sent_while_a_request_is_served_names_the_request_and_its_route() -> None:
    """Its URL is the one the client sent: under `/api/v1`, the prefix is the request's root
    path (`ApiV1`), which an ASGI path includes."""
    scope = {
        "method": "GET",
        "scheme": "https",
        "root_path": "/api/v1",
        "path": "/api/v1/runs/r-1",
        "query_string": b"api_key=key-123&limit=5",
        "headers": [
            (b"host", b"crew.example"),
            (b"x-api-key", b"key-123"),
            (b"accept", b"a"),
            (b"accept", b"b"),
            (b"cookie", b"session=c"),
        ],
        "route": SimpleNamespace(path="/runs/{run_id}"),
    }
    with request_context("req-1", scope):
        cleaned = Scrubber(["key-123"]).before_send({}, {})
    assert cleaned["request"] == {
        "method": "GET",
        "url": "https://crew.example/api/v1/runs/r-1",
        "query_string": f"api_key={FILTERED}&limit=5",
        "headers": {
            "host": "crew.example",
            "x-api-key": FILTERED,
            "accept": "a, b",
            "cookie": FILTERED,
        },
    }
    assert cleaned["transaction"] == "/runs/{run_id}"
    assert "request" not in Scrubber([]).before_send({}, {})
