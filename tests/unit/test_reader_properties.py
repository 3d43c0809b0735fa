"""Property-based tests of the sans-I/O request reader (hypothesis).

Whatever the bytes, and however they are split across reads:

* the reader raises nothing but its own :class:`HTTPError`;
* the outcome (the events, with body bytes joined, and the error status)
  is the same as when the bytes come in one read;
* when it asks for more data it holds no more than its limits allow, so a
  worker's memory per connection is bounded by the limits plus one read;
* after an error it is dead: every later call raises the same error;
* a request it accepts is well-formed (tokens, no control bytes, framing
  that adds up), and a valid request is read back exactly as it was built.

Inputs: random bytes; valid pipelined requests built from the grammar; and
those requests mutated (bytes flipped, inserted, deleted; framing headers
duplicated or contradicting each other, CL/TE combinations, obs-fold, bare
CR and LF, NUL).  The "ci" profile (tests/conftest.py) keeps this file to
a few seconds; ``--hypothesis-profile=deep`` runs many more examples.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from forkserve.http.request import (NEED_DATA, PAUSED, ConnectionClosed, EndOfMessage,
                                    HTTPError, Limits, Request, RequestReader)
from fuzzing import FRAMING_LINES, FRAMING_NAMES, INSERTS, PCHAR, TCHAR, VCHAR, mutate
from test_differential import run_forkserve, run_h11

# Small limits so that generated input crosses every one of them.
SMALL = Limits(request_line=48, fields=6, field_size=40, head=256, body=300, chunk_line=24,
               trailer_size=64)
LIMITS = [Limits(), SMALL]


def held_at_most(limits: Limits) -> int:
    """What the reader may hold while it waits for more bytes: a partial
    head, chunk line or trailer line, each under its limit."""
    return max(limits.head, limits.request_line + 1, limits.chunk_line, limits.field_size)


# --- driving the reader -----------------------------------------------------------


class Outcome(NamedTuple):
    """What a delivery came to.  The reason of a refusal is left out: a
    bare CR may be named as such when seen alone, or as part of a
    malformed line when the line comes whole; the status is the same."""

    events: tuple
    status: int | None  # the refusal's status, None if none


def _request_summary(req: Request) -> tuple:
    return ("request", req.method, req.target, req.path, req.query, req.http_version,
            tuple(req.headers), req.keep_alive, req.chunked, req.content_length,
            req.expect_continue, req.upgrade, req.host, req.scheme, req.raw_line)


def _check_well_formed(req: Request) -> None:
    """What every accepted request guarantees to the workers and apps."""
    assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", req.method), req.method
    assert req.http_version in (b"1.0", b"1.1")
    assert re.fullmatch(rb"[\x21-\x7e]+", req.target), req.target
    for name, value in req.headers:
        assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9a-z]+", name), name
        assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value), value
        assert value == value.strip(b" \t")
    names = [n for n, _ in req.headers]
    assert not (req.chunked and req.content_length is not None)
    assert names.count(b"content-length") <= 1
    if req.chunked:
        assert req.http_version == b"1.1"
    if req.http_version == b"1.1":
        assert req.host is not None and names.count(b"host") == 1


def drive(pieces: list[bytes], limits: Limits, eof: bool) -> Outcome:
    """Feed the pieces as a worker does, then EOF if ``eof``; collect the
    events (body bytes joined per message) until the end or an error."""
    reader = RequestReader(limits)
    bound = held_at_most(limits)
    events: list = []
    body = bytearray()
    req: Request | None = None
    for piece in [*pieces, b""] if eof else pieces:
        reader.feed(piece)
        while True:
            try:
                event = reader.next_event()
            except HTTPError as exc:
                # Dead for good: the same error again, whatever comes next.
                for _ in range(2):
                    try:
                        reader.next_event()
                    except HTTPError as again:
                        assert again.status == exc.status
                    else:
                        raise AssertionError("an event after an error")
                assert reader.buffered == 0
                return Outcome(tuple(events), exc.status)
            if event is NEED_DATA:
                assert reader.buffered <= bound, (reader.buffered, bound)
                break
            if event is PAUSED:
                reader.start_next()
            elif isinstance(event, Request):
                _check_well_formed(event)
                req, body = event, bytearray()
                events.append(_request_summary(event))
            elif type(event) is bytes:
                assert req is not None and event
                body += event
            elif isinstance(event, EndOfMessage):
                assert req is not None
                if req.content_length is not None:
                    assert len(body) == req.content_length
                if limits.body is not None:
                    assert len(body) <= limits.body
                events.append(("body", bytes(body)))
                events.append(("end", tuple(event.trailers)))
                req = None
            elif isinstance(event, ConnectionClosed):
                assert eof and req is None
                events.append(("closed",))
                return Outcome(tuple(events), None)
            else:
                raise AssertionError(f"unexpected event {event!r}")
    if eof:
        raise AssertionError("neither an end nor an error after EOF")
    if req is not None and body:
        events.append(("partial-body", bytes(body)))
    return Outcome(tuple(events), None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length); no
    empty piece, since feeding b"" means EOF."""
    if not data:
        return []
    points = sorted({c % len(data) for c in cuts} - {0})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def check_split_invariance(data: bytes, cuts: list[int], limits: Limits, eof: bool) -> Outcome:
    whole = drive([data] if data else [], limits, eof)
    pieces = split(data, cuts)
    assert drive(pieces, limits, eof) == whole, pieces
    if len(data) <= 600:
        assert drive([data[i:i + 1] for i in range(len(data))], limits, eof) == whole
    return whole


# --- building valid requests --------------------------------------------------------


def _bytes_from(alphabet: bytes, min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size,
                    max_size=max_size).map(bytes)


tokens = _bytes_from(TCHAR, 1, 12)
field_values = st.lists(_bytes_from(VCHAR, 1, 12), max_size=3).map(b" ".join)
ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])
plain_names = tokens.filter(lambda n: n.lower() not in FRAMING_NAMES)


class Built(NamedTuple):
    raw: bytes
    method: bytes
    target: bytes
    body: bytes
    trailers: tuple
    keep_alive: bool


@st.composite
def requests(draw) -> Built:
    """One valid request: origin-form target, a few fields, and no body,
    a Content-Length body or a chunked body with extensions and trailers."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    target = b"/" + draw(_bytes_from(PCHAR, 0, 20))
    if draw(st.booleans()):
        target += b"?" + draw(_bytes_from(PCHAR + b"?", 0, 12))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    lines = []
    if version == b"1.1" or draw(st.booleans()):
        lines.append(b"Host:" + draw(ows) + draw(st.sampled_from([b"a", b"example.com:8080",
                                                                   b"[::1]"])) + draw(ows))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(plain_names) + b":" + draw(ows) + draw(field_values) + draw(ows))
    connection = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, x"]))
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if version == b"1.1":
        keep_alive = connection != b"close"
    else:
        keep_alive = connection is not None and b"keep-alive" in connection.lower()
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == b"1.1"
                                   else ["none", "length"]))
    body = b""
    trailers: tuple = ()
    payload = b""
    if framing == "length":
        body = draw(st.binary(max_size=40))
        lines.append(b"Content-Length:" + draw(ows) + b"%d" % len(body) + draw(ows))
        payload = body
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding:" + draw(ows) + draw(st.sampled_from(
            [b"chunked", b"Chunked", b"CHUNKED"])) + draw(ows))
        chunks = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4))
        body = b"".join(chunks)
        parts = []
        for c in [*chunks, b""]:
            size = draw(st.sampled_from([b"%x", b"%X", b"0%x"])) % len(c)
            ext = draw(st.sampled_from([b"", b";a", b";a=b", b" ;a = \"q s\"", b";x;y=1"]))
            parts.append(size + ext + b"\r\n" + (c + b"\r\n" if c else b""))
        names = draw(st.lists(plain_names, max_size=2))
        values = [draw(field_values) for _ in names]
        trailers = tuple((n.lower(), v) for n, v in zip(names, values))
        payload = b"".join(parts) + b"".join(n + b": " + v + b"\r\n"
                                             for n, v in zip(names, values)) + b"\r\n"
    draw(st.randoms()).shuffle(lines)
    head = b"%s %s HTTP/%s\r\n" % (method, target, version) + b"".join(l + b"\r\n" for l in lines)
    return Built(head + b"\r\n" + payload, method, target, body, trailers, keep_alive)


@st.composite
def pipelines(draw) -> list[Built]:
    """Up to three requests on one connection; only the last may close it."""
    built = draw(st.lists(requests(), min_size=1, max_size=3))
    end = next((i for i, b in enumerate(built) if not b.keep_alive), len(built) - 1)
    return built[:end + 1]


# --- mutations (tests/fuzzing.py) ------------------------------------------------------

mutations = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(INSERTS)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 8)),
    st.tuples(st.just("header"), st.integers(0, 1 << 16), st.sampled_from(FRAMING_LINES)),
    st.tuples(st.just("dup-line"), st.integers(0, 1 << 16), st.just(None)),
), min_size=1, max_size=4)

cut_lists = st.lists(st.integers(0, 1 << 16), max_size=12)
limit_choices = st.sampled_from(LIMITS)


# --- the properties -------------------------------------------------------------------


@given(data=st.binary(max_size=400), cuts=cut_lists, limits=limit_choices, eof=st.booleans())
def test_random_bytes(data, cuts, limits, eof):
    check_split_invariance(data, cuts, limits, eof)


@given(data=st.lists(st.sampled_from([b"GET / HTTP/1.1", b"Host: a", b"\r\n", b"\r", b"\n",
                                       b"Content-Length: 3", b"Transfer-Encoding: chunked",
                                       b"0", b"3", b";", b" ", b"abc", b":", b"\x00"]),
                     max_size=40).map(b"".join),
       cuts=cut_lists, limits=limit_choices, eof=st.booleans())
def test_random_protocol_pieces(data, cuts, limits, eof):
    # Random bytes rarely get past the request line; pieces of HTTP do.
    check_split_invariance(data, cuts, limits, eof)


@given(built=pipelines(), cuts=cut_lists)
def test_valid_requests_read_back_exactly(built, cuts):
    data = b"".join(b.raw for b in built)
    outcome = check_split_invariance(data, cuts, Limits(), True)
    assert outcome.status is None, outcome
    requests_seen = [e for e in outcome.events if e[0] == "request"]
    bodies = [e[1] for e in outcome.events if e[0] == "body"]
    trailers = [e[1] for e in outcome.events if e[0] == "end"]
    assert [(r[1], r[2], r[7]) for r in requests_seen] == \
        [(b.method, b.target, b.keep_alive) for b in built]
    assert bodies == [b.body for b in built]
    assert trailers == [b.trailers for b in built]


@given(built=pipelines(), ops=mutations, cuts=cut_lists, limits=limit_choices,
       eof=st.booleans())
def test_mutated_requests(built, ops, cuts, limits, eof):
    data = mutate(b"".join(b.raw for b in built), ops)
    check_split_invariance(data, cuts, limits, eof)


@given(built=pipelines(), ops=mutations, cuts=cut_lists)
def test_mutated_requests_are_never_read_otherwise_than_by_h11(built, ops, cuts):
    # The smuggling property: every request that both readers accept, in
    # order, is read alike (method, target, headers, body, trailers).
    # Either may refuse what the other takes, or stop sooner (see the
    # declared differences in test_differential); reading one request two
    # ways is never allowed.  Keep-alive may differ after an HTTP/1.0
    # request only (LENIENT http10-keep-alive).
    data = mutate(b"".join(b.raw for b in built), ops)
    pieces = split(data, cuts)
    ours, ref = run_forkserve(pieces), run_h11(pieces)
    for a, b in zip(ours.messages, ref.messages):
        if a.http_version == b"1.0":
            a, b = a._replace(keep_alive=False), b._replace(keep_alive=False)
        assert a == b, (data, ours, ref)
