"""The PROXY protocol header parser (forkserve.http.proxy_protocol), sans-I/O."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from forkserve.http.proxy_protocol import (NEED_MORE, V1_MAX_LENGTH, V2_MAX_LENGTH,
                                           V2_SIGNATURE, Command, ProxyHeader,
                                           ProxyProtocolError, parse_proxy_header)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command=1, family=1, transport=1, body=b"", version=2, length=None):
    if length is None:
        length = len(body)
    return (V2_SIGNATURE + bytes([(version << 4) | command, (family << 4) | transport])
            + struct.pack(">H", length) + body)


def v2_inet(src="192.0.2.1", dst="198.51.100.2", sport=51000, dport=80, tlvs=b""):
    return v2(body=ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
              + struct.pack(">HH", sport, dport) + tlvs)


def v2_inet6(src="2001:db8::1", dst="2001:db8::2", sport=1, dport=443):
    return v2(family=2, body=ipaddress.IPv6Address(src).packed
              + ipaddress.IPv6Address(dst).packed + struct.pack(">HH", sport, dport))


# -- v1 -------------------------------------------------------------------------------

def test_v1_tcp4():
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 80\r\n"
    header, consumed = parse_proxy_header(line + REQUEST, "v1")
    assert consumed == len(line)
    assert header == ProxyHeader(1, Command.PROXY, "TCP4", ("192.0.2.1", 51000),
                                 ("198.51.100.2", 80))


def test_v1_tcp6():
    line = b"PROXY TCP6 2001:db8::1 2001:DB8::2 65535 0\r\n"
    header, consumed = parse_proxy_header(line + REQUEST)
    assert consumed == len(line) and header.source == ("2001:db8::1", 65535)
    assert header.destination == ("2001:db8::2", 0)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"])
def test_v1_unknown_gives_no_address(line):
    header, consumed = parse_proxy_header(line + REQUEST)
    assert consumed == len(line) and header.family == "UNKNOWN" and header.source is None


def test_the_longest_v1_line_is_taken():
    line = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(line) <= V1_MAX_LENGTH
    assert parse_proxy_header(line)[1] == len(line)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 51000\r\n",          # 5 fields
    b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 80 9\r\n",     # 7 fields
    b"PROXY TCP4  192.0.2.1 198.51.100.2 51000 80\r\n",      # two spaces
    b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 80 \r\n",
    b"PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",           # leading zero
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",          # family mismatch
    b"PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 80\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 080 80\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 80\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 \xd9\xa1 80\r\n",    # non-ASCII digit
    b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",              # LF without CR
    b"PROXY UNKNOWN\rx\r\n",
    b"PROXY \r\n",
])
def test_bad_v1_lines(line):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line + REQUEST)


def test_v1_line_without_crlf_within_107_bytes():
    data = b"PROXY TCP4 " + b"1" * 200
    assert parse_proxy_header(data[:V1_MAX_LENGTH - 1]) is NEED_MORE
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data[:V1_MAX_LENGTH])


# -- v2 -------------------------------------------------------------------------------

def test_v2_inet_with_tlvs():
    tlvs = b"\x01\x00\x02h2" + b"\x20\x00\x00"
    data = v2_inet(tlvs=tlvs)
    header, consumed = parse_proxy_header(data + REQUEST, "v2")
    assert consumed == len(data)
    assert header == ProxyHeader(2, Command.PROXY, "TCP4", ("192.0.2.1", 51000),
                                 ("198.51.100.2", 80))


def test_v2_inet6():
    header, consumed = parse_proxy_header(v2_inet6())
    assert header.family == "TCP6" and header.source == ("2001:db8::1", 1)


@pytest.mark.parametrize("data, family", [
    (v2(command=0, family=1, body=b"\x00" * 12), "UNSPEC"),  # LOCAL: addresses ignored
    (v2(command=0, family=0, transport=0), "UNSPEC"),
    (v2(family=0, transport=0, body=b"junk"), "UNSPEC"),
    (v2(family=3, body=b"/run/x.sock".ljust(216, b"\x00")), "UNIX"),
])
def test_v2_without_a_client_address(data, family):
    header, consumed = parse_proxy_header(data + REQUEST)
    assert consumed == len(data) and header.family == family and header.source is None


@pytest.mark.parametrize("data", [
    v2(version=1, body=b"\x00" * 12),
    v2(version=3, body=b"\x00" * 12),
    v2(command=2, body=b"\x00" * 12),
    v2(family=4, body=b"\x00" * 12),
    v2(transport=3, body=b"\x00" * 12),
    v2(transport=2, body=b"\x00" * 12),                # UDP
    v2(body=b"\x00" * 11),                             # short IPv4 block
    v2(family=2, body=b"\x00" * 35),
    v2(family=3, body=b"\x00" * 100),
    v2_inet(tlvs=b"\x01\x00"),                         # truncated TLV head
    v2_inet(tlvs=b"\x01\x00\x05ab"),                   # TLV past the end
    v2(length=V2_MAX_LENGTH),                          # too long for us
])
def test_bad_v2_headers(data):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data + b"\x00" * 40 + REQUEST)


def test_v2_waits_for_its_whole_length():
    data = v2_inet(tlvs=b"\x04\x00\x10" + b"x" * 16)
    for n in range(len(data)):
        assert parse_proxy_header(data[:n]) is NEED_MORE
    assert parse_proxy_header(data)[1] == len(data)


# -- not a PROXY header, and the modes ---------------------------------------------------

@pytest.mark.parametrize("data", [REQUEST, b"\r\nGET / HTTP/1.1\r\n\r\n", b"PROXZ",
                                  b"\r\n\r\n\x00\r\nQUIX\n" + b"\x00" * 20, b"P\x00"])
def test_other_bytes_are_http(data):
    assert parse_proxy_header(data) == (None, 0)


def test_modes_read_only_their_version():
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 80\r\n"
    assert parse_proxy_header(line, "v2") == (None, 0)
    assert parse_proxy_header(v2_inet(), "v1") == (None, 0)
    assert parse_proxy_header(line, "auto")[0].version == 1
    assert parse_proxy_header(v2_inet(), "auto")[0].version == 2
    with pytest.raises(ValueError):
        parse_proxy_header(line, "off")


@pytest.mark.parametrize("prefix", [b"", b"P", b"PROXY", b"\r", b"\r\n\r\n\x00\r\nQUI"])
def test_prefixes_need_more(prefix):
    assert parse_proxy_header(prefix) is NEED_MORE


# -- properties ---------------------------------------------------------------------------

def _outcome(data, mode):
    try:
        return parse_proxy_header(data, mode)
    except ProxyProtocolError:
        return ProxyProtocolError


def _fed_in_pieces(data, cuts, mode):
    """The answer a worker gets feeding ``data`` cut at ``cuts``."""
    buf = b""
    bounds = sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    start = 0
    result = NEED_MORE
    for end in bounds:
        buf += data[start:end]
        start = end
        result = _outcome(buf, mode)
        if result is not NEED_MORE:
            return result
    return result


_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(lambda a: str(a))
_PORT = st.integers(0, 65535)


@st.composite
def headers(draw):
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-local"]))
    if kind == "v1-4":
        data = b"PROXY TCP4 %s %s %d %d\r\n" % (draw(_V4).encode(), draw(_V4).encode(),
                                               draw(_PORT), draw(_PORT))
    elif kind == "v1-6":
        data = b"PROXY TCP6 %s %s %d %d\r\n" % (draw(_V6).encode(), draw(_V6).encode(),
                                               draw(_PORT), draw(_PORT))
    elif kind == "v1-unknown":
        data = b"PROXY UNKNOWN\r\n"
    elif kind == "v2-4":
        tlvs = b"".join(bytes([t]) + struct.pack(">H", len(v)) + v for t, v in draw(
            st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4)))
        data = v2_inet(draw(_V4), draw(_V4), draw(_PORT), draw(_PORT), tlvs)
    elif kind == "v2-6":
        data = v2_inet6(draw(_V6), draw(_V6), draw(_PORT), draw(_PORT))
    else:
        data = v2(command=0, family=0, transport=0)
    return data


def _mutate(data, edits):
    data = bytearray(data)
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    return bytes(data)


_MODES = st.sampled_from(["v1", "v2", "auto"])
_CUTS = st.lists(st.integers(0, 300), max_size=8)
_EDITS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers(), st.binary(max_size=30), _EDITS, _CUTS, _MODES)
def test_any_split_gives_the_same_answer(header, rest, edits, cuts, mode):
    data = _mutate(header + rest, edits)
    assert _fed_in_pieces(data, cuts, mode) == _outcome(data, mode)


@settings(max_examples=400, deadline=None)
@given(headers(), st.binary(max_size=30), _MODES)
def test_valid_headers_are_read_whole(header, rest, mode):
    result = _outcome(header + rest, mode)
    want_v1 = header.startswith(b"PROXY")
    if mode == "auto" or (mode == "v1") == want_v1:
        assert result is not ProxyProtocolError and result[1] == len(header)
    else:
        assert result == (None, 0)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda b: b"PROXY " + b),
                 st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b)), _CUTS, _MODES)
def test_fuzzed_input_raises_only_the_parsers_error(data, cuts, mode):
    result = _fed_in_pieces(data, cuts, mode)   # anything else raised fails the test
    if result is NEED_MORE:
        # Never waiting for more than a header can hold.
        assert len(data) < V2_MAX_LENGTH
    elif result is not ProxyProtocolError:
        header, consumed = result
        assert 0 <= consumed <= len(data) and (header is None) == (consumed == 0)
