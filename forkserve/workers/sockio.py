"""Blocking-with-deadline reads and writes on non-blocking sockets.

The sync worker keeps every client socket non-blocking so its event loop
never stalls; while a request is being served it needs ordinary blocking
reads and writes, but bounded in time.  ``socket.settimeout`` would poll
before every call; these try the call first and poll only when the kernel
says it would block.

``progress(n)`` is called with the bytes each call moved (0 for a second
spent waiting on a slow client); the worker decides what counts as progress
(``Exchange.progressing``).  A write cut short by the client raises with
``written``, the bytes of that write the client did get.

TLS sockets (``ssl.SSLSocket``) go through the same functions: "would
block" is then ``SSLWantReadError`` or ``SSLWantWriteError`` (which also
says which way to wait), a write that would block must be retried with the
same bytes (OpenSSL has taken part of them), and any other TLS error means
the client is gone.  sendfile is for plain sockets only.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from typing import Callable

__all__ = ["ClientGone", "ClientTimeout", "recv_some", "send_all", "sendfile_all",
           "WOULD_BLOCK"]

_WANT_READ = ssl.SSLWantReadError
_WANT_WRITE = ssl.SSLWantWriteError
#: What a non-blocking recv or send raises when it cannot go on now, plain
#: or TLS.
WOULD_BLOCK = (BlockingIOError, _WANT_READ, _WANT_WRITE)
# The client is gone: reset, closed, or its TLS stream broken (after the
# two above, which are ssl.SSLError too).
_GONE = (ConnectionResetError, BrokenPipeError, ssl.SSLError)


class ClientGone(ConnectionError):
    """The client closed or reset the connection mid-exchange."""

    written = 0


class ClientTimeout(TimeoutError):
    """The client made no progress within the allowed time."""

    written = 0


def _cut(exc: OSError, written: int) -> OSError:
    exc.written = written  # type: ignore[attr-defined]
    return exc


def _wait(sock: socket.socket, event: int, timeout: float,
          progress: Callable[[int], None]) -> None:
    """Wait until ``sock`` is ready, for at most ``timeout`` seconds.

    Waiting on a slow client is not the worker being stuck: ``progress(0)``
    is called every second meanwhile, and the worker decides whether the
    client is still moving bytes fast enough for that to count.
    """
    poller = select.poll()
    poller.register(sock, event)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientTimeout("client did not make progress in time")
        if poller.poll(min(left, 1.0) * 1000.0):
            return
        progress(0)


def recv_some(sock: socket.socket, timeout: float, progress: Callable[[int], None],
              size: int = 65536) -> bytes:
    """Up to ``size`` bytes; ``b""`` on EOF; waits at most ``timeout`` seconds
    without data."""
    while True:
        try:
            data = sock.recv(size)
        except (BlockingIOError, _WANT_READ):
            _wait(sock, select.POLLIN, timeout, progress)
            continue
        except _WANT_WRITE:
            _wait(sock, select.POLLOUT, timeout, progress)
            continue
        except _GONE as exc:
            raise ClientGone(str(exc)) from None
        progress(len(data))
        return data


def send_all(sock: socket.socket, data: bytes, timeout: float,
             progress: Callable[[int], None]) -> None:
    """Write all of ``data``; ``timeout`` bounds each stall, not the total."""
    try:
        sent = sock.send(data)
    except WOULD_BLOCK:
        sent = 0
    except _GONE as exc:
        raise ClientGone(str(exc)) from None
    if sent == len(data):
        progress(sent)
        return
    total = sent
    view = memoryview(data)[sent:]
    event = select.POLLOUT
    while view:
        try:
            _wait(sock, event, timeout, progress)
            sent = sock.send(view)
        except (BlockingIOError, _WANT_WRITE):
            event = select.POLLOUT
            continue
        except _WANT_READ:
            event = select.POLLIN
            continue
        except ClientTimeout as exc:
            raise _cut(exc, total) from None
        except _GONE as exc:
            raise _cut(ClientGone(str(exc)), total) from None
        event = select.POLLOUT
        view = view[sent:]
        total += sent
        progress(sent)


def sendfile_all(sock: socket.socket, fd: int, offset: int, count: int, timeout: float,
                 progress: Callable[[int], None]) -> int:
    """os.sendfile ``count`` bytes from ``fd`` at ``offset``; returns bytes sent
    (fewer only if the file was shorter than expected)."""
    sent_total = 0
    while sent_total < count:
        try:
            sent = os.sendfile(sock.fileno(), fd, offset + sent_total,
                               min(count - sent_total, 1 << 30))
        except BlockingIOError:
            try:
                _wait(sock, select.POLLOUT, timeout, progress)
            except ClientTimeout as exc:
                raise _cut(exc, sent_total) from None
            continue
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _cut(ClientGone(str(exc)), sent_total) from None
        if sent == 0:
            break  # the file is shorter than it was
        sent_total += sent
        progress(sent)
    return sent_total
