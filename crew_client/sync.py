"""The synchronous client: `Client(url, key)`, one typed method per route."""

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from httpx_sse import connect_sse

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
from crew_client import calls
from crew_client.calls import Call
from crew_client.errors import CrewClientError, CrewConnectionError, error_of
from crew_client.outages import Outage
from crew_client.retry import DEFAULT_TIMEOUT, STREAM_TIMEOUT, Attempts, RetryPolicy
from crew_client.streams import Resumption, run_is_over

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """The Crew Orchestrator API over HTTP. Answers are the API's own models (`apps.wire`);
    errors raise `crew_client.errors.ApiError` subclasses with the API's `detail`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = calls.key_headers(key)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: Call[T]) -> T:
        """Send `call`, retrying per the policy within `timeout` seconds, and read its answer."""
        attempts = Attempts(self.retry, self.timeout, idempotent=call.idempotent)
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=call.content,
                    headers=call.headers,
                    timeout=attempts.timeout(),
                )
            except httpx.TransportError as error:
                wait = attempts.after_error(error)
                if wait is None:
                    failure = f"{call.method} {call.path}: {attempts.failure(error)}"
                    raise CrewConnectionError(failure) from error
                time.sleep(wait)
                continue
            if response.is_success:
                return call.answer(response)
            wait = attempts.after_response(response)
            if wait is None:
                raise error_of(response)
            time.sleep(wait)

    def _pages(self, page: Callable[[str | None], Call[Page[T]]]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            answer = self.call(page(cursor))
            yield from answer.items
            if answer.next_cursor is None:
                return
            cursor = answer.next_cursor

    def health(self) -> Health:
        return self.call(calls.health())

    def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        q: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        return self.call(
            calls.list_runs(
                status=status,
                q=q,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter_runs(
        self, *, status: RunStatus | str | None = None, q: str | None = None
    ) -> Iterator[RunSummary]:
        """Every run (newest first), page after page."""
        return self._pages(lambda cursor: calls.list_runs(status=status, q=q, cursor=cursor))

    def get_run(self, run_id: uuid.UUID | str) -> Run:
        return self.call(calls.get_run(run_id))

    def list_nodes(
        self, run_id: uuid.UUID | str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Node]:
        return self.call(calls.list_nodes(run_id, limit=limit, cursor=cursor))

    def iter_nodes(self, run_id: uuid.UUID | str) -> Iterator[Node]:
        """A run's nodes in plan order, page after page."""
        return self._pages(lambda cursor: calls.list_nodes(run_id, cursor=cursor))

    def get_node(self, node_id: uuid.UUID | str) -> Node:
        return self.call(calls.get_node(node_id))

    def list_artifacts(
        self,
        *,
        run_id: uuid.UUID | str | None = None,
        node_id: uuid.UUID | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Artifact]:
        return self.call(
            calls.list_artifacts(run_id=run_id, node_id=node_id, limit=limit, cursor=cursor)
        )

    def iter_artifacts(
        self, *, run_id: uuid.UUID | str | None = None, node_id: uuid.UUID | str | None = None
    ) -> Iterator[Artifact]:
        return self._pages(
            lambda cursor: calls.list_artifacts(run_id=run_id, node_id=node_id, cursor=cursor)
        )

    def get_artifact(self, artifact_id: uuid.UUID | str) -> Artifact:
        return self.call(calls.get_artifact(artifact_id))

    def get_artifact_content(self, artifact_id: uuid.UUID | str) -> bytes:
        return self.call(calls.get_artifact_content(artifact_id))

    def list_events(
        self,
        *,
        run_id: uuid.UUID | str | None = None,
        after: int | None = None,
        types: Sequence[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Event]:
        return self.call(
            calls.list_events(run_id=run_id, after=after, types=types, limit=limit, cursor=cursor)
        )

    def iter_events(
        self,
        *,
        run_id: uuid.UUID | str | None = None,
        after: int | None = None,
        types: Sequence[str] = (),
    ) -> Iterator[Event]:
        """Events in id order (after `after`), page after page, up to the last one there is."""
        return self._pages(
            lambda cursor: calls.list_events(run_id=run_id, after=after, types=types, cursor=cursor)
        )

    def stream_events(
        self, run_id: uuid.UUID | str | None = None, *, after: int | None = None
    ) -> Iterator[Event]:
        """Events live, as the server sends them. A dropped connection (a restart, a proxy) is
        reopened with `Last-Event-ID`, so no event is missed or repeated; so is one refused by
        an outage (502, 503, 504), after its Retry-After (`crew_client.outages`). After
        `retry.attempts * 4` failures in a row, the last is raised. A run's stream ends after
        the run's final event; the stream of every run never ends."""
        position = Resumption(run_id, after)
        outage = Outage(self.retry, limit=self.retry.attempts * 4)
        while True:
            try:
                yield from self._one_connection(position)
                if position.finished:
                    return
                if position.ended_quietly():
                    # Nothing came: the run may have ended before this connection opened.
                    if run_is_over(self.get_run(str(run_id))):
                        return
                    time.sleep(self.retry.delay(0))
                outage.over()
            except CrewClientError as error:
                seconds = outage.wait(error)
                if seconds is None:
                    raise
                time.sleep(seconds)
            position.reconnecting()

    def _one_connection(self, position: Resumption) -> Iterator[Event]:
        request = position.request()
        try:
            with connect_sse(self._http, "GET", timeout=STREAM_TIMEOUT, **request) as source:
                response = source.response
                if not response.is_success:
                    response.read()
                    raise error_of(response)
                position.check_opened(response)
                for sse in source.iter_sse():
                    event = position.read(sse)
                    if event is not None:
                        yield event
                    if position.finished:
                        return
        except httpx.TransportError as error:
            raise CrewConnectionError(f"event stream: {error}") from error

    def submit_task(self, title: str, task_spec: Mapping[str, Any]) -> Run:
        return self.call(calls.submit_task(title, task_spec))

    def list_gates(
        self,
        *,
        status: GateStatus | str | None = None,
        run_id: uuid.UUID | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Gate]:
        return self.call(calls.list_gates(status=status, run_id=run_id, limit=limit, cursor=cursor))

    def iter_gates(
        self, *, status: GateStatus | str | None = None, run_id: uuid.UUID | str | None = None
    ) -> Iterator[Gate]:
        return self._pages(
            lambda cursor: calls.list_gates(status=status, run_id=run_id, cursor=cursor)
        )

    def approve(
        self,
        run_id: uuid.UUID | str,
        *,
        node_id: uuid.UUID | str | None = None,
        notes: str | None = None,
        patch: str | Mapping[str, Any] | None = None,
    ) -> Gate:
        return self.call(calls.approve(run_id, node_id=node_id, notes=notes, patch=patch))

    def reject(
        self,
        run_id: uuid.UUID | str,
        *,
        node_id: uuid.UUID | str | None = None,
        notes: str | None = None,
        action: Literal["retry", "fail"] = "retry",
    ) -> Gate:
        return self.call(calls.reject(run_id, node_id=node_id, notes=notes, action=action))

    def cancel(self, run_id: uuid.UUID | str) -> Run:
        return self.call(calls.cancel(run_id))

    def resume(self, run_id: uuid.UUID | str) -> Run:
        return self.call(calls.resume(run_id))

    def get_operator_config(self) -> dict[str, Any]:
        return self.call(calls.get_operator_config())

    def validate_config(
        self,
        document: bytes | str,
        *,
        media_type: Literal["application/json", "application/yaml"] = "application/yaml",
        kind: Literal["settings", "gate_policy"] | None = None,
    ) -> ValidationReport:
        return self.call(calls.validate_config(document, media_type=media_type, kind=kind))

    def list_keys(self, *, limit: int | None = None, cursor: str | None = None) -> Page[ApiKey]:
        return self.call(calls.list_keys(limit=limit, cursor=cursor))

    def iter_keys(self) -> Iterator[ApiKey]:
        return self._pages(lambda cursor: calls.list_keys(cursor=cursor))

    def get_key(self, name: str) -> ApiKey:
        return self.call(calls.get_key(name))

    def create_key(self, name: str, role: KeyRole | str) -> CreatedApiKey:
        return self.call(calls.create_key(name, role))

    def revoke_key(self, name: str) -> ApiKey:
        return self.call(calls.revoke_key(name))
