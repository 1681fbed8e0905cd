"""A chat-completions server on loopback that answers from a script: what a real OpenAI-compatible
endpoint does (answers, 429s, 500s, slow answers), over real HTTP, for the provider tests."""

import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """Replies in order; once used up, every call is answered normally."""

    replies: deque[tuple[str, Any]] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    # When a client hung up on a ("hang", seconds) reply, by time.monotonic().
    disconnects: list[float] = field(default_factory=list)

    def next_reply(self) -> tuple[str, Any]:
        return self.replies.popleft() if self.replies else ("answer", "A fine answer.")


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
    }


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            script.authorizations.append(self.headers.get("Authorization", ""))
            kind, value = script.next_reply()
            if kind == "status":
                self._send(value, {"error": {"message": f"scripted {value}", "type": "test"}})
            elif kind == "echo":
                # What some gateways do: say which credentials they were sent.
                echoed = f"rejected Authorization: {self.headers.get('Authorization')}"
                self._send(value, {"error": {"message": echoed, "headers": dict(self.headers)}})
            elif kind == "slow":
                time.sleep(value)
                self._send(200, _completion(body, "late"))
            elif kind == "hang":
                self._hang(value, body)
            else:
                self._send(200, _completion(body, value))

        def _hang(self, seconds: float, body: dict[str, Any]) -> None:
            """Answer nothing for `seconds`, noting when the client closes the connection."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.02)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    script.disconnects.append(time.monotonic())
                    return
            self._send(200, _completion(body, "late"))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


@contextmanager
def chat_server(script: Script) -> Iterator[str]:
    """Serve `script` on a free loopback port; yields the base URL (ending in /v1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
