"""Per-connection decisions (forkserve.http.connection), table-driven, sans-I/O."""

import pytest

from forkserve.http.connection import (Close, ConnState, Exchange, Expiry, HTTPConnection,
                                       Policy, RequestView, error_status, eviction_candidate,
                                       eviction_candidates)
from forkserve.http.request import HTTPError, RequestReader
from forkserve.http.response import ResponseError


def request(raw: bytes):
    reader = RequestReader()
    reader.feed(raw)
    return reader.next_event()


GET11 = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: z\r\n\r\n"
GET11_CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
GET10_KA = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
POST_EXPECT = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               b"Expect: 100-continue\r\n\r\n")
POST_EXPECT_EMPTY = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                     b"Expect: 100-continue\r\n\r\n")


# request, keepalive setting, draining, what happened -> close reason (None: kept)
KEEP_ALIVE = [
    (GET11, 5, False, [], None),
    (GET11_CLOSE, 5, False, [], Close.CLIENT),
    (GET10, 5, False, [], Close.CLIENT),
    (GET10_KA, 5, False, [], None),
    (GET11, 0, False, [], Close.KEEPALIVE_OFF),
    (GET11, 5, True, [], Close.DRAINING),
    (GET11, 5, False, [Close.APP], Close.APP),
    (GET11, 5, False, [Close.FRAMING], Close.FRAMING),
    (GET11, 5, False, ["bad body"], Close.BAD_BODY),
    (GET11, 5, False, [Close.BODY_UNREAD], Close.BODY_UNREAD),
    (GET11, 5, False, [Close.CLIENT_GONE], Close.CLIENT_GONE),
    # the first reason stays
    (GET11_CLOSE, 5, False, ["bad body"], Close.CLIENT),
    (GET11, 5, False, [Close.APP, "bad body"], Close.APP),
    (GET11, 5, True, ["bad body"], Close.DRAINING),
    # a body behind "Expect: 100-continue" that no 100 asked for
    (POST_EXPECT, 5, False, [], Close.BODY_UNREAD),
    (POST_EXPECT, 5, False, ["100 sent"], None),
    (POST_EXPECT_EMPTY, 5, False, [], None),
]


@pytest.mark.parametrize("raw,keepalive,draining,events,reason", KEEP_ALIVE)
def test_keep_alive_decision(raw, keepalive, draining, events, reason):
    policy = Policy(keepalive=keepalive)
    conn = HTTPConnection(policy, 0.0)
    conn.data_arrived(0.0)
    ex = conn.begin(request(raw), 1.0, "127.0.0.1")
    assert conn.state is ConnState.BUSY
    if draining:
        policy.start_draining(1.0, 30.0)
    if "100 sent" in events:
        ex.continue_pending = False
        events = [e for e in events if e != "100 sent"]
    # The head goes out: Connection: close exactly when the connection closes.
    known_at_head = reason in (Close.CLIENT, Close.KEEPALIVE_OFF, Close.DRAINING) or (
        reason is Close.BODY_UNREAD and raw is POST_EXPECT)
    assert ex.closes() is known_at_head
    for event in events:
        if event == "bad body":
            ex.body_error(HTTPError(400, "invalid chunk size"))
        else:
            ex.close_because(event)
    assert ex.close is reason
    assert ex.keep_alive is (reason is None)
    kept = conn.finish(ex, 2.0, buffered=False)
    assert kept is (reason is None)
    assert conn.state is (ConnState.IDLE if kept else ConnState.CLOSED)
    assert conn.served == 1


def test_a_reader_error_always_closes_even_when_the_app_answers():
    conn = HTTPConnection(Policy(), 0.0)
    ex = conn.begin(request(GET11), 0.0, "-")
    ex.body_error(HTTPError(400, "missing chunk CRLF"))
    ex.set_status(200)   # the app caught the error and answered
    assert ex.closes()
    assert not conn.finish(ex, 1.0, buffered=True)


@pytest.mark.parametrize("exc,status", [
    (HTTPError(400, "bad chunk"), 400), (HTTPError(413, "too large"), 413),
    (HTTPError(408, "slow"), 408), (ValueError("app bug"), 500),
    (ResponseError("bad header"), 500), (KeyError("x"), 500),
])
def test_error_status(exc, status):
    assert error_status(exc) == status


# state at the deadline -> what to do
EXPIRY = [
    ("fresh", Expiry.CLOSE), ("head", Expiry.TIMEOUT), ("idle", Expiry.CLOSE),
    ("busy", Expiry.NONE), ("linger", Expiry.CLOSE),
]


def _in_state(name, policy, now=0.0):
    conn = HTTPConnection(policy, now)
    if name in ("head", "busy", "idle"):
        conn.data_arrived(now)
    if name in ("busy", "idle"):
        ex = conn.begin(request(GET11), now, "-")
        if name == "idle":
            conn.finish(ex, now, buffered=False)
    if name == "linger":
        conn.refuse(now)
    return conn


@pytest.mark.parametrize("name,action", EXPIRY)
def test_expiry(name, action):
    policy = Policy(keepalive=5, header_timeout=10, linger=2)
    conn = _in_state(name, policy)
    assert conn.expired(1.0) is Expiry.NONE
    assert conn.expired(100.0) is action


@pytest.mark.parametrize("name,deadline", [
    ("fresh", 0.0 + 2.0),     # the first-request grace, not header_timeout (10)
    ("idle", 0.0 + 5.0),      # kept until its keep-alive timeout, not closed now
    ("head", 0.0 + 10.0),     # a head arriving keeps its header deadline
])
def test_drain_keeps_waiting_connections_within_their_timeouts(name, deadline):
    policy = Policy(keepalive=5, header_timeout=10, first_request_grace=2)
    conn = _in_state(name, policy)
    policy.start_draining(0.0, 30.0)
    conn.start_drain(0.0)
    assert conn.deadline == deadline
    assert conn.expired(deadline - 0.01) is Expiry.NONE


def test_drain_is_bounded_by_graceful_timeout():
    policy = Policy(keepalive=60, header_timeout=60)
    idle = _in_state("idle", policy)
    head = _in_state("head", policy)
    policy.start_draining(0.0, 3.0)
    for conn in (idle, head):
        conn.start_drain(0.0)
        assert conn.deadline == 3.0
    # A request arriving on an idle connection while draining: its head
    # too must arrive within the drain.
    idle.data_arrived(1.0)
    assert idle.deadline == 3.0


def test_a_request_during_the_drain_is_answered_with_close():
    policy = Policy(keepalive=5)
    conn = _in_state("idle", policy)
    policy.start_draining(0.0, 30.0)
    conn.start_drain(0.0)
    conn.data_arrived(0.3)
    ex = conn.begin(request(GET11), 0.3, "-")
    assert ex.closes() and ex.close is Close.DRAINING
    assert not conn.finish(ex, 0.4, buffered=False)


def test_finish_with_a_pipelined_request_buffered():
    policy = Policy(keepalive=5, header_timeout=10)
    conn = _in_state("busy", policy)
    ex = Exchange(request(GET11), 0.0, "-", policy)
    assert conn.finish(ex, 1.0, buffered=True)
    assert conn.state is ConnState.HEAD and conn.deadline == 11.0


def test_eviction_prefers_lingering_then_longest_waiting():
    policy = Policy()
    old_idle = _in_state("idle", policy, now=1.0)
    slow_head = _in_state("head", policy, now=2.0)
    fresh = _in_state("fresh", policy, now=3.0)
    busy = _in_state("busy", policy, now=0.0)
    assert eviction_candidate([fresh, busy, slow_head, old_idle]) is old_idle
    assert eviction_candidate([fresh, busy, slow_head]) is slow_head
    linger = _in_state("linger", policy, now=5.0)
    assert eviction_candidate([fresh, old_idle, linger]) is linger
    assert eviction_candidate([busy]) is None
    assert eviction_candidate([]) is None
    # A batch: lingering first, then oldest first; never a busy one.
    assert eviction_candidates([fresh, busy, slow_head, old_idle, linger], 3) == [
        linger, old_idle, slow_head]
    assert eviction_candidates([fresh, busy, slow_head, old_idle, linger], 9) == [
        linger, old_idle, slow_head, fresh]
    assert eviction_candidates([linger, busy], 1) == [linger]


@pytest.mark.parametrize("elapsed,moved,progressing", [
    (1.0, 0, True),            # within the grace
    (10.0, 0, True),
    (11.0, 0, False),          # a trickle: no longer progress
    (11.0, 5, False),
    (20.0, 20 * 1024, True),   # 1 KiB/s
    (20.0, 20 * 1024 - 1, False),
    (100.0, 10 << 20, True),
])
def test_progress_needs_a_real_rate(elapsed, moved, progressing):
    policy = Policy(min_rate=1024, rate_grace=10)
    ex = Exchange(request(GET11), 0.0, "-", policy)
    ex.moved = moved
    assert ex.progressing(elapsed) is progressing


def test_rate_grace_zero_timeout_means_never_judged():
    policy = Policy(rate_grace=0)
    ex = Exchange(request(GET11), 0.0, "-", policy)
    assert ex.progressing(1000.0)


def test_exchange_has_gunicorn_response_names():
    ex = Exchange(request(GET11), 0.0, "-", Policy())
    ex.set_status(404)
    ex.response_headers = [(b"Content-Type", b"text/plain")]
    ex.sent = 12
    assert ex.status == "404 Not Found" and ex.status_code == 404
    assert ex.headers == [("Content-Type", "text/plain")]
    ex.set_status(299, b"Custom Thing")
    assert ex.status == "299 Custom Thing"
    ex.set_status(599)
    assert ex.status == "599"


def test_request_view_has_gunicorn_request_names():
    ex = Exchange(request(GET11), 0.0, "-", Policy())
    ex.peer = ("127.0.0.1", 40000)
    view = RequestView(ex)
    assert view.method == "GET" and view.uri == "/a?b=1"
    assert view.path == "/a" and view.query == "b=1" and view.fragment == ""
    assert view.version == (1, 1) and view.scheme == "http"
    assert ("X-Y", "z") in view.headers and ("HOST", "x") in view.headers
    assert view.peer_addr == view.remote_addr == ("127.0.0.1", 40000)
    assert RequestView(Exchange(request(GET10), 0.0, "-", Policy())).version == (1, 0)
    # A unix socket's peer, as gunicorn reports it.
    assert RequestView(Exchange(request(GET10), 0.0, "unix", Policy())).peer_addr == ""


def test_exchange_has_gunicorn_response_names():
    ex = Exchange(request(GET11), 0.0, "-", Policy())
    ex.set_status(201)
    ex.response_headers = [(b"Content-Length", b"12"), (b"X-A", b"b")]
    assert ex.status == "201 Created" and ex.status_code == 201
    assert ex.headers == [("Content-Length", "12"), ("X-A", "b")]
    assert ex.response_length == 12 and ex.headers_sent is False
    ex.response_headers = [(b"Transfer-Encoding", b"chunked")]
    assert ex.response_length is None
