"""ASGI scopes as uvicorn builds them, for tests that drive an app or a middleware by hand."""

from typing import Any


def http_request(method: str, path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """The scope of a `method` request for `path` with a Host header and `headers`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def http_get(path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """The scope of a GET of `path` with a Host header and `headers`."""
    return http_request("GET", path, *headers)
