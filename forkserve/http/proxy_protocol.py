"""The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 and v2), sans-I/O.

A load balancer that speaks it (HAProxy ``send-proxy``/``send-proxy-v2``,
AWS NLB, stunnel, ...) writes one header at the very start of a TCP
connection saying which client it carries; the HTTP request follows.  This
module reads that header from the bytes buffered so far:

    result = parse_proxy_header(buffered, mode)
    NEED_MORE                  -> read more and call again with all bytes so far
    (None, 0)                  -> no PROXY header: the bytes are HTTP
    (ProxyHeader, consumed)    -> the header; the HTTP request starts at consumed
    ProxyProtocolError         -> malformed: close the connection

The answer depends only on the bytes given, and a final answer for some
bytes is the answer for any longer input that starts with them, so the
caller may feed the bytes in any pieces (split invariance).  Every length
is bounded: v1 lines by the spec's 107 bytes, v2 headers by
``V2_MAX_LENGTH``; NEED_MORE is never answered for more bytes than that.

Strict where the spec is: v1 is ``PROXY TCP4|TCP6 src dst sport dport``
with single spaces and CRLF, or ``PROXY UNKNOWN`` (anything up to CRLF);
addresses must be of the family named, ports 0-65535 without leading
zeros.  v2 needs its 12-byte signature, version 2, command LOCAL or
PROXY, a known family and protocol, address blocks of the size the family
needs, and TLVs that exactly fill what follows them (their content is
skipped).  A header that gives no client address (v1 UNKNOWN, v2 LOCAL,
UNSPEC or UNIX families) leaves the connection's own addresses in use, as
the spec says.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from .request import parse_decimal

__all__ = ["ProxyHeader", "ProxyProtocolError", "ProxyForbidden", "ProxyPreamble",
           "NEED_MORE", "MODES", "V1_MAX_LENGTH", "V2_SIGNATURE", "V2_MAX_LENGTH",
           "parse_proxy_header"]

#: The modes of the ``proxy_protocol`` setting that read a header.
MODES = ("v1", "v2", "auto")

V1_PREFIX = b"PROXY "
#: The spec's longest v1 line, CRLF included.
V1_MAX_LENGTH = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16
#: Our bound on a whole v2 header (the spec allows 16 + 65535): addresses
#: take at most 216 bytes; the rest is room for TLVs (TLS details, cloud
#: load balancers' endpoint IDs), which are skipped.
V2_MAX_LENGTH = 4096

_V4_TEXT = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_V6_TEXT = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_PORT_TEXT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(Exception):
    """A malformed PROXY header; the connection must be closed (after a
    ``status`` answer, as gunicorn gives)."""

    status = 400


class ProxyForbidden(ProxyProtocolError):
    """A PROXY header from a peer not in ``proxy_allow_ips``."""

    status = 403


class _NeedMore:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


#: More bytes are needed to decide.
NEED_MORE = _NeedMore()


class Command(enum.Enum):
    PROXY = "PROXY"    # a relayed connection: the addresses are the client's
    LOCAL = "LOCAL"    # the proxy's own connection (health check): no client


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY header said.  ``source`` is the client's (address,
    port) and ``destination`` the address it connected to, or both None
    when the header gives none (``family`` says why)."""

    version: int
    command: Command
    family: str                              # TCP4, TCP6, UNKNOWN, UNSPEC, UNIX
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def parse_proxy_header(data: bytes | bytearray, mode: str = "auto"
                       ) -> _NeedMore | tuple[ProxyHeader | None, int]:
    """Read a PROXY header of ``mode`` (v1, v2 or auto) at the start of
    ``data``; see the module docstring for the answers."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    data = bytes(data[:V2_MAX_LENGTH])
    maybe_v1 = mode != "v2" and V1_PREFIX.startswith(data[:len(V1_PREFIX)])
    maybe_v2 = mode != "v1" and V2_SIGNATURE.startswith(data[:len(V2_SIGNATURE)])
    if maybe_v1:
        if len(data) < len(V1_PREFIX):
            return NEED_MORE
        return _parse_v1(data)
    if maybe_v2:
        if len(data) < len(V2_SIGNATURE):
            return NEED_MORE
        return _parse_v2(data)
    return None, 0


# -- v1: one line of text ------------------------------------------------------------

def _parse_v1(data: bytes) -> _NeedMore | tuple[ProxyHeader, int]:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data or _has_lone_cr(data):
            raise ProxyProtocolError("PROXY v1 line too long or without CRLF")
        return NEED_MORE
    line = data[:end]
    consumed = end + 2
    if b"\n" in line or b"\r" in line:
        raise ProxyProtocolError("PROXY v1 line with a bare CR or LF")
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        # The spec: the rest of an UNKNOWN line is to be ignored.
        return ProxyHeader(1, Command.PROXY, "UNKNOWN"), consumed
    if len(parts) != 6:
        raise ProxyProtocolError("PROXY v1 line must have 6 fields")
    _, proto, src, dst, sport, dport = parts
    if proto == b"TCP4":
        source = (_v4_text(src), _port_text(sport))
        destination = (_v4_text(dst), _port_text(dport))
    elif proto == b"TCP6":
        source = (_v6_text(src), _port_text(sport))
        destination = (_v6_text(dst), _port_text(dport))
    else:
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    return ProxyHeader(1, Command.PROXY, proto.decode("ascii"), source, destination), consumed


def _has_lone_cr(data: bytes) -> bool:
    """A CR not followed by LF (one at the very end may still get its LF)."""
    i = data.find(b"\r")
    while 0 <= i < len(data) - 1:
        if data[i + 1] != 0x0A:
            return True
        i = data.find(b"\r", i + 1)
    return False


def _v4_text(text: bytes) -> str:
    if _V4_TEXT.fullmatch(text) is None:
        raise ProxyProtocolError("PROXY v1: bad IPv4 address")
    try:
        return str(ipaddress.IPv4Address(text.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError("PROXY v1: bad IPv4 address") from None


def _v6_text(text: bytes) -> str:
    if _V6_TEXT.fullmatch(text) is None:
        raise ProxyProtocolError("PROXY v1: bad IPv6 address")
    try:
        return str(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError("PROXY v1: bad IPv6 address") from None


def _port_text(text: bytes) -> int:
    port = parse_decimal(text) if _PORT_TEXT.fullmatch(text) else None
    if port is None or port > 65535:
        raise ProxyProtocolError("PROXY v1: bad port")
    return port


# -- v2: binary ----------------------------------------------------------------------

_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0, 1, 2, 3
_UNSPEC_TRANSPORT, _STREAM, _DGRAM = 0, 1, 2
# Bytes of the address block each family needs (spec section 2.2).
_ADDRESS_SIZE = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


def _parse_v2(data: bytes) -> _NeedMore | tuple[ProxyHeader, int]:
    if len(data) < _V2_FIXED:
        # The bytes there are already can still be wrong.
        if len(data) > 12:
            _check_version(data[12])
        return NEED_MORE
    ver_cmd, fam_proto = data[12], data[13]
    _check_version(ver_cmd)
    command = ver_cmd & 0x0F
    length = (data[14] << 8) | data[15]
    total = _V2_FIXED + length
    if total > V2_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 header longer than {V2_MAX_LENGTH} bytes")
    family, transport = fam_proto >> 4, fam_proto & 0x0F
    if family not in _ADDRESS_SIZE or transport not in (_UNSPEC_TRANSPORT, _STREAM, _DGRAM):
        raise ProxyProtocolError("PROXY v2: unknown address family or protocol")
    if len(data) < total:
        return NEED_MORE
    body = data[_V2_FIXED:total]
    if command == 0x0:
        # LOCAL: the proxy's own connection; addresses (if any) are ignored.
        return ProxyHeader(2, Command.LOCAL, "UNSPEC"), total
    if family == _AF_UNSPEC:
        # No addresses: whatever follows is to be ignored (spec 2.2).
        return ProxyHeader(2, Command.PROXY, "UNSPEC"), total
    size = _ADDRESS_SIZE[family]
    if length < size:
        raise ProxyProtocolError("PROXY v2: address block too short for its family")
    _check_tlvs(body[size:])
    if transport != _STREAM:
        raise ProxyProtocolError("PROXY v2: only stream (TCP) connections are relayed here")
    if family == _AF_UNIX:
        # A unix socket client has no address to give the app.
        return ProxyHeader(2, Command.PROXY, "UNIX"), total
    if family == _AF_INET:
        source = (str(ipaddress.IPv4Address(body[0:4])), (body[8] << 8) | body[9])
        destination = (str(ipaddress.IPv4Address(body[4:8])), (body[10] << 8) | body[11])
        return ProxyHeader(2, Command.PROXY, "TCP4", source, destination), total
    source = (str(ipaddress.IPv6Address(body[0:16])), (body[32] << 8) | body[33])
    destination = (str(ipaddress.IPv6Address(body[16:32])), (body[34] << 8) | body[35])
    return ProxyHeader(2, Command.PROXY, "TCP6", source, destination), total


def _check_version(ver_cmd: int) -> None:
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("PROXY v2: version must be 2")
    if ver_cmd & 0x0F not in (0x0, 0x1):
        raise ProxyProtocolError("PROXY v2: command must be LOCAL or PROXY")


def _check_tlvs(tlvs: bytes) -> None:
    """TLVs (type, 2-byte length, value) must exactly fill what follows the
    addresses; their content is not used.  The length bound on the whole
    header bounds their count."""
    i = 0
    n = len(tlvs)
    while i < n:
        if n - i < 3:
            raise ProxyProtocolError("PROXY v2: truncated TLV")
        i += 3 + ((tlvs[i + 1] << 8) | tlvs[i + 2])
        if i > n:
            raise ProxyProtocolError("PROXY v2: TLV longer than the header")


class ProxyPreamble:
    """One connection's start, until its PROXY header is decided: what both
    worker kinds feed the bytes they receive through, before the request
    reader sees any.

    :meth:`feed` answers NEED_MORE, or ``(header or None, the bytes after
    it)`` once; it raises ProxyProtocolError for a malformed header and
    ProxyForbidden for a header from a peer that may not send one (a
    connection without a header is served as it is, as gunicorn does).
    """

    __slots__ = ("mode", "trusted", "buf")

    def __init__(self, mode: str, trusted: bool) -> None:
        self.mode = mode
        self.trusted = trusted
        self.buf = b""

    def feed(self, data: bytes) -> _NeedMore | tuple[ProxyHeader | None, bytes]:
        """Bytes received (never more than one read's worth at a time)."""
        buf = self.buf + data if self.buf else data
        result = parse_proxy_header(buf, self.mode)
        if result is NEED_MORE:
            self.buf = buf
            return NEED_MORE
        header, consumed = result  # type: ignore[misc]
        self.buf = b""
        if header is not None and not self.trusted:
            raise ProxyForbidden("PROXY header from a peer not in proxy_allow_ips")
        return header, buf[consumed:]
