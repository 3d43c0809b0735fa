"""Response body framing (forkserve.http.framing), table-driven, sans-I/O."""

import pytest

from forkserve.http.framing import BodyFramer, Framing
from forkserve.http.response import ResponseError

CL = lambda n: b"content-length: %d\r\n" % n  # noqa: E731
TE = b"transfer-encoding: chunked\r\n"

# method, version, status, app Content-Length, body length known at the head,
# trailers wanted -> framing, header line, must_close at the start
CASES = [
    # no body: HEAD, 1xx, 204, 304
    (b"HEAD", b"1.1", 200, None, None, False, Framing.NO_BODY, b"", False),
    (b"HEAD", b"1.1", 200, 1234, None, False, Framing.NO_BODY, CL(1234), False),
    (b"HEAD", b"1.0", 200, 1234, 10, False, Framing.NO_BODY, CL(1234), False),
    (b"HEAD", b"1.1", 200, None, 10, False, Framing.NO_BODY, b"", False),
    (b"HEAD", b"1.1", 404, 9, None, True, Framing.NO_BODY, CL(9), False),
    (b"GET", b"1.1", 100, None, None, False, Framing.NO_BODY, b"", False),
    (b"GET", b"1.1", 103, 5, None, False, Framing.NO_BODY, b"", False),
    (b"GET", b"1.1", 204, 5, 5, False, Framing.NO_BODY, b"", False),
    (b"POST", b"1.0", 204, None, None, False, Framing.NO_BODY, b"", False),
    (b"GET", b"1.1", 304, 5, None, False, Framing.NO_BODY, CL(5), False),
    (b"GET", b"1.1", 304, None, 0, False, Framing.NO_BODY, b"", False),
    # the app's Content-Length wins, whatever else is known
    (b"GET", b"1.1", 200, 5, None, False, Framing.LENGTH, CL(5), False),
    (b"GET", b"1.1", 200, 5, 7, False, Framing.LENGTH, CL(5), False),
    (b"GET", b"1.0", 200, 5, None, False, Framing.LENGTH, CL(5), False),
    (b"GET", b"1.1", 200, 5, None, True, Framing.LENGTH, CL(5), False),
    (b"GET", b"1.1", 200, 0, None, False, Framing.LENGTH, CL(0), False),
    (b"GET", b"1.1", 500, 3, None, False, Framing.LENGTH, CL(3), False),
    # the whole body known when the head goes out
    (b"GET", b"1.1", 200, None, 11, False, Framing.LENGTH, CL(11), False),
    (b"GET", b"1.0", 200, None, 11, False, Framing.LENGTH, CL(11), False),
    (b"POST", b"1.1", 201, None, 0, False, Framing.LENGTH, CL(0), False),
    # ... but trailers need chunking
    (b"GET", b"1.1", 200, None, 11, True, Framing.CHUNKED, TE, False),
    # length unknown
    (b"GET", b"1.1", 200, None, None, False, Framing.CHUNKED, TE, False),
    (b"POST", b"1.1", 200, None, None, True, Framing.CHUNKED, TE, False),
    (b"GET", b"1.0", 200, None, None, False, Framing.CLOSE, b"", True),
    (b"GET", b"1.0", 200, None, None, True, Framing.CLOSE, b"", True),
]


@pytest.mark.parametrize("method,version,status,cl,known,trailers,kind,header,close", CASES)
def test_framing_decision(method, version, status, cl, known, trailers, kind, header, close):
    f = BodyFramer(method, version, status, cl, known, trailers)
    assert f.kind is kind
    assert f.header == header
    assert f.must_close is close
    assert f.has_body is (kind is not Framing.NO_BODY)


# pieces the app writes -> wire bytes, end bytes, framed count, must_close
BODIES = [
    # Content-Length 5
    (dict(cl=5), [b"hello"], b"hello", b"", 5, False),
    (dict(cl=5), [b"he", b"llo"], b"hello", b"", 5, False),
    (dict(cl=5), [b"hello world"], b"hello", b"", 5, True),           # too long: cut
    (dict(cl=5), [b"hel", b"lo", b"!"], b"hello", b"", 5, True),
    (dict(cl=5), [b"hel"], b"hel", b"", 3, True),                     # too short
    (dict(cl=5), [], b"", b"", 0, True),
    (dict(cl=0), [b""], b"", b"", 0, False),
    (dict(cl=0), [b"x"], b"", b"", 0, True),
    # known length
    (dict(known=3), [b"abc"], b"abc", b"", 3, False),
    # chunked
    (dict(), [b"hello"], b"5\r\nhello\r\n", b"0\r\n\r\n", 5, False),
    (dict(), [b"", b"ab", b"", b"c" * 16], b"2\r\nab\r\n10\r\n" + b"c" * 16 + b"\r\n",
     b"0\r\n\r\n", 18, False),
    (dict(), [], b"", b"0\r\n\r\n", 0, False),
    # close-delimited
    (dict(version=b"1.0"), [b"ab", b"cd"], b"abcd", b"", 4, True),
    # no body: whatever the app writes is dropped
    (dict(method=b"HEAD", cl=5), [b"hello"], b"", b"", 0, False),
    (dict(status=204), [b"oops"], b"", b"", 0, False),
    (dict(status=304, cl=4), [b"oops"], b"", b"", 0, False),
]


@pytest.mark.parametrize("opts,pieces,wire,end,framed,close", BODIES)
def test_body_bytes(opts, pieces, wire, end, framed, close):
    f = BodyFramer(opts.get("method", b"GET"), opts.get("version", b"1.1"),
                   opts.get("status", 200), opts.get("cl"), opts.get("known"))
    out = b"".join(f.frame(p) for p in pieces)
    assert out == wire
    assert f.end() == end
    assert f.framed == framed
    assert f.must_close is close


def test_trailers_end_the_chunked_body():
    f = BodyFramer(b"GET", b"1.1", 200, None, None, trailers=True)
    assert f.frame(b"abc") == b"3\r\nabc\r\n"
    assert f.end([(b"x-checksum", b"1234"), (b"x-b", b"")]) == \
        b"0\r\nx-checksum: 1234\r\nx-b: \r\n\r\n"


def test_trailers_are_dropped_without_chunking():
    f = BodyFramer(b"GET", b"1.1", 200, 3, None, trailers=True)
    f.frame(b"abc")
    assert f.end([(b"x-checksum", b"1234")]) == b""
    assert not f.must_close


@pytest.mark.parametrize("name,value", [(b"x-a", b"1\r\nx-b: 2"), (b"bad name", b"1"),
                                        (b"x-a", b"\x00")])
def test_invalid_trailers_are_refused(name, value):
    f = BodyFramer(b"GET", b"1.1", 200, None, None, trailers=True)
    with pytest.raises(ResponseError):
        f.end([(name, value)])


# sendfile: file size -> count to send, framed, must_close after end()
FILES = [
    (dict(cl=None, known=100), 100, 100, False),
    (dict(cl=50), 100, 50, False),                # never more than announced
    (dict(cl=200), 100, 100, True),               # the file is short
    (dict(method=b"HEAD", cl=100), 100, 0, False),
    (dict(status=304), 100, 0, False),
    (dict(version=b"1.0"), 100, 100, True),       # close-delimited
]


@pytest.mark.parametrize("opts,size,count,close", FILES)
def test_file_counts(opts, size, count, close):
    f = BodyFramer(opts.get("method", b"GET"), opts.get("version", b"1.1"),
                   opts.get("status", 200), opts.get("cl"), opts.get("known"))
    assert f.file_count(size) == count
    assert f.framed == count
    f.end()
    assert f.must_close is close


def test_chunked_file_is_not_sent_raw():
    f = BodyFramer(b"GET", b"1.1", 200, None, None)
    assert f.file_count(100) is None
    assert f.framed == 0


@pytest.mark.parametrize("kind,written,payload,carried", [
    ("length", 0, 10, 0), ("length", 4, 10, 4), ("length", 10, 10, 10),
    ("chunked", 0, 10, 0), ("chunked", 3, 10, 0), ("chunked", 4, 10, 1),  # "a\r\n" is 3
    ("chunked", 13, 10, 10), ("chunked", 15, 10, 10),
])
def test_payload_in_a_partial_write(kind, written, payload, carried):
    f = BodyFramer(b"GET", b"1.1", 200, 10 if kind == "length" else None, None)
    assert f.payload_in(written, payload) == carried
