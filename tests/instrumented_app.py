"""The API plus a throwaway route of the tests' own, for the observability tests through a real
uvicorn (`python -m uvicorn tests.instrumented_app:create_instrumented_app --factory`): it fails
as a fault in a route would, which no route of the API does on purpose."""

import uuid
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI

from apps.api.app import create_app
from apps.api.auth import authenticate

FAULT_MESSAGE = "the instrumented test fault"


async def _fault(
    run_id: uuid.UUID, node_id: uuid.UUID, body: Annotated[dict[str, Any], Body()]
) -> None:
    raise RuntimeError(FAULT_MESSAGE)


def create_instrumented_app() -> FastAPI:
    app = create_app()
    protected = [Depends(authenticate)]
    app.add_api_route(
        "/runs/{run_id}/nodes/{node_id}/fault", _fault, methods=["POST"], dependencies=protected
    )
    return app
