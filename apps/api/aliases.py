"""The Operator Console document's names for our routes: jobs for runs, and `/api/v1` before
every path.

A job route is the original route again at another path: the same handler, role checks, body
limit, declared answers and response model, so the two can never answer differently; the OpenAPI
document shows it once, under the `jobs` tag. Under `/api/v1` the whole app is served a second
time (`ApiV1`): a request there is routed as the same path without it, so every route, those
added later included, is there with nothing to keep in step and no second table of routes to
match. The OpenAPI document does not list them twice; its description says they exist.
"""

from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from apps.api.routing import ProtectedRoute
from apps.console.web import ROOT_PATH_BEFORE_API_V1

API_V1 = "/api/v1"
_UNDER_API_V1 = f"{API_V1}/"
JOBS_TAG = "jobs"

# (method, our path) -> the Operator Console's path for it.
JOB_PATHS: dict[tuple[str, str], str] = {
    ("POST", "/tasks"): "/jobs",
    ("GET", "/runs"): "/jobs",
    ("GET", "/runs/{run_id}"): "/jobs/{run_id}",
    ("POST", "/runs/{run_id}/approve"): "/jobs/{run_id}/approve",
    ("POST", "/runs/{run_id}/reject"): "/jobs/{run_id}/reject",
    ("POST", "/runs/{run_id}/resume"): "/jobs/{run_id}/resume",
    ("POST", "/runs/{run_id}/cancel"): "/jobs/{run_id}/cancel",
    ("GET", "/runs/{run_id}/events"): "/jobs/{run_id}/events",
    ("GET", "/runs/{run_id}/events/stream"): "/jobs/{run_id}/events/stream",
    ("GET", "/runs/{run_id}/artifacts"): "/jobs/{run_id}/artifacts",
}

ALIASES_DESCRIPTION = f"""\
Every route is also served under `{API_V1}` (e.g. `{API_V1}/healthz`, `{API_V1}/runs`), with the
same auth and answers; those copies are not listed here. The `{JOBS_TAG}` routes are the Operator
Console's names for runs: a job is a run, and each answers as the route it names.
"""


def _add_alias(jobs: APIRouter, route: APIRoute, method: str, path: str) -> None:
    title = route.summary or route.name.replace("_", " ").capitalize()
    jobs.add_api_route(
        path,
        route.endpoint,
        methods=[method],
        name=f"{route.name}_as_job",
        summary=f"{title} (as a job)",
        description=f"`{method} {route.path}` under the Operator Console's name: the same "
        f"handler, auth and answers.\n\n{route.description}",
        response_model=route.response_model,
        status_code=route.status_code,
        responses=dict(route.responses),
        response_class=route.response_class,
        dependencies=list(route.dependencies),
        openapi_extra=route.openapi_extra,
        max_body_size=route.body_limit if isinstance(route, ProtectedRoute) else None,
    )


def job_routes(routers: Iterable[APIRouter]) -> APIRouter:
    """The `/jobs` routes: each route of `routers` that `JOB_PATHS` names, at its job path."""
    jobs = APIRouter(tags=[JOBS_TAG], route_class=ProtectedRoute)
    aliased = set()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            for method in sorted(route.methods or ()):
                path = JOB_PATHS.get((method, route.path))
                if path is not None:
                    _add_alias(jobs, route, method, path)
                    aliased.add((method, route.path))
    # A route renamed or removed would take its job alias with it, silently: refuse to start.
    if missing := sorted(set(JOB_PATHS) - aliased):
        raise RuntimeError(f"job aliases name routes that do not exist: {missing}")
    return jobs


class ApiV1:
    """Serves the app under `/api/v1` as at its root, as Starlette's `Mount` serves an app: a
    request there keeps the path it was sent to, and the prefix joins its `root_path`, which
    routing takes off (an ASGI path includes its root path). So the server's access log, error
    logs, Sentry events and redirects show the path the client sent, and the middleware outside
    this one find the route it matched in the same scope (metrics count it under the route's
    template, `/runs/{run_id}`, whichever path it came by). The root path it had before is kept
    for the console: a page opened under the prefix leads to the console at the app's root."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = get_route_path(scope)
            if path == API_V1 or path.startswith(_UNDER_API_V1):
                scope[ROOT_PATH_BEFORE_API_V1] = scope.get("root_path", "")
                scope["root_path"] = scope.get("root_path", "") + API_V1
        await self.app(scope, receive, send)
