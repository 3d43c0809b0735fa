"""Proxy-header trust (forkserve.http.proxy), sans-I/O."""

import pytest

from forkserve.http.proxy import ProxyTrust
from forkserve.http.request import HTTPError

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


def test_bad_host_is_ignored_and_other_proto_means_http():
    fwd = ProxyTrust(["*"]).resolve("1.1.1.1", H(x_forwarded_proto="javascript",
                                                 x_forwarded_host="a b"))
    assert fwd.scheme == "http" and fwd.host is None


def test_rfc7239_forwarded():
    trust = ProxyTrust(["127.0.0.1"])
    fwd = trust.resolve("127.0.0.1", H(forwarded='for=192.0.2.60;proto=https;host=ex.org, '
                                                  'for="[2001:db8::1]:4711"'))
    assert fwd.client == "2001:db8::1" and fwd.scheme == "https" and fwd.host == b"ex.org"
    assert trust.resolve("127.0.0.1", H(forwarded="for=_hidden")).client is None
    assert trust.resolve("127.0.0.1", H(forwarded="for")).client is None


def test_ipv4_mapped_peer():
    assert ProxyTrust(["127.0.0.1"]).trusts("::ffff:127.0.0.1")


# -- secure_scheme_headers (gunicorn's names and rules) --------------------------

@pytest.mark.parametrize("headers, scheme", [
    (H(x_forwarded_ssl="on"), "https"),
    (H(x_forwarded_protocol="ssl"), "https"),
    (H(x_forwarded_proto="https"), "https"),
    (H(x_forwarded_proto="http"), "http"),
    (H(x_forwarded_ssl="ON"), "http"),             # values compare exactly
    (H(x_forwarded_proto="https, http"), "http"),  # the whole value, as gunicorn
    (H(x_forwarded_proto="https", x_forwarded_ssl="on", x_forwarded_protocol="ssl"), "https"),
    (H(x_forwarded_for="1.2.3.4"), None),
])
def test_default_secure_scheme_headers(headers, scheme):
    assert ProxyTrust(["127.0.0.1"]).resolve("127.0.0.1", headers).scheme == scheme


def test_secure_scheme_headers_only_from_a_trusted_peer():
    assert ProxyTrust(["10.0.0.1"]).resolve("127.0.0.1", H(x_forwarded_ssl="on")).scheme is None


@pytest.mark.parametrize("headers", [
    H(x_forwarded_ssl="on", x_forwarded_proto="http"),
    H(x_forwarded_protocol="tls", x_forwarded_proto="https"),
    [(b"x-forwarded-proto", b"https"), (b"x-forwarded-proto", b"http")],
])
def test_disagreeing_scheme_headers_are_a_400(headers):
    with pytest.raises(HTTPError) as info:
        ProxyTrust(["127.0.0.1"]).resolve("127.0.0.1", headers)
    assert info.value.status == 400
    # From an untrusted peer the same headers are just ignored.
    assert ProxyTrust(["10.0.0.1"]).resolve("127.0.0.1", headers).scheme is None


def test_configured_secure_scheme_headers_replace_the_default():
    trust = ProxyTrust(["127.0.0.1"], {"X-SCHEME": "secure"})
    assert trust.resolve("127.0.0.1", H(x_scheme="secure")).scheme == "https"
    assert trust.resolve("127.0.0.1", H(x_forwarded_ssl="on")).scheme is None
    # Names as gunicorn compares them: upper case, or never matched.
    assert ProxyTrust(["127.0.0.1"], {"X-Scheme": "secure"}).resolve(
        "127.0.0.1", H(x_scheme="secure")).scheme is None
    assert ProxyTrust(["127.0.0.1"], {}).resolve(
        "127.0.0.1", H(x_forwarded_proto="https")).scheme is None


def test_forwarded_proto_counts_only_without_a_secure_scheme_header():
    trust = ProxyTrust(["127.0.0.1"])
    assert trust.resolve("127.0.0.1", H(forwarded="proto=https")).scheme == "https"
    assert trust.resolve("127.0.0.1", H(forwarded="proto=https",
                                        x_forwarded_proto="http")).scheme == "http"


# -- forwarder_headers -------------------------------------------------------------

def test_forwarder_headers_pass_from_a_trusted_peer_only():
    headers = [(b"script_name", b"/app"), (b"remote_user", b"bob"), (b"path_info", b"/x")]
    trust = ProxyTrust(["127.0.0.1"], forwarder_headers=["SCRIPT_NAME", "PATH_INFO"])
    assert trust.resolve("127.0.0.1", headers).extra == [(b"script_name", b"/app"),
                                                         (b"path_info", b"/x")]
    assert ProxyTrust(["10.0.0.1"], forwarder_headers=["SCRIPT_NAME"]).resolve(
        "127.0.0.1", headers).extra == []
