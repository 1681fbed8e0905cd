"""Sentry: set up once per process from the settings, and what it may carry out of the process.

Only faults are reported: an unhandled error in a route, an unexpected error in a node's execution
or in the worker's bookkeeping of a run (`report_run_error`), an attempt failed by the deployment
(an artifact store that cannot be written, a provider not set up: the worker logs it as an error,
`pass_log`). Expected outcomes are not: 4xx answers (the `CrewError` hierarchy), a provider's 429
or 5xx, a node failing by its retry policy.
That is why the SDK's auto-enabled integrations stay off: its OpenAI integration, for one,
reports every failed call (a 429 too) and records prompts.

A route's fault reaches Sentry through the SDK's logging integration, as the API's error handlers
log it with its traceback. Its Starlette and FastAPI integrations are not used: they cost every
request some 46 µs (near a tenth of a runs page's time on the server) to fork a scope, work out a
transaction name and note the request, for the few requests that fail. Here a request costs one
isolation scope (`request_scope`), and an event takes its request's method, URL and headers, and
its route, from the request being served when it is sent (`before_send`).

Nothing that identifies a caller or holds an LLM's input leaves: `before_send` and
`before_breadcrumb` drop request bodies, cookies, `X-API-Key` and `Authorization`, any field named
like a prompt (sidecars carry `prompts`), and pass every text through `redaction.redact`: the
configured secrets and any credential in a URL or a header are replaced wherever they appear.
Events carry the `request_id`, `run_id` and `node_id` tags of the context they happened in.

The SDK is imported by `init_sentry`, given a DSN: a process without one never loads it (4 MB of
its memory, a thirtieth of the API's), and every function here is then a test of `sys.modules`.
"""

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from apps.core.logs import current_context, current_request
from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Breadcrumb, Event, Hint

FILTERED = "[Filtered]"
SENSITIVE_KEYS = frozenset(
    {
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "cookie",
        "cookies",
        "set-cookie",
        "api_key",
        "openai_api_key",
        "prompt",
        "prompts",
        "messages",
    }
)


class Scrubber:
    """`before_send` and `before_breadcrumb`: see the module's doc."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = tuple(secrets)

    def before_send(self, event: "Event", _hint: "Hint") -> "Event":
        if "request" not in event and (served := current_request()) is not None:
            event["request"] = _request_data(served)
            if (route := getattr(served.get("route"), "path", None)) is not None:
                event.setdefault("transaction", route)
        request = event.get("request")
        if isinstance(request, dict):
            # Request bodies are task specs and prompts; cookies identify a browser.
            request.pop("data", None)
            request.pop("cookies", None)
        tags = event.setdefault("tags", {})
        for name, value in current_context().items():
            tags.setdefault(name, value)
        cleaned: Event = self.clean(event)
        return cleaned

    def before_breadcrumb(self, crumb: "Breadcrumb", _hint: "Hint") -> "Breadcrumb":
        cleaned: Breadcrumb = self.clean(crumb)
        return cleaned

    def clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: FILTERED if str(key).lower() in SENSITIVE_KEYS else self.clean(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.clean(item) for item in value]
        if isinstance(value, str):
            return redact(value, self.secrets, FILTERED)
        return value


def _request_data(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The request of an ASGI `scope` as Sentry shows one (`before_send` scrubs it)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    host = headers.get("host") or ":".join(map(str, scope.get("server") or ("", "")))
    # An ASGI path is the whole path sent, its root path (uvicorn's --root-path, `/api/v1`)
    # included.
    return {
        "method": scope.get("method"),
        "url": f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}",
        "query_string": scope.get("query_string", b"").decode("latin-1"),
        "headers": headers,
    }


def init_sentry(settings: Settings) -> bool:
    """Start reporting to SENTRY_DSN, once per process; whether Sentry is on.

    With no DSN nothing is set up and nothing is ever sent.
    """
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk

    if sentry_sdk.is_initialized():
        return True
    scrubber = Scrubber(configured_secrets(settings))
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_env,
        release=settings.release,
        auto_enabling_integrations=False,
        include_local_variables=False,
        # Release health's per-request sessions cost about 15 µs a request; faults are what we
        # report, and they come with their own counts.
        auto_session_tracking=False,
        max_request_body_size="never",
        before_send=scrubber.before_send,
        before_breadcrumb=scrubber.before_breadcrumb,
    )
    return True


@contextmanager
def request_scope() -> Iterator[None]:
    """A Sentry scope of a request's own, for as long as it is served: what one request adds to
    it (a breadcrumb, a tag) never reaches the events of another, nor what the process logged
    before it."""
    if not _reporting():
        yield
        return
    import sentry_sdk

    with sentry_sdk.isolation_scope() as scope:
        scope.clear_breadcrumbs()
        yield


def report_run_error(error: BaseException, *, run_id: object, node_id: object = None) -> None:
    """Report an unexpected error in a run's work, tagged with its run (and node, if one).

    Not for failures the retry policy expects (timeouts, provider errors, invalid outlines).
    """
    node = {} if node_id is None else {"node_id": node_id}
    report_error(error, run_id=run_id, **node)


def report_error(error: BaseException, **tags: object) -> None:
    """Report an unexpected error with `tags` (a background task's name, for one)."""
    if not _reporting():
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tags({name: str(value) for name, value in tags.items()})
        sentry_sdk.capture_exception(error)


def tag_request(tags: Mapping[str, str]) -> None:
    """Tag what the request being served reports (its `request_scope`)."""
    if not _reporting():
        return
    import sentry_sdk

    sentry_sdk.set_tags(tags)


def _reporting() -> bool:
    """Whether Sentry reports from this process: the SDK loaded and set up (`init_sentry`)."""
    sdk = sys.modules.get("sentry_sdk")
    return sdk is not None and sdk.is_initialized()
