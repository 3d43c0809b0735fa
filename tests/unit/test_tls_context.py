"""The TLS context builder (forkserve/tls.py): gunicorn 27's default context
from the settings, the ssl_context hook, and one config error naming the
setting for each way the files can be wrong."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from forkserve import tls
from forkserve.cli import build_config
from forkserve.config import ConfigError

sys.path.insert(0, str(Path(__file__).parent.parent))
from tlscerts import OPENSSL, make_pki  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(*args: str):
    return build_config([*args, "app:app"], environ={})


def _tls(pki: Path, *args: str):
    return _cfg("--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server.key"),
                *args)


def test_tls_is_on_with_certfile_only():
    assert not tls.enabled(_cfg())
    assert tls.enabled(_cfg("--certfile", "x.pem"))
    assert tls.check(_cfg()) == []  # nothing to build without TLS


def test_default_context_is_gunicorns(pki):
    ctx = tls.server_context(_tls(pki))
    assert ctx.verify_mode is ssl.CERT_NONE
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_NO_COMPRESSION  # create_default_context's


def test_settings_reach_the_context(pki):
    cfg = _tls(pki, "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "2",
               "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", "--ssl-min-version", "TLSv1.3")
    ctx = tls.server_context(cfg)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"] == \
        ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    assert any("forkserve test ca" in str(c["subject"]) for c in ctx.get_ca_certs())


def test_key_in_the_certificate_file(pki, tmp_path):
    both = tmp_path / "both.pem"
    both.write_bytes((pki / "server.pem").read_bytes() + (pki / "server.key").read_bytes())
    assert isinstance(tls.server_context(_cfg("--certfile", str(both))), ssl.SSLContext)


@pytest.mark.parametrize("args, needle", [
    (["--certfile", "/nonexistent/cert.pem"],
     "certfile: cannot read /nonexistent/cert.pem: No such file or directory (command line)"),
    (["--keyfile", "@/server.key"], "keyfile: a key needs its certificate: set certfile too"),
    (["--certfile", "@/server.pem", "--keyfile", "@/other.key"],
     "keyfile: the private key in @/other.key does not match the certificate in @/server.pem"),
    (["--certfile", "@/server.pem", "--keyfile", "@/nope.key"],
     "keyfile: cannot read @/nope.key: No such file or directory"),
    (["--certfile", "@/server.pem"], "certfile: no private key can be read from @/server.pem"),
    (["--certfile", "@/server.key", "--keyfile", "@/server.key"],
     "certfile: no certificate can be read from @/server.key"),
    (["--certfile", "@/server.ext", "--keyfile", "@/server.key"],
     "certfile: @/server.ext is not a PEM file"),
    (["--certfile", "@/server.pem", "--keyfile", "@/server.pem"],
     "keyfile: no private key can be read from @/server.pem"),
    (["--certfile", "@/server.pem", "--keyfile", "@/server.key", "--ciphers", "NOPE-NOTHING"],
     "ciphers: no cipher matches 'NOPE-NOTHING'"),
    (["--certfile", "@/server.pem", "--keyfile", "@/server.key", "--ca-certs", "@/server.key"],
     "ca_certs: no CA certificate in @/server.key"),
])
def test_each_wrong_file_is_one_error_naming_its_setting(pki, args, needle):
    args = [a.replace("@", str(pki)) for a in args]
    with pytest.raises(ConfigError) as info:
        tls.check(_cfg(*args))
    assert needle.replace("@", str(pki)) in str(info.value)
    assert "\n" not in str(info.value)


def test_an_encrypted_key_is_refused_not_prompted_for(pki, tmp_path):
    locked = tmp_path / "locked.key"
    subprocess.run([OPENSSL, "pkey", "-in", str(pki / "server.key"), "-aes256", "-passout",
                    "pass:secret", "-out", str(locked)], check=True, capture_output=True)
    with pytest.raises(ConfigError) as info:
        tls.check(_cfg("--certfile", str(pki / "server.pem"), "--keyfile", str(locked)))
    assert str(info.value).startswith(f"keyfile: the private key in {locked} is encrypted")


def test_ssl_context_hook_gets_config_and_factory(pki, tmp_path):
    seen = []

    def hook(config, factory):
        seen.append(config.certfile)
        ctx = factory()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    cfg = _tls(pki)
    cfg.set_hook("ssl_context", hook, "conf.py")
    ctx = tls.server_context(cfg)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert seen == [str(pki / "server.pem")]


@pytest.mark.parametrize("hook, needle", [
    (lambda config, factory: None, "ssl_context: the hook must return an ssl.SSLContext, "
                                   "got NoneType (conf.py)"),
    (lambda config, factory: 1 / 0, "ssl_context: the hook raised ZeroDivisionError"),
])
def test_a_broken_hook_is_a_config_error(pki, hook, needle):
    cfg = _tls(pki)
    cfg.set_hook("ssl_context", hook, "conf.py")
    with pytest.raises(ConfigError) as info:
        tls.check(cfg)
    assert needle in str(info.value)


def test_a_file_error_inside_the_hook_still_names_the_file(pki):
    cfg = _cfg("--certfile", str(pki / "nope.pem"))
    cfg.set_hook("ssl_context", lambda config, factory: factory(), "conf.py")
    with pytest.raises(ConfigError) as info:
        tls.check(cfg)
    assert str(info.value).startswith("certfile: cannot read")


def test_ssl_version_is_ignored_with_a_warning_as_in_gunicorn_27(pki):
    assert tls.check(_tls(pki)) == []
    assert tls.check(_tls(pki, "--ssl-version", "TLS")) == []
    (line,) = tls.check(_tls(pki, "--ssl-version", "TLSv1_2"))
    assert line.startswith("ssl_version = 'TLSv1_2' is ignored, as gunicorn 27 ignores it: "
                           "set ssl_min_version")


@pytest.mark.parametrize("args, needle", [
    (["--cert-reqs", "3"], "cert_reqs: expected 0 (none), 1 (optional) or 2 (required)"),
    (["--cert-reqs", "required"], "cert_reqs: expected an integer >= 0"),
    (["--ssl-min-version", "TLSv1.1"], "ssl_min_version: expected one of TLSv1.2, TLSv1.3"),
])
def test_bad_values(args, needle):
    with pytest.raises(ConfigError) as info:
        _cfg(*args)
    assert needle in str(info.value)


def test_values_gunicorn_configs_write(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("import ssl\ncert_reqs = ssl.CERT_REQUIRED\nssl_version = ssl.PROTOCOL_TLS\n"
                    "do_handshake_on_connect = True\nsuppress_ragged_eofs = False\n"
                    "ssl_min_version = 'TLSv1_3'\n")
    cfg = _cfg("-c", str(conf))
    assert cfg.cert_reqs == 2 and cfg.ssl_version == 2 and cfg.ssl_min_version == "TLSv1.3"
    assert cfg.do_handshake_on_connect and not cfg.suppress_ragged_eofs
    assert "ssl_version = 2" in cfg.to_python()  # loadable, not an enum's repr


@pytest.mark.parametrize("args, refusal", [
    (("-k", "gevent"), "certfile: the gevent worker does not terminate TLS yet"),
    (("--proxy-protocol", "v1"), "proxy_protocol: not read on TLS listeners yet"),
])
def test_combinations_not_served_yet_are_refused(pki, args, refusal):
    """Never a TLS setting silently dropped: a gevent worker would serve
    plaintext, a PROXY header would break the handshake."""
    pytest.importorskip("gevent")
    with pytest.raises(ConfigError) as info:
        tls.check(_tls(pki, *args))
    assert str(info.value).startswith(refusal)
