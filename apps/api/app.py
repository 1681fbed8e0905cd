"""The FastAPI application: built by `create_app`, its engine opened and closed by the lifespan."""

import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from apps.api.aliases import ALIASES_DESCRIPTION, ApiV1, job_routes
from apps.api.auth import ROLES_DESCRIPTION, authenticate
from apps.api.errors import install_error_handlers
from apps.api.middleware import ObservedFastAPI
from apps.api.observability import instrument
from apps.api.openapi import use_described_openapi
from apps.api.reference import serve_api_reference
from apps.api.repeated_query import refuse_repeated_query
from apps.api.revocations import streams_end_on_revocation
from apps.api.routes import (
    artifacts,
    checks,
    config,
    control,
    events,
    gates,
    health,
    keys,
    nodes,
    runs,
    streams,
    tasks,
)
from apps.api.sse import DetachedStreams
from apps.api.stopping import on_stop_signal
from apps.api.storable_input import refuse_unstorable_input
from apps.api.timezone import use_request_timezone
from apps.console.install import install_console
from apps.core.database import open_database
from apps.core.error_reporting import init_sentry
from apps.core.metrics import forget_this_process
from apps.core.read_connections import driver_reads
from apps.core.settings import Settings, load_settings
from apps.core.supervision import supervised
from apps.orchestrator.infra.storage import open_artifact_store
from apps.orchestrator.plans.gate_policy import gate_policy_of
from apps.orchestrator.reading.event_feed import build_event_feed
from apps.orchestrator.worker.loop import Worker

# Python's default (700) collects the young objects every few hundred new ones: with a thousand
# open event streams that is several times per batch of events, and now and then it goes on to
# every object, the streams' included, which stalls every stream for tens of milliseconds.
YOUNG_OBJECTS_PER_COLLECTION = 20_000

_PROTECTED_ROUTERS = (
    tasks.router,
    runs.router,
    control.router,
    gates.router,
    nodes.router,
    artifacts.router,
    events.router,
    streams.router,
    config.router,
    keys.router,
    checks.router,
)

# FastAPI's own /docs and /redoc load Swagger UI and ReDoc from CDNs: `serve_api_reference`
# serves them with the app's own files instead.
_NO_CDN_PAGES: dict[str, Any] = {"docs_url": None, "redoc_url": None}
# API_DOCS_ENABLED=0: no /docs, /redoc or /openapi.json (404s, with a key or without).
_NO_API_REFERENCE: dict[str, Any] = {"openapi_url": None}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        database = await stack.enter_async_context(open_database(app.state.settings))
        app.state.engine = database.engine
        app.state.read_engine = database.read_engine
        app.state.driver_reads = await stack.enter_async_context(
            driver_reads(database.read_engine, app.state.settings.db_pool_size)
        )
        app.state.sessions = database.sessions
        app.state.transactions = database.transactions
        app.state.event_feed = build_event_feed(
            database,
            poll_seconds=app.state.settings.event_poll_seconds,
            buffer_limit=app.state.settings.sse_subscriber_buffer,
        )
        await stack.enter_async_context(app.state.event_feed.running())
        stack.enter_context(on_stop_signal(app.state.event_feed.end_all_streams))
        await stack.enter_async_context(
            streams_end_on_revocation(app.state.event_feed, database.engine)
        )
        app.state.worker = None
        if app.state.settings.worker_in_api:
            app.state.worker = Worker(
                database.transactions, app.state.settings, store=app.state.artifact_store
            )
            await stack.enter_async_context(supervised("worker", app.state.worker.run))
        # What start-up built lives as long as the process: keep it out of the collector's
        # scans, which otherwise grow with every module and route the app has loaded.
        gc.freeze()
        gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION)
        try:
            yield
        finally:
            forget_this_process(app.state.settings.prometheus_multiproc_dir)


def _include_routes(app: FastAPI) -> None:
    """Every route, and the Operator Console's `/jobs` names for the run routes; `ApiV1` serves
    them all under /api/v1 too."""
    app.include_router(health.router)
    # The key first: a caller without one learns nothing about its input. Health and metrics
    # have no timestamps, so a bad X-Timezone is not their concern.
    guards = [
        Depends(authenticate),
        Depends(refuse_unstorable_input),
        Depends(refuse_repeated_query),
        Depends(use_request_timezone),
    ]
    for router in (*_PROTECTED_ROUTERS, job_routes(_PROTECTED_ROUTERS)):
        app.include_router(router, dependencies=guards)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API with its routes, auth, error handlers and CORS, configured by `settings`."""
    settings = settings or load_settings()
    gate_policy_of(settings)  # a bad GATE_POLICY_FILE stops start-up, not the first submission
    init_sentry(settings)
    app = ObservedFastAPI(
        title="Crew Orchestrator",
        summary="Operator API for multi-agent LLM runs.",
        description=f"{ROLES_DESCRIPTION}\n{ALIASES_DESCRIPTION}",
        version="0.1.0",
        lifespan=_lifespan,
        **_NO_CDN_PAGES,
        **({} if settings.api_docs_enabled else _NO_API_REFERENCE),
    )
    app.state.settings = settings
    app.state.artifact_store = open_artifact_store(settings)
    install_error_handlers(app)
    use_described_openapi(app)
    if settings.api_docs_enabled:
        serve_api_reference(app)
    instrument(app, settings)
    app.outer_middleware.append(DetachedStreams)  # innermost: event streams outlive the stack
    _include_routes(app)
    install_console(app)  # the web console under /ui; `/` opens it
    app.add_middleware(ApiV1)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", "X-Request-ID"],
        )
    return app
