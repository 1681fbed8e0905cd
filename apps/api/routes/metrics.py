"""Prometheus metrics, served without a key when METRICS_ENABLED is on (and absent, so a 404,
when it is off)."""

from fastapi import APIRouter, Request, Response

from apps.api.responses import errors
from apps.core import metrics
from apps.orchestrator.reading.gauges import StatusCounts, gauges_if_reachable

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses=errors(400, 422))
async def get_metrics(request: Request) -> Response:
    """Metrics in the Prometheus text format, the database's gauges read now (left out while
    the database is out of reach)."""
    # Runs and nodes by status as `StatusCounts` has them (docs/observability.md).
    counts: StatusCounts = request.app.state.status_counts
    gauges = await gauges_if_reachable(request.app.state.read_engine, counts)
    body = metrics.render(request.app.state.recorded_metrics, gauges)
    return Response(body, media_type=metrics.CONTENT_TYPE)
