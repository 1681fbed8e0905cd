"""Every route of the API as a `Call`: what to send and how to read the answer. The sync and
async clients only send them, so both speak the API the same way."""

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel

from apps.wire.schemas import (
    ApiKey,
    Artifact,
    CreatedApiKey,
    Event,
    Gate,
    Health,
    Node,
    Page,
    Run,
    RunSummary,
    ValidationReport,
)
from apps.wire.statuses import GateStatus, KeyRole, RunStatus
from crew_client.errors import InvalidKey, UnexpectedAnswer
from crew_client.paths import key_name, optional_uuid, path, uuid_of

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# The events after which a run's stream ends: the run reached a final status.
RUN_FINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
RUN_FINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and how its successful answer becomes a `T`."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"

    def answer(self, response: httpx.Response) -> T:
        """The successful `response` read as this call's result."""
        try:
            return self.read(response)
        except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            raise unexpected_answer(response) from error


def key_headers(key: str | None) -> dict[str, str]:
    """The header that carries `key` on every request (none without a key); a key no header can
    carry is an `InvalidKey` here, before anything is sent."""
    if not key:
        return {}
    if not (key.isascii() and key.isprintable()):
        raise InvalidKey()
    return {"X-API-Key": key}


def unexpected_answer(response: httpx.Response) -> UnexpectedAnswer:
    """The error for a success whose body is not what the API sends (see `UnexpectedAnswer`)."""
    kind = response.headers.get("Content-Type", "no content type")
    return UnexpectedAnswer(
        f"{response.request.method} {response.request.url.path} answered "
        f"{response.status_code} ({kind}) with what the API does not send; is the URL the API's?"
    )


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _page(model: type[M]) -> Callable[[httpx.Response], Page[M]]:
    return lambda response: Page[model].model_validate_json(response.content)  # type: ignore[valid-type]


def _query(**params: Any) -> dict[str, Any]:
    """Query parameters without the ones left out; timestamps in ISO 8601."""
    query: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        query[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return query


def _run_action(run_id: uuid.UUID | str, action: str) -> str:
    return path("runs", uuid_of(run_id, "run id"), action)


def health() -> Call[Health]:
    return Call("GET", "/health", _model(Health))


def list_runs(
    *,
    status: RunStatus | str | None = None,
    q: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[RunSummary]]:
    params = _query(
        status=status,
        q=q,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/runs", _page(RunSummary), params)


def get_run(run_id: uuid.UUID | str) -> Call[Run]:
    return Call("GET", path("runs", uuid_of(run_id, "run id")), _model(Run))


def list_nodes(
    run_id: uuid.UUID | str, *, limit: int | None = None, cursor: str | None = None
) -> Call[Page[Node]]:
    where = path("runs", uuid_of(run_id, "run id"), "nodes")
    return Call("GET", where, _page(Node), _query(limit=limit, cursor=cursor))


def get_node(node_id: uuid.UUID | str) -> Call[Node]:
    return Call("GET", path("nodes", uuid_of(node_id, "node id")), _model(Node))


def list_artifacts(
    *,
    run_id: uuid.UUID | str | None = None,
    node_id: uuid.UUID | str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Artifact]]:
    params = _query(
        run_id=optional_uuid(run_id, "run id"),
        node_id=optional_uuid(node_id, "node id"),
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/artifacts", _page(Artifact), params)


def get_artifact(artifact_id: uuid.UUID | str) -> Call[Artifact]:
    return Call("GET", path("artifacts", uuid_of(artifact_id, "artifact id")), _model(Artifact))


def get_artifact_content(artifact_id: uuid.UUID | str) -> Call[bytes]:
    where = path("artifacts", uuid_of(artifact_id, "artifact id"), "content")
    return Call("GET", where, _file)


def _file(response: httpx.Response) -> bytes:
    """An artifact's file, as the API sends it: under its name (Content-Disposition). Any body
    is a file, so a page that is not the API's (a proxy's sign-in) is told apart by that."""
    if "Content-Disposition" not in response.headers:
        raise unexpected_answer(response)
    return response.content


def list_events(
    *,
    run_id: uuid.UUID | str | None = None,
    after: int | None = None,
    types: Sequence[str] = (),
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Event]]:
    params = _query(
        run_id=optional_uuid(run_id, "run id"),
        after=after,
        type=",".join(types) or None,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/events", _page(Event), params)


def submit_task(title: str, task_spec: Mapping[str, Any]) -> Call[Run]:
    body = {"title": title, "task_spec": dict(task_spec)}
    return Call("POST", "/tasks", _model(Run), json=body)


def list_gates(
    *,
    status: GateStatus | str | None = None,
    run_id: uuid.UUID | str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Gate]]:
    params = _query(
        status=status, run_id=optional_uuid(run_id, "run id"), limit=limit, cursor=cursor
    )
    return Call("GET", "/gates", _page(Gate), params)


def approve(
    run_id: uuid.UUID | str,
    *,
    node_id: uuid.UUID | str | None = None,
    notes: str | None = None,
    patch: str | Mapping[str, Any] | None = None,
) -> Call[Gate]:
    where = _run_action(run_id, "approve")
    body = _query(node_id=optional_uuid(node_id, "node id"), notes=notes)
    if patch is not None:
        body["patch"] = patch if isinstance(patch, str) else dict(patch)
    return Call("POST", where, _model(Gate), json=body)


def reject(
    run_id: uuid.UUID | str,
    *,
    node_id: uuid.UUID | str | None = None,
    notes: str | None = None,
    action: Literal["retry", "fail"] = "retry",
) -> Call[Gate]:
    where = _run_action(run_id, "reject")
    body = {**_query(node_id=optional_uuid(node_id, "node id"), notes=notes), "action": action}
    return Call("POST", where, _model(Gate), json=body)


def cancel(run_id: uuid.UUID | str) -> Call[Run]:
    return Call("POST", _run_action(run_id, "cancel"), _model(Run))


def resume(run_id: uuid.UUID | str) -> Call[Run]:
    return Call("POST", _run_action(run_id, "resume"), _model(Run))


def get_operator_config() -> Call[dict[str, Any]]:
    """The settings in force (secrets redacted) and the gate policy: their fields follow the
    server's settings, so they come as JSON."""
    return Call("GET", "/config/operator", lambda response: dict(response.json()))


def validate_config(
    document: bytes | str,
    *,
    media_type: Literal["application/json", "application/yaml"] = "application/yaml",
    kind: Literal["settings", "gate_policy"] | None = None,
) -> Call[ValidationReport]:
    content = document.encode() if isinstance(document, str) else document
    return Call(
        "POST",
        "/config/validate",
        _model(ValidationReport),
        _query(kind=kind),
        content=content,
        headers={"Content-Type": media_type},
    )


def list_keys(*, limit: int | None = None, cursor: str | None = None) -> Call[Page[ApiKey]]:
    return Call("GET", "/keys", _page(ApiKey), _query(limit=limit, cursor=cursor))


def get_key(name: str) -> Call[ApiKey]:
    return Call("GET", path("keys", key_name(name)), _model(ApiKey))


def create_key(name: str, role: KeyRole | str) -> Call[CreatedApiKey]:
    return Call("POST", "/keys", _model(CreatedApiKey), json={"name": name, "role": str(role)})


def revoke_key(name: str) -> Call[ApiKey]:
    return Call("POST", path("keys", key_name(name), "revoke"), _model(ApiKey))
