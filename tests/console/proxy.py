"""A reverse proxy on loopback that serves an app under a prefix as nginx's
`location /crew/ { proxy_pass http://127.0.0.1:8000/; }` does: the prefix is taken off the path,
`Host` passed through, and nothing else rewritten (not the answer's `Location`, its links or its
cookies), so a page works through it only if the app writes every URL under the prefix itself.
Answers are passed on as they come, so event streams stay live. Outside the prefix: 404."""

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Headers of one connection, not of the request or answer: never passed on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)


def _handler(prefix: str, upstream_port: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0, the default: each answer ends with its connection, so one streamed as it
        # comes needs no length and no chunking.
        def log_message(self, *_: Any) -> None:
            return

        def _forward(self) -> None:
            if not self.path.startswith(prefix + "/"):
                self.send_error(404, f"not under {prefix}/")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                upstream.putrequest(
                    self.command,
                    self.path.removeprefix(prefix),
                    skip_host=True,
                    skip_accept_encoding=True,
                )
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        upstream.putheader(name, value)
                upstream.endheaders(body)
                answer = upstream.getresponse()
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.end_headers()
                while chunk := answer.read1(64 * 1024):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the browser left, e.g. a page with an open event stream was closed
            finally:
                upstream.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    return Handler


@contextmanager
def path_stripping_proxy(prefix: str, upstream_port: int) -> Iterator[str]:
    """The proxy, on a free loopback port, in front of the server on `upstream_port`; its base
    URL, the prefix included."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(prefix, upstream_port))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
