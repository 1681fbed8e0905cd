"""Event streams end as soon as the server is told to stop.

uvicorn stops by waiting for the responses in progress to end, up to its graceful timeout, and
only then runs the lifespan's shutdown. An event stream does not end on its own (the firehose
never does), so at the timeout each one was cancelled, with a traceback apiece, after seconds of
waiting. uvicorn learns of SIGINT and SIGTERM through a handler it installs with
`signal.signal` while it serves; while the app runs, that handler is wrapped so that the app ends
its streams first, each with its response complete (clients reconnect with their
Last-Event-ID), and the server then stops as it would with no stream open.
"""

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_a_servers(handler: object) -> bool:
    """Whether `handler` was installed by a server (uvicorn's `handle_exit`), rather than
    being Python's own or the default."""
    return callable(handler) and handler is not signal.default_int_handler


@contextlib.contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """While the block runs, call `callback` in the running loop when SIGINT or SIGTERM
    arrives, before the server's handler. Nothing is wrapped outside the main thread (where
    signals are delivered) or when no server handles the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    wrapped: dict[int, Callable[[int, FrameType | None], object]] = {}

    def stopping(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to end
            loop.call_soon_threadsafe(callback)
        wrapped[signum](signum, frame)

    for stop_signal in STOP_SIGNALS:
        installed = signal.getsignal(stop_signal)
        if callable(installed) and _is_a_servers(installed):
            wrapped[stop_signal] = installed
            signal.signal(stop_signal, stopping)
    try:
        yield
    finally:
        for number, handler in wrapped.items():
            if signal.getsignal(number) is stopping:
                signal.signal(number, handler)
