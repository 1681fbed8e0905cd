"""Sentry: set up once per process from the settings, and what it may carry out of the process.

Only faults are reported: an unhandled error in a route, an unexpected error in a node's execution
or in the worker's bookkeeping of a run (`report_run_error`). Expected outcomes are not: 4xx
answers (the `CrewError` hierarchy), a provider's 429 or 5xx, a node failing by its retry policy.
That is why the SDK's auto-enabled integrations stay off: its OpenAI integration, for one,
reports every failed call (a 429 too) and records prompts.

Nothing that identifies a caller or holds an LLM's input leaves: `before_send` and
`before_breadcrumb` drop request bodies, cookies, `X-API-Key` and `Authorization`, any field named
like a prompt (sidecars carry `prompts`), and pass every text through `redaction.redact`: the
configured secrets and any credential in a URL or a header are replaced wherever they appear.
Events carry the `request_id`, `run_id` and `node_id` tags of the context they happened in.
"""

from collections.abc import Sequence
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.types import Breadcrumb, Event, Hint

from apps.core.logs import current_context
from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings

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

    def before_send(self, event: Event, _hint: Hint) -> Event:
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

    def before_breadcrumb(self, crumb: Breadcrumb, _hint: Hint) -> Breadcrumb:
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


def init_sentry(settings: Settings, integrations: Sequence[Integration] = ()) -> bool:
    """Start reporting to SENTRY_DSN, once per process; whether Sentry is on.

    With no DSN nothing is set up and nothing is ever sent. `integrations` are the web
    framework's, passed by the API (the worker has none).
    """
    if settings.sentry_dsn is None:
        return False
    if sentry_sdk.is_initialized():
        return True
    scrubber = Scrubber(configured_secrets(settings))
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_env,
        release=settings.release,
        integrations=list(integrations),
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


def tag_current_request() -> None:
    """Put the bound ids on the request's Sentry scope, for an error reported after it is served."""
    if sentry_sdk.is_initialized():
        sentry_sdk.get_isolation_scope().set_tags(current_context())


def report_run_error(error: BaseException, *, run_id: object, node_id: object = None) -> None:
    """Report an unexpected error in a run's work, tagged with its run (and node, if one).

    Not for failures the retry policy expects (timeouts, provider errors, invalid outlines).
    """
    if not sentry_sdk.is_initialized():
        return
    tags = {"run_id": str(run_id)} | ({"node_id": str(node_id)} if node_id is not None else {})
    with sentry_sdk.new_scope() as scope:
        scope.set_tags(tags)
        sentry_sdk.capture_exception(error)


def report_error(error: BaseException, **tags: object) -> None:
    """Report an unexpected error with `tags` (a background task's name, for one)."""
    if not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tags({name: str(value) for name, value in tags.items()})
        sentry_sdk.capture_exception(error)
