"""The API plus two throwaway routes of the tests' own, for the observability tests through a real
uvicorn (`python -m uvicorn tests.instrumented_app:create_instrumented_app --factory`): one streams
chunks over time as an event stream does, one fails as a fault in a route would."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI
from fastapi.responses import StreamingResponse

from apps.api.app import create_app
from apps.api.auth import authenticate
from apps.core.metrics import sse_subscriber_closed, sse_subscriber_opened

STREAM_CHUNKS = 5
STREAM_INTERVAL_SECONDS = 0.3
FAULT_MESSAGE = "the instrumented test fault"


async def _stream(run_id: uuid.UUID) -> StreamingResponse:
    async def chunks() -> AsyncIterator[str]:
        sse_subscriber_opened()
        try:
            for index in range(STREAM_CHUNKS):
                yield f"id: {index}\ndata: chunk {index} of run {run_id}\n\n"
                await asyncio.sleep(STREAM_INTERVAL_SECONDS)
        finally:
            sse_subscriber_closed()

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def _fault(
    run_id: uuid.UUID, node_id: uuid.UUID, body: Annotated[dict[str, Any], Body()]
) -> None:
    raise RuntimeError(FAULT_MESSAGE)


def create_instrumented_app() -> FastAPI:
    app = create_app()
    protected = [Depends(authenticate)]
    app.add_api_route("/runs/{run_id}/test-stream", _stream, dependencies=protected)
    app.add_api_route(
        "/runs/{run_id}/nodes/{node_id}/fault", _fault, methods=["POST"], dependencies=protected
    )
    return app
