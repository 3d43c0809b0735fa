"""Proxy headers: who the client is, by which scheme and host it came.

Only a peer listed in ``forwarded_allow_ips`` may say so, through
``X-Forwarded-For`` / ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` or RFC
7239 ``Forwarded``.  From anyone else the headers are ignored: a client
could write them itself.  Sans-I/O: headers in, a decision out.

Each proxy appends to these lists, so the right end is the part written by
the proxy nearest to us.  The client address is taken from the right,
skipping addresses that are themselves trusted proxies: an address the
client made up sits further left and is never reached.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

__all__ = ["ProxyTrust", "Forwarded", "NOT_FORWARDED"]

_XFF_ENTRY = re.compile(rb"\[?([0-9A-Fa-f:.]{2,45})\]?(?::[0-9]{1,5})?")
_PROTO = re.compile(rb"https?|wss?", re.I)
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?")
# forwarded-pair = token "=" ( token / quoted-string ), RFC 7239 section 4
_FWD_PAIR = re.compile(rb'[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)=("[^"\\\x00-\x1f\x7f]*"|'
                       rb"[!#$%&'*+\-.^_`|~0-9A-Za-z:\[\]]+)[ \t]*")

_NAMES = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})


class Forwarded:
    """What trusted proxy headers said; None where they said nothing."""

    __slots__ = ("client", "scheme", "host")

    def __init__(self) -> None:
        self.client: str | None = None
        self.scheme: str | None = None
        self.host: bytes | None = None


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
    """``forwarded_allow_ips`` compiled: IPs, CIDR ranges, ``unix``, ``*``."""

    def __init__(self, allow: Iterable[str]) -> None:
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
        trusted (a connection decides that once, not per request)."""
        xff: list[bytes] = []
        proto = host = None
        fwd: list[bytes] = []
        found = False
        for name, value in headers:
            if name not in _NAMES:
                continue
            found = True
            if name == b"x-forwarded-for":
                xff.extend(value.split(b","))
            elif name == b"x-forwarded-proto":
                proto = value.split(b",")[-1].strip(b" \t")
            elif name == b"x-forwarded-host":
                host = value.split(b",")[-1].strip(b" \t")
            else:
                fwd.extend(value.split(b","))
        if not found:
            return NOT_FORWARDED
        result = Forwarded()
        if fwd and not xff:
            pairs = self._forwarded_pairs(fwd)
            xff = pairs.get(b"for", [])
            if proto is None and pairs.get(b"proto"):
                proto = pairs[b"proto"][-1]
            if host is None and pairs.get(b"host"):
                host = pairs[b"host"][-1]
        if xff:
            result.client = self._client(xff)
        if proto is not None and _PROTO.fullmatch(proto):
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
