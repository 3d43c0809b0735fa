"""Logging configured the way gunicorn configures it: ``logconfig`` (an ini
file for ``logging.config.fileConfig``), ``logconfig_dict`` and
``logconfig_json`` (``dictConfig``, over gunicorn's defaults), and syslog.

forkserve logs through its own loggers, ``forkserve.error`` and
``forkserve.access`` (:mod:`forkserve.logging`).  Real configs name
gunicorn's, ``gunicorn.error`` and ``gunicorn.access``, so those two are
forkserve's loggers under the other name:

- by default (no logconfig setting), ``gunicorn.error``/``gunicorn.access``
  get the very handlers and level of forkserve's loggers, so an app that
  logs to ``gunicorn.error``, or copies its handlers (a common Flask
  recipe), writes to the error log;
- with a logconfig setting, the ``gunicorn.*`` loggers are what the user's
  config makes of them, and forkserve's loggers hand every record to them
  (named ``gunicorn.error``/``gunicorn.access``, so ``%(name)s`` reads as
  under gunicorn).  A config that names ``forkserve.error`` or
  ``forkserve.access`` itself is left as it made them.

The default path writes lines of at most PIPE_BUF bytes, never blocking
(:mod:`forkserve.logging`).  Handlers a user's config creates are Python's
own: a ``StreamHandler`` on a pipe nobody reads, or a blocking socket, may
block the worker that logs.  Syslog over UDP or a unix datagram socket is
sent without blocking (a line the socket cannot take is lost); over TCP it
may block.
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import socket
from typing import Any

from .logging import _access_log, error_log, setup_logging

__all__ = ["LogConfigError", "configure_logging", "SYSLOG_FACILITIES", "parse_syslog_address",
           "CONFIG_DEFAULTS"]

#: forkserve's logger -> gunicorn's name for it.
GUNICORN_NAMES = {error_log: "gunicorn.error", _access_log: "gunicorn.access"}

#: syslog facilities by name, as gunicorn accepts them (``security`` is ``auth``).
SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "security": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}

#: What a ``logconfig_dict`` or ``logconfig_json`` is laid over, key by key
#: (a key the user gives replaces the default one whole), as gunicorn does:
#: both loggers at INFO through the root logger's stdout handler, the error
#: log on stderr as well.
CONFIG_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}


class LogConfigError(Exception):
    """A logging setting cannot be applied; one line naming it."""


def parse_syslog_address(addr: str) -> tuple[int | None, str | tuple[str, int]]:
    """``udp://host[:port]``, ``tcp://host[:port]`` (port 514 by default) or
    ``unix://path[#dgram|#stream]`` -> (socket type or None for "try
    datagram, then stream", address); ValueError if none of these."""
    if addr.startswith("unix://"):
        path, _, kind = addr[len("unix://"):].partition("#")
        if not path or kind not in ("", "dgram", "stream"):
            raise ValueError(f"expected unix://PATH[#dgram|#stream], got {addr!r}")
        types = {"": None, "dgram": socket.SOCK_DGRAM, "stream": socket.SOCK_STREAM}
        return types[kind], path
    for scheme, kind in (("udp://", socket.SOCK_DGRAM), ("tcp://", socket.SOCK_STREAM)):
        if addr.startswith(scheme):
            rest = addr[len(scheme):]
            if rest.startswith("["):
                host, _, port = rest[1:].partition("]")
                port = port[1:] if port.startswith(":") else port
            else:
                host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
            if not host or (port and not (port.isascii() and port.isdigit()
                                          and 0 < int(port, 10) < 65536)):
                raise ValueError(f"expected {scheme}HOST[:PORT], got {addr!r}")
            return kind, (host, int(port, 10) if port else 514)
    raise ValueError(f"expected udp://HOST:PORT, tcp://HOST:PORT or unix://PATH, got {addr!r}")


class _SyslogHandler(logging.handlers.SysLogHandler):
    """Python's SysLogHandler (RFC 3164 ``<PRI>tag: message``), with its
    datagram sockets non-blocking: a line the socket cannot take now is
    lost (counted in ``dropped``), never waited for."""

    dropped = 0

    def _nonblocking(self) -> None:
        sock = getattr(self, "socket", None)
        if sock is not None and sock.type == socket.SOCK_DGRAM:
            sock.setblocking(False)

    def createSocket(self) -> None:  # noqa: N802 - the stdlib's name
        super().createSocket()
        self._nonblocking()

    def _connect_unixsocket(self, address: Any) -> None:
        super()._connect_unixsocket(address)
        self._nonblocking()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        self.dropped += 1


def _syslog_handler(cfg: Any, which: str) -> logging.Handler:
    prefix = cfg.syslog_prefix or (cfg.proc_name or cfg.wsgi_app or "forkserve").replace(":", ".")
    kind, address = parse_syslog_address(cfg.syslog_addr)
    try:
        handler = _SyslogHandler(address=address, facility=SYSLOG_FACILITIES[cfg.syslog_facility],
                                 socktype=kind)
    except OSError as exc:
        raise LogConfigError(f"syslog_addr: cannot reach {cfg.syslog_addr}: "
                             f"{exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter(
        f"forkserve.{prefix}.{which}: [%(process)d] %(message)s"))
    return handler


class _Forward(logging.Handler):
    """Hands forkserve's records to the gunicorn logger a user's config
    made (its level, filters, handlers and propagation apply)."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock of our own: the target's handlers take theirs.
        if self.target.isEnabledFor(record.levelno):
            record.name = self.target.name
            self.target.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        self.handle(record)


def _user_config(cfg: Any) -> tuple[str, Any] | None:
    """Which logconfig setting applies (dict, then json, then ini, as in
    gunicorn) and its content, read and checked; None if none is set."""
    if cfg.logconfig_dict:
        return "logconfig_dict", {**CONFIG_DEFAULTS, **cfg.logconfig_dict}
    if cfg.logconfig_json:
        try:
            with open(cfg.logconfig_json, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise LogConfigError(f"logconfig_json: cannot read {cfg.logconfig_json}: "
                                 f"{exc.strerror}") from None
        except ValueError as exc:
            raise LogConfigError(f"logconfig_json: {cfg.logconfig_json} is not JSON: "
                                 f"{exc}") from None
        if not isinstance(data, dict):
            raise LogConfigError(f"logconfig_json: {cfg.logconfig_json} must hold an object")
        return "logconfig_json", {**CONFIG_DEFAULTS, **data}
    if cfg.logconfig:
        if not os.path.isfile(cfg.logconfig):
            raise LogConfigError(f"logconfig: no such file: {cfg.logconfig}")
        return "logconfig", cfg.logconfig
    return None


def configure_logging(cfg: Any) -> None:
    """(Re)configure the error and access logs from ``cfg``: forkserve's
    own files (``errorlog``, ``accesslog``), syslog, and a user's logging
    config.  LogConfigError (one line) if a setting cannot be applied;
    OSError if a log file cannot be opened."""
    user = _user_config(cfg)  # read first: a bad file changes nothing
    aliases = {logger: logging.getLogger(name) for logger, name in GUNICORN_NAMES.items()}
    placeholders = {logger: logging.NullHandler() for logger in aliases}
    if user is not None:
        # What gunicorn has before it applies the user's config: its two
        # loggers with their own handlers (stand-ins here, replaced below
        # if the config leaves them alone), the error log at loglevel.
        for logger, alias in aliases.items():
            alias.handlers = [placeholders[logger]]
            alias.setLevel(logging.INFO if logger is _access_log else _level(cfg.loglevel))
            alias.propagate = False
            alias.disabled = False
        kind, content = user
        try:
            if kind == "logconfig":
                defaults = {"__file__": cfg.logconfig, "here": os.path.dirname(cfg.logconfig)}
                logging.config.fileConfig(cfg.logconfig, defaults=defaults,
                                          disable_existing_loggers=False)
            else:
                logging.config.dictConfig(content)
        except Exception as exc:
            # Back to the default path: a log that says why beats none.
            configure_logging(_Without(cfg))
            raise LogConfigError(f"{kind}: {type(exc).__name__}: {exc}".replace("\n", " ")) \
                from None
    setup_logging(cfg.errorlog, cfg.loglevel, cfg.accesslog, cfg.log_format)
    syslog_access = cfg.syslog and not cfg.disable_redirect_access_to_syslog
    if cfg.syslog:
        error_log.addHandler(_syslog_handler(cfg, "error"))
        if syslog_access:
            _access_log.addHandler(_syslog_handler(cfg, "access"))
            _access_log.setLevel(logging.INFO)
    for logger, alias in aliases.items():
        mine = list(logger.handlers)
        if user is None:
            # gunicorn's name is forkserve's logger under another name.
            for old in alias.handlers:
                if old not in mine:
                    old.close()
            alias.handlers = mine
            alias.setLevel(logger.level)
            alias.propagate = False
            alias.disabled = False
            continue
        if alias.handlers == [placeholders[logger]]:
            alias.handlers = mine   # the config left it alone: forkserve's files
        else:
            for handler in mine:
                handler.close()
        # forkserve's logger hands its records to the configured one.
        logger.handlers = [_Forward(alias)]
        logger.setLevel(alias.getEffectiveLevel())
        logger.disabled = False


def _level(name: str) -> int:
    return logging.getLevelName(name.upper())


class _Without:
    """``cfg`` without its logconfig settings."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        if name in ("logconfig", "logconfig_dict", "logconfig_json"):
            return None
        return getattr(self._cfg, name)
