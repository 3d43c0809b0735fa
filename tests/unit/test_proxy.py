"""Proxy-header trust (forkserve.http.proxy), sans-I/O."""

import pytest

from forkserve.http.proxy import ProxyTrust

H = lambda **kw: [(k.replace("_", "-").encode(), v.encode()) for k, v in kw.items()]  # noqa: E731


def test_untrusted_peer_is_ignored():
    trust = ProxyTrust(["10.0.0.1"])
    fwd = trust.resolve("127.0.0.1", H(x_forwarded_for="1.2.3.4", x_forwarded_proto="https"))
    assert (fwd.client, fwd.scheme, fwd.host) == (None, None, None)


def test_trusted_peer_sets_client_scheme_host():
    trust = ProxyTrust(["127.0.0.1"])
    fwd = trust.resolve("127.0.0.1", H(x_forwarded_for="1.2.3.4", x_forwarded_proto="https",
                                       x_forwarded_host="example.com:8443"))
    assert (fwd.client, fwd.scheme, fwd.host) == ("1.2.3.4", "https", b"example.com:8443")


def test_client_is_the_rightmost_untrusted_address():
    trust = ProxyTrust(["127.0.0.1", "10.0.0.0/8"])
    # The client wrote 6.6.6.6 itself; the edge proxy 10.1.1.1 appended the
    # real address 2.2.2.2, and our nginx appended 10.1.1.1.
    fwd = trust.resolve("127.0.0.1", H(x_forwarded_for="6.6.6.6, 2.2.2.2, 10.1.1.1"))
    assert fwd.client == "2.2.2.2"


def test_unix_peers():
    assert ProxyTrust(["unix"]).resolve(None, H(x_forwarded_for="1.2.3.4")).client == "1.2.3.4"
    assert ProxyTrust(["127.0.0.1"]).resolve(None, H(x_forwarded_for="1.2.3.4")).client is None


@pytest.mark.parametrize("value", ["1.2.3.4, not-an-ip", "1.2.3.4\x00", "999.1.1.1", ""])
def test_malformed_lists_are_not_trusted(value):
    assert ProxyTrust(["*"]).resolve("127.0.0.1", H(x_forwarded_for=value)).client is None


def test_bad_proto_and_host_are_ignored():
    fwd = ProxyTrust(["*"]).resolve("1.1.1.1", H(x_forwarded_proto="javascript",
                                                 x_forwarded_host="a b"))
    assert fwd.scheme is None and fwd.host is None


def test_rfc7239_forwarded():
    trust = ProxyTrust(["127.0.0.1"])
    fwd = trust.resolve("127.0.0.1", H(forwarded='for=192.0.2.60;proto=https;host=ex.org, '
                                                  'for="[2001:db8::1]:4711"'))
    assert fwd.client == "2001:db8::1" and fwd.scheme == "https" and fwd.host == b"ex.org"
    assert trust.resolve("127.0.0.1", H(forwarded="for=_hidden")).client is None
    assert trust.resolve("127.0.0.1", H(forwarded="for")).client is None


def test_ipv4_mapped_peer():
    assert ProxyTrust(["127.0.0.1"]).trusts("::ffff:127.0.0.1")
