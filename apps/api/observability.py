"""Wiring metrics and request ids into the app, as the settings say."""

from apps.api.middleware import MetricsMiddleware, ObservedFastAPI, RequestContextMiddleware
from apps.api.routes import metrics as metrics_route
from apps.core.metrics import recorded_metrics
from apps.core.settings import Settings
from apps.orchestrator.reading.gauges import StatusCounts


def instrument(app: ObservedFastAPI, settings: Settings) -> None:
    """Request ids (and each request's own Sentry scope) always; metrics and `/metrics` when
    METRICS_ENABLED is on."""
    app.outer_middleware.append(RequestContextMiddleware)
    if settings.metrics_enabled:
        app.outer_middleware.append(MetricsMiddleware)
        app.state.recorded_metrics = recorded_metrics(settings.prometheus_multiproc_dir)
        app.state.status_counts = StatusCounts()
        app.include_router(metrics_route.router)
