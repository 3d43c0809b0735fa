"""Proxy headers: who the client is, by which scheme and host it came.

Only a peer listed in ``forwarded_allow_ips`` may say so, through
``X-Forwarded-For`` / ``X-Forwarded-Host`` or RFC 7239 ``Forwarded``, the
``secure_scheme_headers`` and the ``forwarder_headers``.  From anyone else
the headers are ignored: a client could write them itself.  Sans-I/O:
headers in, a decision out.

The scheme follows gunicorn's ``secure_scheme_headers``: each listed header
the proxy sent says https if its value is exactly the listed one, else
http (``X-Forwarded-Proto: http``); two that disagree make the request
ambiguous, and it is refused with 400.  Only when none is sent does
``Forwarded: proto=`` count.

Each proxy appends to these lists, so the right end is the part written by
the proxy nearest to us.  The client address is taken from the right,
skipping addresses that are themselves trusted proxies: an address the
client made up sits further left and is never reached.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Mapping

from .request import HTTPError

__all__ = ["ProxyTrust", "Forwarded", "NOT_FORWARDED", "SECURE_SCHEME_HEADERS"]

#: gunicorn 27's default secure_scheme_headers.
SECURE_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                         "X-FORWARDED-SSL": "on"}

_XFF_ENTRY = re.compile(rb"\[?([0-9A-Fa-f:.]{2,45})\]?(?::[0-9]{1,5})?")
_PROTO = re.compile(rb"https?|wss?", re.I)
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?")
# forwarded-pair = token "=" ( token / quoted-string ), RFC 7239 section 4
_FWD_PAIR = re.compile(rb'[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)=("[^"\\\x00-\x1f\x7f]*"|'
                       rb"[!#$%&'*+\-.^_`|~0-9A-Za-z:\[\]]+)[ \t]*")

# What a header is to the decision, by its lowercased name.
_XFF, _XFH, _FWD, _SECURE, _FORWARDER = range(5)
_NAMES = {b"x-forwarded-for": _XFF, b"x-forwarded-host": _XFH, b"forwarded": _FWD}


class Forwarded:
    """What trusted proxy headers said; None where they said nothing.
    ``extra`` holds the forwarder_headers sent (lowercased name, value)."""

    __slots__ = ("client", "scheme", "host", "extra")

    def __init__(self) -> None:
        self.client: str | None = None
        self.scheme: str | None = None
        self.host: bytes | None = None
        self.extra: list[tuple[bytes, bytes]] = []


#: The answer when the peer is not trusted or sent no proxy headers.
NOT_FORWARDED = Forwarded()


def _parse_ip(text: bytes) -> str | None:
    m = _XFF_ENTRY.fullmatch(text.strip(b" \t"))
    if m is None:
        return None
    try:
        return str(ipaddress.ip_address(m.group(1).decode("ascii")))
    except ValueError:
        return None


class ProxyTrust:
    """``forwarded_allow_ips`` compiled: IPs, CIDR ranges, ``unix``, ``*``;
    with the ``secure_scheme_headers`` and ``forwarder_headers`` such a
    peer may send."""

    def __init__(self, allow: Iterable[str],
                 secure_scheme_headers: Mapping[str, str] = SECURE_SCHEME_HEADERS,
                 forwarder_headers: Iterable[str] = ()) -> None:
        self.kinds = dict(_NAMES)
        # The reader hands over header names lowercased, values without
        # surrounding whitespace: compared as bytes, exactly.
        # gunicorn compares the upper-cased request header name with the
        # names as configured: one not in upper case never matches.
        self.secure = {name.lower().encode("latin-1"): value.encode("latin-1")
                       for name, value in secure_scheme_headers.items() if name == name.upper()}
        for name in self.secure:
            self.kinds[name] = _SECURE
        for name in forwarder_headers:
            # Only names with '_' need leave to pass (see http/wsgi.py);
            # the others reach the app anyway.
            if "_" in name:
                self.kinds.setdefault(name.lower().encode("latin-1"), _FORWARDER)
        self.any = False
        self.unix = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in allow:
            if item == "*":
                self.any = True
            elif item == "unix":
                self.unix = True
            else:
                self.networks.append(ipaddress.ip_network(item, strict=False))
        self._cache: dict[str, bool] = {}

    def trusts(self, host: str | None) -> bool:
        """Whether a peer (None: a unix socket peer) may set proxy headers."""
        if self.any:
            return True
        if host is None or host == "":
            return self.unix
        known = self._cache.get(host)
        if known is None:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                if getattr(addr, "ipv4_mapped", None) is not None:
                    addr = addr.ipv4_mapped
                known = any(addr in net for net in self.networks)
            if len(self._cache) < 1024:
                self._cache[host] = known
        return known

    def resolve(self, peer_host: str | None, headers: Iterable[tuple[bytes, bytes]]) -> Forwarded:
        """The forwarded client, scheme and host, if the peer is trusted."""
        if not self.trusts(peer_host):
            return NOT_FORWARDED
        return self.from_headers(headers)

    def from_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> Forwarded:
        """What the proxy headers say, for a peer already known to be
        trusted (a connection decides that once, not per request).

        Raises HTTPError(400) when two secure scheme headers disagree."""
        xff: list[bytes] = []
        proto = host = secure = None
        fwd: list[bytes] = []
        extra: list[tuple[bytes, bytes]] = []
        found = False
        kinds = self.kinds
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                continue
            found = True
            if kind is _XFF:
                xff.extend(value.split(b","))
            elif kind is _SECURE:
                scheme = "https" if value == self.secure[name] else "http"
                if secure is None:
                    secure = scheme
                elif scheme != secure:
                    raise HTTPError(400, "contradictory scheme headers")
            elif kind is _XFH:
                host = value.split(b",")[-1].strip(b" \t")
            elif kind is _FWD:
                fwd.extend(value.split(b","))
            else:
                extra.append((name, value))
        if not found:
            return NOT_FORWARDED
        result = Forwarded()
        result.extra = extra
        result.scheme = secure
        if fwd and not xff:
            pairs = self._forwarded_pairs(fwd)
            xff = pairs.get(b"for", [])
            if pairs.get(b"proto"):
                proto = pairs[b"proto"][-1]
            if host is None and pairs.get(b"host"):
                host = pairs[b"host"][-1]
        if xff:
            result.client = self._client(xff)
        if secure is None and proto is not None and _PROTO.fullmatch(proto):
            result.scheme = {b"http": "http", b"https": "https", b"ws": "http",
                             b"wss": "https"}[proto.lower()]
        if host is not None and _HOST.fullmatch(host):
            result.host = host
        return result

    def _client(self, entries: list[bytes]) -> str | None:
        addrs = [_parse_ip(e) for e in entries]
        if not addrs or any(a is None for a in addrs):
            return None  # one malformed entry: trust none of the list
        for addr in reversed(addrs):
            if not self.trusts(addr):
                return addr
        return addrs[0]

    @staticmethod
    def _forwarded_pairs(elements: list[bytes]) -> dict[bytes, list[bytes]]:
        """``for``/``proto``/``host`` values from Forwarded elements, in order."""
        out: dict[bytes, list[bytes]] = {}
        for element in elements:
            for pair in element.split(b";"):
                if not pair.strip(b" \t"):
                    continue
                m = _FWD_PAIR.fullmatch(pair)
                if m is None:
                    return {}
                key = m.group(1).lower()
                value = m.group(2)
                if value.startswith(b'"'):
                    value = value[1:-1]
                out.setdefault(key, []).append(value)
        return out
