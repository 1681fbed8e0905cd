"""The API plus throwaway routes of the tests' own, for the observability tests through a real
uvicorn (`python -m uvicorn tests.instrumented_app:create_instrumented_app --factory`): they fail
as a fault in a route would, which no route of the API does on purpose: with an unexpected
exception, and with a bare `CrewError` (the hierarchy's "unexpected fault", 500); another logs a
note and answers 204."""

import logging
import uuid
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Response

from apps.api.app import create_app
from apps.api.auth import authenticate
from apps.core.errors import CrewError

FAULT_MESSAGE = "the instrumented test fault"
CREW_FAULT_MESSAGE = "the instrumented CrewError"
BEFORE_THE_FAULT = "the fault's request is about to fail"

logger = logging.getLogger(__name__)


async def _fault(
    run_id: uuid.UUID, node_id: uuid.UUID, body: Annotated[dict[str, Any], Body()]
) -> None:
    logger.warning(BEFORE_THE_FAULT)
    raise RuntimeError(FAULT_MESSAGE)


async def _note(note: Annotated[str, Body(embed=True)]) -> Response:
    logger.warning("note: %s", note)
    return Response(status_code=204)


async def _crew_fault(run_id: uuid.UUID) -> None:
    raise CrewError(CREW_FAULT_MESSAGE)


def create_instrumented_app() -> FastAPI:
    app = create_app()
    protected = [Depends(authenticate)]
    app.add_api_route(
        "/runs/{run_id}/nodes/{node_id}/fault", _fault, methods=["POST"], dependencies=protected
    )
    app.add_api_route("/runs/{run_id}/crew-fault", _crew_fault, dependencies=protected)
    app.add_api_route("/note", _note, methods=["POST"], dependencies=protected)
    return app
