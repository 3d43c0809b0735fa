"""Per-connection decisions, sans-I/O: one set of rules for every worker kind.

A worker moves bytes and calls the app; what to do with a connection is
decided here, from its state and the clock it is given:

* **States** (:class:`ConnState`)::

      FRESH --first byte--> HEAD --request--> BUSY --exchange ends--> IDLE
        ^                     ^                 |                      |
        |                     +-------first byte of the next request---+
      accept                 any --refused with an error--> LINGER --> CLOSED

  A connection waits in FRESH, IDLE or HEAD (its ``since`` is when it began
  waiting: accept, or the end of its last exchange); the app runs in BUSY;
  LINGER reads and drops what the client still sends after an error
  response, for a moment, so the kernel does not reset the connection
  before the client has read why (as nginx does).

* **Keep-alive after an exchange** (:class:`Exchange`, :class:`Close`): the
  connection is kept only if nothing gave a reason to close it.  Reasons,
  first one wins: the request does not want keep-alive (HTTP/1.0 without
  ``Connection: keep-alive``, or ``Connection: close``); ``keepalive`` is 0;
  the app said ``Connection: close``; the framing forbids reuse (close-
  delimited, more or fewer bytes than the Content-Length); the request body
  was left unread beyond the drain bounds, or ``Expect: 100-continue`` was
  never answered; **the request reader failed (a malformed body): a reader
  in its error state always closes**, whatever the app answered; the app
  failed after the head went out; the client went away or stopped reading;
  the worker is draining.  A response whose head goes out while the
  connection will close carries ``Connection: close``.

* **Errors to responses** (:func:`error_status`): a reader :class:`HTTPError`
  is answered with its status, any other failure of the app before the
  head with a 500; after the head nothing can be said, so the connection
  closes (the client sees a truncated body, not a wrong one).

* **Drain on graceful stop** (:meth:`HTTPConnection.start_drain`): stop
  accepting; finish every exchange in flight; keep idle keep-alive
  connections open until a request arrives (answered, with
  ``Connection: close``) or the keep-alive timeout ends, all within
  ``graceful_timeout``.  A proxy that may be writing on an idle upstream
  connection must never see it closed under it: closing it is the proxy's
  job, and a proxy whose own upstream keep-alive timeout is below ours
  always closes first.  A fresh connection gets a short grace to send its
  first request (clients do not retry on a fresh connection).

* **Unread request bodies** (:class:`Policy`): after the response, the worker
  reads and drops at most ``drain_bytes`` (1 MiB) of unread body, for at
  most ``drain_time`` (1 s) in all; beyond either bound (or when a
  Content-Length already says more is coming) the connection is closed,
  lingering as above.  A slow client can hold a connection, never the
  worker.

* **Progress while waiting on a client** (:meth:`Exchange.progressing`):
  moving bytes keeps a sync worker alive while a client is slow, but only
  at a real rate: once an exchange is older than ``rate_grace`` (the
  worker's ``timeout``), its client I/O counts as progress only while it
  has averaged at least ``min_rate`` (1 KiB/s) since it began.  A body
  trickled a byte at a time cannot keep a worker alive forever; the
  arbiter kills it ``timeout`` after its last real progress.

* **Making room** (:func:`eviction_candidates`): at ``worker_connections``, a
  new client is served by closing a waiting connection: one already
  lingering, else the one waiting longest (idle between requests, or
  sending its head slowly: that one gets a 408).  Slow clients cannot
  starve fresh ones.

Usage, by every worker kind::

    conn = HTTPConnection(policy, now)        # at accept
    conn.data_arrived(now)                    # bytes of a head came in
    ex = conn.begin(req, now, client)         # a complete request head
    ...  ex.set_status(...), ex.sent += n, ex.close_because(Close.APP) ...
    keep = conn.finish(ex, now, buffered)     # after the response
    action = conn.expired(now)                # on the worker's timer sweep
"""

from __future__ import annotations

import enum
import heapq
from operator import attrgetter
from typing import Any, Iterable

from .request import HTTPError, Request, parse_decimal

__all__ = ["ConnState", "Close", "Expiry", "Policy", "Exchange", "HTTPConnection",
           "RequestView", "error_status", "eviction_candidate", "eviction_candidates"]


class ConnState(enum.Enum):
    """Where a connection is; see the module docstring."""

    FRESH = "fresh"      # accepted, no byte of a request yet
    HEAD = "head"        # a request head is arriving
    BUSY = "busy"        # an exchange is in progress
    IDLE = "idle"        # keep-alive: waiting for the next request
    LINGER = "linger"    # answered with an error; dropping input until close
    CLOSED = "closed"


_WAITING = frozenset({ConnState.FRESH, ConnState.HEAD, ConnState.IDLE})
# Members as module constants for the per-request paths: an enum member
# looked up on its class costs about as much as a small function call.
_FRESH, _HEAD, _BUSY, _IDLE, _LINGER, _CLOSED = (
    ConnState.FRESH, ConnState.HEAD, ConnState.BUSY, ConnState.IDLE, ConnState.LINGER,
    ConnState.CLOSED)


class Close(enum.Enum):
    """Why a connection is not kept alive after an exchange."""

    CLIENT = "the client asked"
    KEEPALIVE_OFF = "keepalive is 0"
    APP = "the app asked"
    FRAMING = "the body framing"
    BODY_UNREAD = "request body left unread"
    BAD_BODY = "malformed request body"
    APP_ERROR = "the app failed"
    CLIENT_GONE = "the client went away"
    DRAINING = "the worker is draining"


_CLOSE_CLIENT, _CLOSE_KEEPALIVE_OFF, _CLOSE_DRAINING, _CLOSE_BODY_UNREAD = (
    Close.CLIENT, Close.KEEPALIVE_OFF, Close.DRAINING, Close.BODY_UNREAD)


class Expiry(enum.Enum):
    """What to do with a connection whose deadline passed."""

    NONE = "none"
    CLOSE = "close"        # idle, fresh or lingering: just close
    TIMEOUT = "408"        # a head arriving too slowly: 408, then close


class Policy:
    """One worker's connection settings, and whether it is draining.

    Times are seconds; a worker reads its settings once, at fork.
    """

    __slots__ = ("keepalive", "header_timeout", "linger", "first_request_grace",
                 "drain_bytes", "drain_time", "min_rate", "rate_grace",
                 "draining", "drain_deadline")

    def __init__(self, keepalive: float = 5.0, header_timeout: float = 10.0,
                 linger: float = 2.0, first_request_grace: float = 2.0,
                 drain_bytes: int = 1 << 20, drain_time: float = 1.0,
                 min_rate: float = 1024.0, rate_grace: float = 30.0) -> None:
        self.keepalive = keepalive
        self.header_timeout = header_timeout
        self.linger = linger
        self.first_request_grace = first_request_grace
        self.drain_bytes = drain_bytes
        self.drain_time = drain_time
        self.min_rate = min_rate
        self.rate_grace = rate_grace if rate_grace > 0 else 86400.0
        self.draining = False
        self.drain_deadline = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> "Policy":
        """The policy for a worker's settings."""
        return cls(keepalive=cfg.keepalive, header_timeout=cfg.header_timeout,
                   rate_grace=cfg.timeout)

    def worth_discarding(self, reader: Any) -> bool:
        """Whether to read and drop the body the app left unread, to keep
        the connection: not when its Content-Length already says more than
        ``drain_bytes`` is left (the connection closes at once instead)."""
        left = reader.body_left
        return left is None or left <= self.drain_bytes

    def start_draining(self, now: float, graceful_timeout: float) -> None:
        """The worker got TERM (or is recycling): from now on every response
        closes its connection, and nothing waits past ``graceful_timeout``."""
        self.draining = True
        self.drain_deadline = now + graceful_timeout


def error_status(exc: BaseException) -> int:
    """The status answering a failed exchange whose head has not gone out:
    a reader error's own status (a malformed body: 400, too large: 413...),
    else 500."""
    return exc.status if isinstance(exc, HTTPError) else 500


class RequestView:
    """The request as hooks see it, with gunicorn's attribute names
    (``method``, ``uri``, ``path``, ``query``, ``fragment``, ``version``,
    ``headers``, ``scheme``, ``peer_addr``, ``remote_addr``), decoded on
    access; ``raw`` is the reader's Request.  Made only for a hook."""

    __slots__ = ("raw", "_ex")

    def __init__(self, ex: Exchange) -> None:
        self.raw = ex.request
        self._ex = ex

    @property
    def method(self) -> str:
        return self.raw.method.decode("latin-1")

    @property
    def uri(self) -> str:
        return self.raw.target.decode("latin-1")

    @property
    def path(self) -> str:
        return self.raw.path.decode("latin-1")

    @property
    def query(self) -> str:
        return self.raw.query.decode("latin-1")

    @property
    def fragment(self) -> str:
        return ""  # the reader refuses a target with a fragment (400)

    @property
    def peer_addr(self) -> Any:
        """The socket's peer, ``(host, port)``; ``""`` on a unix socket."""
        peer = self._ex.peer
        return "" if peer is None else peer

    remote_addr = peer_addr

    @property
    def version(self) -> tuple[int, int]:
        return (1, 1) if self.raw.http_version == b"1.1" else (1, 0)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1").upper(), v.decode("latin-1")) for n, v in self.raw.headers]

    @property
    def scheme(self) -> str:
        return self.raw.scheme.decode("latin-1") if self.raw.scheme else "http"

    def __repr__(self) -> str:
        return f"<RequestView {self.raw.raw_line!r}>"


class Exchange:
    """One request and its response, as the end-of-exchange path needs it.

    Both worker kinds fill one in and hand it to ``Worker.end_exchange``.
    It is also the ``resp`` that ``post_request(worker, req, environ, resp)``
    gets, with gunicorn's names: ``status`` (``"200 OK"``), ``status_code``,
    ``headers`` (str pairs) and ``sent`` (body bytes actually written).
    """

    __slots__ = ("request", "start", "client", "environ", "status_code", "reason",
                 "response_headers", "sent", "received", "moved", "head_sent", "close", "policy",
                 "continue_pending", "peer")

    def __init__(self, request: Request, start: float, client: str,
                 policy: Policy) -> None:
        self.request = request
        self.start = start
        self.client = client          # for the access log: address or "unix"
        self.peer: Any = None         # the socket's peer address (None: unix), for hooks
        self.environ: Any = None      # the WSGI environ or the ASGI scope
        self.status_code = 0
        self.reason: bytes | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.sent = 0                 # body bytes written to the client
        self.received = 0             # body bytes handed to the app
        self.moved = 0                # bytes read or written (liveness)
        self.head_sent = False
        self.policy = policy
        # The client sent "Expect: 100-continue" with a body and waits for
        # our "100 Continue" before sending it; the worker clears this when
        # it sends one.
        self.continue_pending = request.expect_continue and (
            request.chunked or bool(request.content_length))
        if not request.keep_alive:
            self.close: Close | None = _CLOSE_CLIENT
        elif policy.keepalive <= 0:
            self.close = _CLOSE_KEEPALIVE_OFF
        else:
            self.close = None

    def close_because(self, reason: Close) -> None:
        """Record a reason to close the connection (the first one stays)."""
        if self.close is None:
            self.close = reason

    def closes(self) -> bool:
        """Whether the response must say ``Connection: close``: asked now,
        as its head goes out (a drain may have begun meanwhile).

        A final answer to an ``Expect: 100-continue`` request whose body we
        never asked for closes: the client may or may not send that body
        now (RFC 9110 10.1.1), so it can be neither read as the next request
        nor drained, and the head must say so before the client reuses the
        connection."""
        if self.close is None:
            if self.continue_pending:
                self.close = _CLOSE_BODY_UNREAD
            elif self.policy.draining:
                self.close = _CLOSE_DRAINING
        return self.close is not None

    @property
    def keep_alive(self) -> bool:
        return self.close is None

    def set_status(self, code: int, reason: bytes | None = None) -> None:
        self.status_code = code
        self.reason = reason

    def body_error(self, exc: HTTPError) -> None:
        """The request body was malformed (the reader is in its error state):
        whatever the app answers, the connection closes after it."""
        self.close_because(Close.BAD_BODY)

    def progressing(self, now: float) -> bool:
        """Whether client I/O now counts as the worker making progress; see
        the module docstring."""
        elapsed = now - self.start
        policy = self.policy
        return elapsed <= policy.rate_grace or self.moved >= policy.min_rate * elapsed

    # -- gunicorn's Response names, for post_request ----------------------

    @property
    def status(self) -> str:
        if self.reason is None:
            from http import HTTPStatus
            try:
                phrase = HTTPStatus(self.status_code).phrase
            except ValueError:
                phrase = ""
            return f"{self.status_code} {phrase}".rstrip()
        return f"{self.status_code} {self.reason.decode('latin-1')}".rstrip()

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.response_headers]

    @property
    def headers_sent(self) -> bool:
        return self.head_sent

    @property
    def response_length(self) -> int | None:
        """The response's Content-Length, if it gave one."""
        for name, value in self.response_headers:
            if name.lower() == b"content-length":
                return parse_decimal(value)
        return None

    def __repr__(self) -> str:
        return f"<Exchange {self.request.raw_line!r} {self.status_code} sent={self.sent}>"


class HTTPConnection:
    """The state of one client connection; see the module docstring.

    Worker-kind connection classes inherit from it (the sync worker's
    Connection, the ASGI protocol) and keep their I/O to themselves.
    """

    __slots__ = ("policy", "state", "since", "deadline", "served")

    def __init__(self, policy: Policy, now: float) -> None:
        self.policy = policy
        self.state = _FRESH
        self.since = now                     # waiting since (accept, last response)
        self.deadline = now + policy.header_timeout
        self.served = 0

    def data_arrived(self, now: float) -> None:
        """The first bytes of a request head: the whole head must arrive
        within ``header_timeout`` from now."""
        state = self.state
        if state is _IDLE or state is _FRESH:
            self.state = _HEAD
            deadline = now + self.policy.header_timeout
            if self.policy.draining:
                deadline = min(deadline, self.policy.drain_deadline)
            self.deadline = deadline

    def begin(self, request: Request, now: float, client: str) -> Exchange:
        """A complete request head: the exchange starts."""
        self.state = _BUSY
        return Exchange(request, now, client, self.policy)

    def finish(self, ex: Exchange, now: float, buffered: bool) -> bool:
        """After the response: True if the connection stays open (IDLE, or
        HEAD if the next request's bytes are already ``buffered``)."""
        self.served += 1
        if ex.close is not None:
            self.state = _CLOSED
            return False
        policy = self.policy
        self.since = now
        if buffered:
            self.state = _HEAD
            deadline = now + policy.header_timeout
        else:
            self.state = _IDLE
            deadline = now + policy.keepalive
        if policy.draining:
            deadline = min(deadline, policy.drain_deadline)
        self.deadline = deadline
        return True

    def refuse(self, now: float) -> None:
        """An error response went out and our side is shut: linger."""
        self.state = _LINGER
        self.deadline = now + self.policy.linger

    def closed(self) -> None:
        self.state = _CLOSED

    def expired(self, now: float) -> Expiry:
        """What to do now about this connection's deadline."""
        if self.deadline > now:
            return Expiry.NONE
        state = self.state
        if state is _HEAD:
            return Expiry.TIMEOUT
        if state is _BUSY or state is _CLOSED:
            return Expiry.NONE
        return Expiry.CLOSE

    def start_drain(self, now: float) -> None:
        """The worker began draining (the policy says until when): bound this
        connection's wait.  An idle keep-alive connection stays open until
        its keep-alive timeout; a fresh one gets a short grace for its first
        request; an exchange in flight finishes."""
        policy = self.policy
        state = self.state
        if state is _FRESH:
            self.deadline = min(self.deadline, now + policy.first_request_grace,
                                policy.drain_deadline)
        elif state is _IDLE or state is _HEAD:
            self.deadline = min(self.deadline, policy.drain_deadline)

    @property
    def waiting(self) -> bool:
        """True while the connection waits on its client between exchanges."""
        return self.state in _WAITING

    @property
    def evictable(self) -> bool:
        """True while closing it to make room is allowed: waiting on its
        client, or lingering after an error."""
        state = self.state
        return state is _LINGER or state in _WAITING


_SINCE = attrgetter("since")


def eviction_candidates(conns: Iterable[HTTPConnection], n: int) -> list[HTTPConnection]:
    """Up to ``n`` connections to close to make room for new ones, in the
    order to close them: lingering ones first, then those waiting longest
    (FRESH, IDLE or HEAD); never one in an exchange.

    One pass over ``conns`` for a whole batch of accepts: a flood of
    connections past ``worker_connections`` costs each accept a list pop,
    not a scan of every open connection."""
    lingering = []
    waiting = []
    for conn in conns:
        state = conn.state
        if state is _LINGER:
            lingering.append(conn)
        elif state in _WAITING:
            waiting.append(conn)
    if len(lingering) >= n:
        return lingering[:n]
    return lingering + heapq.nsmallest(n - len(lingering), waiting, key=_SINCE)


def eviction_candidate(conns: Iterable[HTTPConnection]) -> HTTPConnection | None:
    """The first of :func:`eviction_candidates`, or None if every connection
    is in an exchange."""
    found = eviction_candidates(conns, 1)
    return found[0] if found else None
