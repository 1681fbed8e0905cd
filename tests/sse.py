"""Reading Server-Sent Events in tests: the messages of a stream, and its heartbeat comments."""

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SseStream:
    """What a stream carried: each message's fields, and how many comment-only blocks came."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0

    @property
    def ids(self) -> list[int]:
        return [int(message["id"]) for message in self.messages]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The `data:` of each message, parsed."""
        return [message["data"] for message in self.messages]

    def feed(self, block: str) -> None:
        """Add one block (the lines between two blank lines)."""
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name:
                fields[name] = value
        if not fields:
            self.heartbeats += 1
            return
        fields["data"] = json.loads(fields["data"])
        self.messages.append(fields)


def parse_sse(text: str) -> SseStream:
    stream = SseStream()
    for block in text.split("\n\n"):
        if block:
            stream.feed(block)
    return stream
