"""Wiring metrics, request ids and Sentry into the app, as the settings say."""

from typing import Any

from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from apps.api.middleware import MetricsMiddleware, ObservedFastAPI, RequestContextMiddleware
from apps.api.routes import metrics as metrics_route
from apps.core.error_reporting import init_sentry
from apps.core.metrics import recorded_metrics
from apps.core.settings import Settings
from apps.orchestrator.reading.gauges import StatusCounts

# 4xx answers are expected outcomes (the CrewError hierarchy); only server errors are faults.
_SERVER_ERRORS = frozenset(range(500, 600))


def start_error_reporting(settings: Settings) -> bool:
    """Sentry with the FastAPI integration, before any route exists (it wraps their handlers)."""
    # No performance transactions (no HTTP method starts one): errors are what we report, and a
    # transaction per request is most of what the integration costs.
    options: dict[str, Any] = {
        "failed_request_status_codes": set(_SERVER_ERRORS),
        "http_methods_to_capture": (),
    }
    integrations = [StarletteIntegration(**options), FastApiIntegration(**options)]
    return init_sentry(settings, integrations)


def instrument(app: ObservedFastAPI, settings: Settings) -> None:
    """Request ids always; metrics and `/metrics` when METRICS_ENABLED is on."""
    app.outer_middleware.append(RequestContextMiddleware)
    if settings.metrics_enabled:
        app.outer_middleware.append(MetricsMiddleware)
        app.state.recorded_metrics = recorded_metrics(settings.prometheus_multiproc_dir)
        app.state.status_counts = StatusCounts()
        app.include_router(metrics_route.router)
