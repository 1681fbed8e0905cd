"""What the sync and async event streams share: how an event is read, where a stream resumes,
and when an ended stream is over for good rather than cut by a restart."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from apps.wire.schemas import Event, Run
from crew_client.calls import RUN_FINAL_EVENTS, RUN_FINAL_STATUSES, unexpected_answer
from crew_client.errors import UnexpectedAnswer
from crew_client.paths import optional_uuid, path


@dataclass
class Resumption:
    """A stream's position across its connections: the last event id seen, and what the
    connection now open has brought."""

    run_id: uuid.UUID | str | None
    last_event_id: int | None
    received: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self.run_id = optional_uuid(self.run_id, "run id")

    def request(self) -> dict[str, Any]:
        """The path, query and headers of the next connection."""
        if self.run_id is None:
            url = path("events", "stream")
        else:
            url = path("runs", str(self.run_id), "events", "stream")
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        return {"url": url, "headers": headers}

    def check_opened(self, response: httpx.Response) -> None:
        """`UnexpectedAnswer` unless the successful `response` is an event stream: a page that
        is not the API's (a proxy's sign-in) would otherwise be waited on as a stream that
        stays silent, and then retried as an outage."""
        kind = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind != "text/event-stream":
            raise unexpected_answer(response)

    def read(self, sse: ServerSentEvent) -> Event | None:
        """The event `sse` carries (None for one without data), remembered as the last seen."""
        if not sse.data:
            return None
        try:
            event = Event.model_validate_json(sse.data)
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise UnexpectedAnswer(
                f"the event stream sent what is not an event of the API: {sse.data[:60]!r}"
            ) from error
        self.last_event_id = event.id
        self.received += 1
        self.finished = self.run_id is not None and event.type in RUN_FINAL_EVENTS
        return event

    def reconnecting(self) -> None:
        self.received = 0

    def ended_quietly(self) -> bool:
        """Whether the connection that just ended cleanly brought nothing: the run may have
        ended before it opened (then its status says so)."""
        return self.run_id is not None and self.received == 0


def run_is_over(run: Run) -> bool:
    return run.status in RUN_FINAL_STATUSES
