"""TCP proxies between the service and PostgreSQL. One can stop passing bytes without closing
anything: how a network partition, or a failover that drops packets, looks from the service. The
other resets every connection and refuses new ones: a restarting server, or a failover."""

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TypeVar

from sqlalchemy.engine import make_url

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a reset


class _Proxy(Protocol):
    port: int

    def serve(self) -> None: ...

    def close(self) -> None: ...


P = TypeVar("P", bound=_Proxy)


class FreezingProxy:
    """A TCP proxy to `upstream` on a loopback port of its own; `frozen` stops it passing bytes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.frozen = threading.Event()
        self._stalls: list[threading.Event] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closing = threading.Event()

    def serve(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            stalled = threading.Event()
            self._stalls.append(stalled)
            for source, target in ((client, server), (server, client)):
                pump = threading.Thread(
                    target=self._pump, args=(source, target, stalled), daemon=True
                )
                pump.start()

    def stall_open_connections(self) -> None:
        """Stop passing bytes on the connections open now, for good; new ones pass: a peer
        that went silent without closing, while the server itself still answers."""
        for stalled in self._stalls:
            stalled.set()

    def _pump(self, source: socket.socket, target: socket.socket, stalled: threading.Event) -> None:
        try:
            while chunk := source.recv(65536):
                while (self.frozen.is_set() or stalled.is_set()) and not self._closing.is_set():
                    time.sleep(0.02)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            _close_both(source, target)

    def close(self) -> None:
        self._closing.set()
        self.listener.close()


def proxy_to(url: str) -> AbstractContextManager[tuple[FreezingProxy, str]]:
    """The freezing proxy in front of `url`'s server, and `url` through it."""
    return _in_front_of(url, FreezingProxy)


class ResettingProxy:
    """A TCP proxy to `upstream`; `cut()` resets every connection and refuses new ones until
    `mend()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.refusing = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open: list[socket.socket] = []

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                _reset(client)
                continue
            server = socket.create_connection(self.upstream)
            self._open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pass_on, args=(source, target), daemon=True).start()

    def cut(self) -> None:
        self.refusing.set()
        for end in self._open:
            _reset(end)
        self._open = []

    def mend(self) -> None:
        self.refusing.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _reset(end: socket.socket) -> None:
    with contextlib.suppress(OSError):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        end.close()


def _pass_on(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        _close_both(source, target)


def _close_both(source: socket.socket, target: socket.socket) -> None:
    # A shutdown, not a bare close, wakes the other direction's thread in its `recv`.
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()


def resetting_proxy_to(url: str) -> AbstractContextManager[tuple[ResettingProxy, str]]:
    """The resetting proxy in front of `url`'s server, and `url` through it."""
    return _in_front_of(url, ResettingProxy)


@contextmanager
def _in_front_of(url: str, make: Callable[[tuple[str, int]], P]) -> Iterator[tuple[P, str]]:
    parsed = make_url(url)
    proxy = make((parsed.host or "127.0.0.1", parsed.port or 5432))
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy, parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    finally:
        proxy.close()
        thread.join(timeout=5)
