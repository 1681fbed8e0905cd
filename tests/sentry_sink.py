"""A Sentry ingest endpoint on loopback: it keeps every envelope the SDK sends, as a real Sentry
would receive it (DSN `http://public@127.0.0.1:<port>/1`)."""

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Sink:
    """The bodies received, decompressed, in arrival order."""

    bodies: list[bytes] = field(default_factory=list)

    def items(self) -> list[tuple[dict[str, Any], bytes]]:
        """Every envelope item: its header and its payload."""
        return [item for body in list(self.bodies) for item in _envelope_items(body)]

    def events(self) -> list[dict[str, Any]]:
        """The error events received (not sessions or other items)."""
        return [
            json.loads(payload) for header, payload in self.items() if header["type"] == "event"
        ]

    def wait_for_events(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(events := self.events()) < count:
            assert time.monotonic() < deadline, f"{len(events)} of {count} events arrived"
            time.sleep(0.05)
        return events


def _envelope_items(body: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Sentry's envelope format: a header line, then items of a header line and a payload whose
    length the header gives, or which runs to the end of its line."""
    _, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        yield header, payload


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    assert encoding in ("", "identity"), f"the sink cannot read {encoding!r} bodies"
    return body


def _handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            sink.bodies.append(_decompress(body, self.headers.get("Content-Encoding", "")))
            answer = json.dumps({"id": "0" * 32}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


@contextmanager
def sentry_sink() -> Iterator[tuple[Sink, str]]:
    """A running sink and the DSN that points at it."""
    sink = Sink()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(sink))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink, f"http://public@127.0.0.1:{server.server_address[1]}/1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
