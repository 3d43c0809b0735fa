"""The strict request reader, sans-I/O: every case in three deliveries (one
piece, byte by byte, split at every CR and LF), and never an event after an
error."""

from __future__ import annotations

import random
import re

import h11
import pytest

from forkserve.http.request import (NEED_DATA, PAUSED, ConnectionClosed, EndOfMessage,
                                    HTTPError, Limits, Request, RequestReader)

CANARY = b"GET /canary HTTP/1.1\r\nHost: c\r\n\r\n"


def deliveries(data: bytes):
    yield "whole", [data]
    yield "bytewise", [data[i:i + 1] for i in range(len(data))]
    yield "crlf-split", [p for p in re.split(rb"(\r|\n)", data) if p]


def run(pieces, limits=None, eof=False):
    """Feed pieces; collect events; stop at the first error."""
    reader = RequestReader(limits)
    events = []
    for piece in pieces + ([b""] if eof else []):
        reader.feed(piece)
        while True:
            try:
                ev = reader.next_event()
            except HTTPError as exc:
                events.append(exc)
                return events, reader
            if ev is NEED_DATA:
                break
            if ev is PAUSED:
                reader.start_next()
                continue
            events.append(ev)
            if isinstance(ev, ConnectionClosed):
                return events, reader
    return events, reader


BAD = [
    # request line
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    (b"GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    (b"GET\x00 / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    (b"GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # header fields
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n", 400),
    # Host
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    # Content-Length
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xd9\xa1\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    # Transfer-Encoding
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400),
    # chunked bodies
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
    # whitespace at the end of a chunk line (RFC 9112 7.1): a smuggling surface
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\t\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0 \r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b \r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5" + b";a=b" * 300 + b"\r\n", 400),
    # trailers
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 400),
    # Expect
    (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    # Connection
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close;\r\n\r\n", 400),
]


@pytest.mark.parametrize("data, status", BAD, ids=[repr(d[:40]) for d, _ in BAD])
@pytest.mark.parametrize("how", ["whole", "bytewise", "crlf-split"])
def test_malformed_requests_are_refused_and_nothing_follows(data, status, how):
    pieces = dict(deliveries(data + CANARY))[how]
    events, reader = run(pieces)
    assert isinstance(events[-1], HTTPError), events
    assert events[-1].status == status, (events[-1], status)
    assert not any(isinstance(e, Request) and e.path == b"/canary" for e in events)
    # Dead for good: the next call raises again, whatever is fed.
    reader_error = events[-1]
    with pytest.raises(HTTPError):
        reader.next_event()
    assert reader_error.status == status


@pytest.mark.parametrize("field, limit, status", [
    ("request_line", 100, 414), ("field_size", 100, 431), ("fields", 3, 431),
])
def test_limits(field, limit, status):
    limits = Limits(**{field: limit})
    if field == "request_line":
        data = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    elif field == "field_size":
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 200 + b"\r\n\r\n"
    else:
        data = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    for _, pieces in deliveries(data):
        events, _ = run(pieces, limits)
        assert isinstance(events[-1], HTTPError) and events[-1].status == status


def _field_line(count: int, ows: bytes = b" ") -> bytes:
    """A field line whose size, counted as gunicorn does (the line as sent,
    name, colon and whitespace included, plus its CRLF), is ``count``."""
    fill = count - 2 - len(b"X-Big:") - 2 * len(ows)
    return b"X-Big:" + ows + b"v" * fill + ows


@pytest.mark.parametrize("ows", [b" ", b"", b" \t  "])
@pytest.mark.parametrize("delta, refused", [(-1, False), (0, False), (1, True)])
def test_field_size_counts_the_line_as_sent_plus_crlf(delta, refused, ows):
    limit = 200
    line = _field_line(limit + delta, ows)
    assert len(line) + 2 == limit + delta
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n"
    for _, pieces in deliveries(data):
        events, _ = run(pieces, Limits(field_size=limit))
        if refused:
            assert isinstance(events[-1], HTTPError) and events[-1].status == 431, events
        else:
            assert isinstance(events[0], Request), events
            assert events[0].headers[-1] == (b"x-big", line[6:].strip(b" \t"))


@pytest.mark.parametrize("delta, refused", [(-1, False), (0, False), (1, True)])
def test_trailer_field_size_counts_like_a_header(delta, refused):
    limit = 200
    data = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + _field_line(limit + delta) + b"\r\n\r\n")
    for _, pieces in deliveries(data):
        events, _ = run(pieces, Limits(field_size=limit))
        if refused:
            assert isinstance(events[-1], HTTPError) and events[-1].status == 431, events
        else:
            assert isinstance(events[-1], EndOfMessage) and len(events[-1].trailers) == 1


@pytest.mark.parametrize("delta, refused", [(-1, False), (0, False), (1, True)])
@pytest.mark.parametrize("lead", [b"", b"\r\n"])
def test_request_line_limit_counts_the_line_without_crlf(delta, refused, lead):
    limit = 100
    line = b"GET /" + b"a" * (limit + delta - 14) + b" HTTP/1.1"
    assert len(line) == limit + delta
    data = lead + line + b"\r\nHost: a\r\n\r\n"
    for _, pieces in deliveries(data):
        events, _ = run(pieces, Limits(request_line=limit))
        if refused:
            assert isinstance(events[-1], HTTPError) and events[-1].status == 414, events
        else:
            assert isinstance(events[0], Request), events


@pytest.mark.parametrize("delta, refused", [(-1, False), (0, False), (1, True)])
def test_field_count_limit(delta, refused):
    limit = 10
    fields = b"Host: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(limit + delta - 1))
    events, _ = run([b"GET / HTTP/1.1\r\n" + fields + b"\r\n"], Limits(fields=limit))
    if refused:
        assert isinstance(events[-1], HTTPError) and events[-1].status == 431, events
    else:
        assert isinstance(events[0], Request) and len(events[0].headers) == limit + delta


def test_chunk_extension_bws_is_accepted_but_no_trailing_whitespace():
    # BWS before ';' and around '=' must be parsed (RFC 9112 7.1.1, RFC 9110
    # 5.6.3); nothing else may be whitespace on a chunk line.
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    good = head + b"5 \t; a = b ;c\r\nhello\r\n0 ;x=\"y\"\r\n\r\n"
    for _, pieces in deliveries(good):
        events, _ = run(pieces)
        assert b"".join(e for e in events if isinstance(e, bytes)) == b"hello"
        assert isinstance(events[-1], EndOfMessage), events
    for line in (b"5 ", b"5\t", b"5 ;a ", b"5;a= b\t", b"5;a=\"b\"\t", b"0 "):
        bad = head + line + b"\r\nhello\r\n0\r\n\r\n"
        events, _ = run([bad])
        assert isinstance(events[-1], HTTPError) and events[-1].status == 400, line


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
SPLIT_INVARIANT = [
    # A bare CR or LF seen before a limit is exceeded is refused as such
    # (400) however the bytes are split; found by test_reader_properties.
    (b"\x00" * 47 + b"\r\x00\x00", Limits(request_line=48), 400),
    (b"GET / HTTP/1.1GET / HTTP/1.1\rGET / HTTP/1.1GET / HTTP/1.1", Limits(request_line=48), 400),
    (b"GET /" + b"a" * 60 + b"\nb HTTP/1.1\r\n\r\n", Limits(request_line=48), 414),
    (b"GET / HTTP/1.1\nHost: a\r\nX: " + b"b" * 100 + b"\r\n\r\n", Limits(head=100), 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 100 + b"\nb\r\n\r\n", Limits(head=100), 431),
    # ... and wins over the version check of the complete head.
    (b"GET / HTTP/2.0\r\nHost: a\r\nX: a\rb\r\n\r\n", Limits(), 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Limits(), 505),
    # A trailer line over field_size is refused before its end is read,
    # whatever the line turns out to be.
    (CHUNKED_HEAD + b"0\r\nHost: " + b"h" * 60 + b"\r\n\r\n", Limits(field_size=40), 431),
    (CHUNKED_HEAD + b"0\r\nX: " + b"\x01" * 60 + b"\r\n\r\n", Limits(field_size=40), 431),
    (CHUNKED_HEAD + b"0\r\nX: a\rb" + b"c" * 60 + b"\r\n\r\n", Limits(field_size=40), 400),
    (CHUNKED_HEAD + b"0\r\nHost: h\r\n\r\n", Limits(field_size=40), 400),
]


@pytest.mark.parametrize("data, limits, status", SPLIT_INVARIANT,
                         ids=[repr(d[-30:]) for d, _, _ in SPLIT_INVARIANT])
def test_the_status_does_not_depend_on_how_bytes_are_split(data, limits, status):
    for how, pieces in deliveries(data):
        events, _ = run(pieces, limits, eof=True)
        assert isinstance(events[-1], HTTPError), (how, events)
        assert events[-1].status == status, (how, events[-1])


def test_request_line_limit_without_any_crlf():
    events, _ = run([b"GET /" + b"a" * 5000], Limits())
    assert events[-1].status == 414


def test_head_cap_without_end():
    events, _ = run([b"GET / HTTP/1.1\r\n"] + [b"X: y\r\n"] * 20000, Limits())
    assert events[-1].status == 431


def test_body_limit():
    events, _ = run([b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"], Limits(body=10))
    assert events[-1].status == 413
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n"
    events, _ = run([data], Limits(body=10))
    assert events[-1].status == 413


GOOD = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x/1.0 (y; z)\r\n"
    b"Accept: */*\r\nX-Empty:\r\nX-Tabs:\t a \t\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;q=\"quoted \\\" str\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n",
    b"GET http://example.com/abs?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\nObs: caf\xc3\xa9 \xff\r\n\r\n",
    b"PATCH /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]


def _h11_events(data: bytes):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out = []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            return out
        out.append(ev)


def _ours(data: bytes):
    events, _ = run([data])
    return events


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
def test_valid_requests_parse_like_h11(data):
    """Differential: identical method, target, version, headers, body."""
    ours = _ours(data)
    theirs = _h11_events(data)
    req = ours[0]
    h_req = theirs[0]
    assert isinstance(req, Request) and isinstance(h_req, h11.Request)
    assert req.method == h_req.method
    assert req.target == h_req.target
    assert req.http_version == h_req.http_version
    assert req.headers == _norm(h_req.headers.raw_items())
    body = b"".join(e for e in ours if isinstance(e, bytes))
    h_body = b"".join(bytes(e.data) for e in theirs if isinstance(e, h11.Data))
    assert body == h_body
    assert isinstance(ours[-1], EndOfMessage) and isinstance(theirs[-1], h11.EndOfMessage)
    assert ours[-1].trailers == _norm(theirs[-1].headers.raw_items())


def _norm(items):
    """h11's headers as ours: names lowercased; h11 also lowercases the value
    of Transfer-Encoding, where we keep the bytes as sent."""
    return [(n.lower(), v) for n, v in items]


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
@pytest.mark.parametrize("how", ["bytewise", "crlf-split"])
def test_valid_requests_split_anyhow(data, how):
    whole = _ours(data)
    split = run(dict(deliveries(data))[how])[0]
    assert [repr(e) for e in split if not isinstance(e, bytes)] == \
        [repr(e) for e in whole if not isinstance(e, bytes)]
    assert b"".join(e for e in split if isinstance(e, bytes)) == \
        b"".join(e for e in whole if isinstance(e, bytes))


def test_pipelined_requests_come_in_order_after_start_next():
    data = GOOD[2] + GOOD[0] + GOOD[3]
    events, _ = run([data])
    paths = [e.path for e in events if isinstance(e, Request)]
    assert paths == [b"/upload", b"/", b"/c"]


def test_clean_close_between_requests():
    events, _ = run([GOOD[0]], eof=True)
    assert isinstance(events[-1], ConnectionClosed)


def test_close_inside_a_body_is_an_error():
    events, _ = run([b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"], eof=True)
    assert isinstance(events[-1], HTTPError)


def test_keep_alive_and_expect_flags():
    r = _ours(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0]
    assert r.keep_alive
    r = _ours(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, Close\r\n\r\n")[0]
    assert not r.keep_alive
    r = _ours(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")[0]
    assert r.expect_continue
    r = _ours(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")[0]
    assert r.upgrade == b"websocket"


def _stream(rng: random.Random) -> bytes:
    """A keep-alive stream of GETs, Content-Length and chunked bodies of
    assorted sizes, with the odd empty line before a request."""
    parts = []
    for i in range(rng.randint(1, 12)):
        kind = rng.choice(("get", "length", "chunked"))
        lead = b"\r\n" * rng.choice((0, 0, 0, 1, 8))
        if kind == "get":
            parts.append(lead + b"GET /%d HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n" % (i, i))
        elif kind == "length":
            body = bytes(rng.randrange(256) for _ in range(rng.choice((1, 13, 4096, 70000))))
            parts.append(lead + b"POST /%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                         % (i, len(body)) + body)
        else:
            chunks = [bytes(rng.randrange(256) for _ in range(rng.choice((1, 10, 5000))))
                      for _ in range(rng.randint(1, 4))]
            body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
            parts.append(lead + b"POST /%d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
                         b"\r\n\r\n" % i + body + b"0\r\nX-T: 1\r\n\r\n")
    return b"".join(parts)


def _summary(events):
    """Requests with their bodies joined: how a read is split must not show."""
    out, body = [], []
    for ev in events:
        if isinstance(ev, Request):
            out.append((ev.method, ev.target, ev.headers))
            body = []
        elif isinstance(ev, bytes):
            body.append(ev)
        elif isinstance(ev, EndOfMessage):
            out.append((b"".join(body), ev.trailers))
        else:
            out.append(ev)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_splits_of_a_pipelined_stream_read_as_the_whole(seed):
    # The reader holds the bytes it was fed while that is all it has, and a
    # bytearray once it must join or partly consume them: any mix of the
    # two must read the same requests, bodies and trailers.
    rng = random.Random(seed)
    data = _stream(rng)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    whole, _ = run([data])
    split, _ = run(pieces)
    assert not any(isinstance(e, HTTPError) for e in whole)
    assert _summary(split) == _summary(whole)
    assert sum(isinstance(e, Request) for e in whole) == data.count(b" HTTP/1.1\r\n")
