"""TLS: the server's SSLContext, built from the settings, for every worker kind.

One builder for both worker kinds.  The master builds a context once before
forking (at start and on each HUP) only to check the settings, so that a
missing file, a key that does not match its certificate or a bad cipher
string is one config error naming the setting, before anything forks; each
worker builds its own at boot, before it drops privileges, so that a HUP's
new workers read the certificate files again.

As in gunicorn 27: TLS is on when ``certfile`` (or ``keyfile``) is set, on
every listener; the default context is ``ssl.create_default_context`` for
client authentication with ``ca_certs``, the certificate chain, ``cert_reqs``
and ``ciphers``; a config file's ``ssl_context(config,
default_ssl_context_factory)`` hook may change it or build another, and must
return an ``ssl.SSLContext``.  forkserve adds ``ssl_min_version`` (gunicorn 27
ignores ``ssl_version``) and turns off TLS 1.2 renegotiation, which only a
client could ask for, to make the server work.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

from .config import Config, ConfigError

__all__ = ["enabled", "server_context", "check", "MIN_VERSIONS", "QUIET_SSL_VERSIONS"]

#: ssl_min_version's values -> the ssl module's versions.
MIN_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

#: ssl_version values that ask for nothing more than gunicorn's default
#: (negotiate the highest version both sides have): no warning for them.
QUIET_SSL_VERSIONS = frozenset({2, "2", "TLS", "SSLv23", "TLS_SERVER", 17, "17"})


def enabled(cfg: Any) -> bool:
    """Whether the listeners speak TLS (gunicorn's ``is_ssl``)."""
    return bool(cfg.certfile or cfg.keyfile)


def _source(cfg: Config, name: str) -> str:
    return cfg.sources.get(name, "default")


def _readable(cfg: Config, name: str) -> str:
    """The path a file setting names, checked readable now (by whoever
    builds the context: the master, or a worker before dropping
    privileges)."""
    path = cfg.values[name]
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror}", _source(cfg, name)) \
            from None
    if b"-----BEGIN " not in text:
        raise ConfigError(name, f"{path} is not a PEM file", _source(cfg, name))
    return path


def _no_password() -> bytes:
    raise ValueError("encrypted")


def default_context(cfg: Config) -> ssl.SSLContext:
    """gunicorn 27's default context from the settings (see the module
    docstring); ConfigError naming the setting at fault."""
    if not cfg.certfile:
        raise ConfigError("keyfile", "a key needs its certificate: set certfile too",
                          _source(cfg, "keyfile"))
    certfile = _readable(cfg, "certfile")
    keyfile = _readable(cfg, "keyfile") if cfg.keyfile else None
    cafile = _readable(cfg, "ca_certs") if cfg.ca_certs else None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError("ca_certs", f"no CA certificate in {cafile}: {exc.reason or exc}",
                          _source(cfg, "ca_certs")) from None
    try:
        ctx.load_cert_chain(certfile, keyfile, password=_no_password)
    except ValueError:
        name = "keyfile" if keyfile else "certfile"
        raise ConfigError(name, f"the private key in {keyfile or certfile} is encrypted: give "
                          "an unencrypted one, or load it with its password in an "
                          "ssl_context hook", _source(cfg, name)) from None
    except ssl.SSLError as exc:
        raise _chain_error(cfg, certfile, keyfile, exc) from None
    ctx.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
    if cfg.ciphers:
        try:
            ctx.set_ciphers(cfg.ciphers)
        except ssl.SSLError:
            raise ConfigError("ciphers", f"no cipher matches {cfg.ciphers!r} (an OpenSSL "
                              "cipher list is expected)", _source(cfg, "ciphers")) from None
    ctx.minimum_version = MIN_VERSIONS[cfg.ssl_min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _chain_error(cfg: Config, certfile: str, keyfile: str | None,
                 exc: ssl.SSLError) -> ConfigError:
    """Which of certfile and keyfile is at fault, in words."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        name = "keyfile" if keyfile else "certfile"
        return ConfigError(name, f"the private key in {keyfile or certfile} does not match "
                           f"the certificate in {certfile}", _source(cfg, name))
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=certfile)
    except ssl.SSLError:
        return ConfigError("certfile", f"no certificate can be read from {certfile}",
                           _source(cfg, "certfile"))
    name = "keyfile" if keyfile else "certfile"
    where = keyfile or certfile
    return ConfigError(name, f"no private key can be read from {where} "
                       f"({exc.reason or exc})", _source(cfg, name))


def server_context(cfg: Config) -> ssl.SSLContext:
    """The context every connection of a worker is served with: the
    ``ssl_context`` hook's, or the default one."""
    hook: Callable[..., Any] | None = cfg.hooks.get("ssl_context")
    if hook is None:
        return default_context(cfg)
    try:
        ctx = hook(cfg, lambda: default_context(cfg))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("ssl_context", f"the hook raised {type(exc).__name__}: {exc}",
                          _source(cfg, "ssl_context")) from None
    if not isinstance(ctx, ssl.SSLContext):
        raise ConfigError("ssl_context", f"the hook must return an ssl.SSLContext, got "
                          f"{type(ctx).__name__}", _source(cfg, "ssl_context"))
    return ctx


def check(cfg: Config) -> list[str]:
    """Build the context once to check the settings (ConfigError if they
    are wrong); the warnings to log.  Nothing to do without TLS."""
    if not enabled(cfg):
        return []
    if cfg.worker_class == "gevent":
        raise ConfigError("certfile", "the gevent worker does not terminate TLS yet: use "
                          "-k sync (--threads N) or -k asgi, or a TLS proxy in front",
                          _source(cfg, "worker_class"))
    if cfg.proxy_protocol != "off":
        # The PROXY header comes before the handshake, in the clear; the
        # workers read it only from plain connections so far.
        raise ConfigError("proxy_protocol", "not read on TLS listeners yet: terminate TLS "
                          "in the proxy that sends the PROXY header, or drop certfile",
                          _source(cfg, "proxy_protocol"))
    server_context(cfg)
    warnings = []
    if cfg.ssl_version not in QUIET_SSL_VERSIONS:
        warnings.append(f"ssl_version = {cfg.ssl_version!r} is ignored, as gunicorn 27 "
                        f"ignores it: set ssl_min_version, or minimum_version in an "
                        f"ssl_context hook ({_source(cfg, 'ssl_version')})")
    return warnings

