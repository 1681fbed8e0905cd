"""A Python client of the Crew Orchestrator API: sync (`Client`) and async (`AsyncClient`).

    from crew_client import Client

    with Client("http://127.0.0.1:8000", key="...") as crew:
        run = crew.submit_task("Demo", {"type": "demo"})
        for event in crew.stream_events(run.id):
            print(event.type)

Answers are the models the API declares (`apps.wire.schemas`); errors are `ApiError`
subclasses carrying the API's `detail` (`crew_client.errors`); 503s and connection failures are
retried with backoff (`RetryPolicy`), within the client's `timeout` (`crew_client.retry`).
"""

from apps.wire.schemas import (
    ApiKey,
    Artifact,
    CreatedApiKey,
    Event,
    Gate,
    Node,
    Page,
    Run,
    RunSummary,
    ValidationReport,
)
from apps.wire.statuses import GateStatus, KeyRole, NodeStatus, RunStatus
from crew_client.aio import AsyncClient
from crew_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    CrewClientError,
    CrewConnectionError,
    Forbidden,
    InvalidId,
    InvalidKey,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedAnswer,
    Unprocessable,
)
from crew_client.retry import RetryPolicy
from crew_client.sync import DEFAULT_URL, Client

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "ApiKey",
    "Artifact",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "CreatedApiKey",
    "CrewClientError",
    "CrewConnectionError",
    "Event",
    "Forbidden",
    "Gate",
    "GateStatus",
    "InvalidId",
    "InvalidKey",
    "KeyRole",
    "Node",
    "NodeStatus",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "RetryPolicy",
    "Run",
    "RunStatus",
    "RunSummary",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "UnexpectedAnswer",
    "Unprocessable",
    "ValidationReport",
]
