"""Settings: one table, read by the CLI, the config file loader,
``--print-config`` and the README's settings table.

Each setting has one definition (name, section, flags, validator, default,
doc, how it differs from gunicorn's).  Values come from, lowest precedence
first: the defaults (``WEB_CONCURRENCY``, ``PORT`` and ``FORWARDED_ALLOW_IPS``
set some, as in gunicorn), the config file, ``GUNICORN_CMD_ARGS``,
``FORKSERVE_CMD_ARGS``, the command line.  Every value, whatever its source,
goes through the same validator, and a bad one is reported in one line
naming the setting and where it came from.

gunicorn's settings that forkserve does not implement are known too
(:mod:`forkserve.gunicorn_compat`): they are accepted with a warning saying
why they change nothing here, or refused with a line saying what to use.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .gunicorn_compat import FOREIGN, GUNICORN_NAMES, HOOK_NOTES, Foreign, Outcome
from .sockets import parse_address
from .statsd import check_prefix as check_statsd_prefix
from .statsd import check_tags as check_statsd_tags
from .statsd import parse_address as parse_statsd_address
from .uvicorn_compat import SUPPORTED, is_class_path
from .workers import registry as worker_registry

__all__ = ["ConfigError", "Setting", "SETTINGS", "HOOKS", "Config", "load_config_file",
           "near_miss", "settings_markdown", "gunicorn_markdown"]


class ConfigError(Exception):
    """A setting has a bad value; the message is one line for the user."""

    def __init__(self, name: str, message: str, source: str) -> None:
        super().__init__(f"{name}: {message} ({source})")
        self.name = name
        self.source = source


# --- validators: raw value (Python object from a config file, or a string
# from the command line) -> value; raise ValueError with what was expected ---

def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def integer(minimum: int = 0, below: str = "", zero_is: int | None = None
            ) -> Callable[[Any], int]:
    """An integer >= ``minimum``; ``below`` says why a smaller one is
    refused and what to use; ``zero_is`` is what 0 stands for, if anything."""
    def check(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"expected an integer >= {minimum}, got {v!r}")
        if _is_str(v) and re.fullmatch(r"[+-]?[0-9]{1,18}", v.strip()):
            v = int(v.strip(), 10)
        if isinstance(v, int) and v == 0 and zero_is is not None:
            return zero_is
        if not isinstance(v, int) or v < minimum:
            hint = f" ({below})" if below and isinstance(v, int) else ""
            raise ValueError(f"expected an integer >= {minimum}, got {v!r}{hint}")
        return v
    check.__doc__ = f"int >= {minimum}"
    return check


def seconds(v: Any) -> float:
    """Non-negative number of seconds."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number of seconds, got {v!r}")
    if _is_str(v) and re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", v.strip()):
        v = float(v.strip())
    if not isinstance(v, (int, float)) or v < 0 or v != v:
        raise ValueError(f"expected a number of seconds >= 0, got {v!r}")
    return float(v)


def optional_integer(minimum: int) -> Callable[[Any], int | None]:
    check_int = integer(minimum)

    def check(v: Any) -> int | None:
        if v is None or (_is_str(v) and v.strip().lower() in ("", "none")):
            return None
        return check_int(v)
    return check


def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if _is_str(v):
        s = v.strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {v!r}")


def string(v: Any) -> str:
    if not _is_str(v):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def optional_string(v: Any) -> str | None:
    if v is None:
        return None
    return string(v)


def choice(*options: str, aliases: dict[str, str] | None = None) -> Callable[[Any], str]:
    aliases = aliases or {}

    def check(v: Any) -> str:
        if _is_str(v):
            if v in options:
                return v
            if v in aliases:
                return aliases[v]
        raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
    return check


def lifespan_mode(v: Any) -> str:
    """auto, on or off, in any case; None is auto (gunicorn 27's
    asgi_lifespan takes both)."""
    if v is None:
        return "auto"
    if _is_str(v) and v.strip().lower() in ("auto", "on", "off"):
        return v.strip().lower()
    raise ValueError(f"expected one of auto, on, off, got {v!r}")


_NO_SUCH_WORKER = {
    "eventlet": "gunicorn 27 dropped eventlet too: serve blocking I/O with -k sync "
                "--threads N, or an async app with -k asgi",
    "tornado": "forkserve has no tornado worker: serve a tornado app with its own server, "
               "or an ASGI app with -k asgi",
}


_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def cert_reqs(v: Any) -> int:
    """ssl.CERT_NONE (0), CERT_OPTIONAL (1) or CERT_REQUIRED (2)."""
    value = integer(0)(v)
    if value > 2:
        raise ValueError(f"expected 0 (none), 1 (optional) or 2 (required), got {v!r}")
    return value


def ssl_version(v: Any) -> int | str:
    """gunicorn's ssl_version: a protocol number or name, kept only to say
    that it is ignored (gunicorn 27 ignores it too)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    if _is_str(v) and v.strip():
        return v.strip()
    raise ValueError(f"expected an ssl protocol number or name, got {v!r}")


def worker_class_name(v: Any) -> str:
    """auto, sync, asgi or gevent; gunicorn's and uvicorn's names for them
    too (the worker registry's aliases); or a dotted path to a class, which
    :func:`forkserve.uvicorn_compat.apply_worker_subclass` resolves once
    every setting is in (a subclass of uvicorn's worker).  A kind whose
    optional package is missing (gevent) is refused with how to install it."""
    kind = None
    if _is_str(v) and (v == worker_registry.AUTO or v in worker_registry.KINDS):
        kind = v
    elif _is_str(v) and v in worker_registry.ALIASES:
        kind = worker_registry.ALIASES[v]
    if kind is not None:
        missing = worker_registry.missing_extra(kind)
        if missing:
            raise ValueError(missing)
        return kind
    if _is_str(v):
        key = v.lower()
        for name, why in _NO_SUCH_WORKER.items():
            if name in key:
                raise ValueError(f"{v!r} is not available: {why}")
        if is_class_path(v):
            return v
        names = [worker_registry.AUTO, *worker_registry.KINDS, "gthread"]
        close = near_miss(v, names) if len(v) >= 4 else []
        if close:
            raise ValueError(f"{v!r} is not a worker class; did you mean {close[0]!r}?")
    raise ValueError(f"{SUPPORTED}, got {v!r}")


def files_or_patterns(v: Any) -> list[str]:
    """Existing files, or glob patterns (``*``, ``?``, ``[``; re-expanded
    on each scan, so they may match nothing yet), as gunicorn takes them:
    relative to the directory forkserve starts in, not to chdir."""
    items = string_list(v)
    for item in items:
        if not any(c in item for c in "*?[") and not os.path.isfile(item):
            raise ValueError(f"no such file: {item!r}")
    return [os.path.abspath(item) for item in items]


def dictionary(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"expected a dict, got {v!r}")
    return v


def syslog_address(v: Any) -> str:
    """udp://HOST[:PORT], tcp://HOST[:PORT] or unix://PATH[#dgram|#stream]."""
    from .logconfig import parse_syslog_address

    parse_syslog_address(string(v))
    return v


def syslog_facility(v: Any) -> str:
    from .logconfig import SYSLOG_FACILITIES

    if _is_str(v) and v.strip().lower() in SYSLOG_FACILITIES:
        return v.strip().lower()
    raise ValueError(f"expected a syslog facility ({', '.join(SYSLOG_FACILITIES)}), got {v!r}")


def string_list(v: Any) -> list[str]:
    """A list of strings; a single string is split on commas."""
    if _is_str(v):
        return [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, (list, tuple)) and all(_is_str(s) for s in v):
        return list(v)
    raise ValueError(f"expected a list of strings, got {v!r}")


def addresses(v: Any) -> list[str]:
    """Listen addresses: host:port, [v6]:port, unix:/path or fd://N."""
    if _is_str(v):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(_is_str(s) for s in v):
        raise ValueError(f"expected an address or a list of addresses, got {v!r}")
    for addr in v:
        parse_address(addr)  # raises ValueError naming the address
    return list(v)


def optional_address(v: Any) -> str | None:
    """One listen address (host:port or unix:PATH), or None: off."""
    if v is None or (_is_str(v) and not v.strip()):
        return None
    if not _is_str(v):
        raise ValueError(f"expected an address, got {v!r}")
    if parse_address(v).kind == "fd":
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {v!r}")
    return v


def umask(v: Any) -> int:
    if _is_str(v) and re.fullmatch(r"0[oO]?[0-7]{1,4}|[0-9]{1,4}", v.strip()):
        s = v.strip()
        v = int(s.replace("o", "").replace("O", ""), 8) if s.startswith("0") else int(s, 10)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o777:
        raise ValueError(f"expected a umask between 0 and 0o777, got {v!r}")
    return v


def user_or_group(v: Any) -> int | str | None:
    if v is None or isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if _is_str(v) and v:
        return int(v) if v.isdigit() and v.isascii() else v
    raise ValueError(f"expected a name or a numeric id, got {v!r}")


def env_list(v: Any) -> list[str]:
    items = string_list(v) if _is_str(v) else v
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected KEY=VALUE strings, got {v!r}")
    for item in items:
        if not _is_str(item) or "=" not in item or item.startswith("="):
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
    return list(items)


def statsd_address(v: Any) -> str | None:
    """``statsd_host``: None, HOST:PORT, [IPV6]:PORT, HOST or unix:PATH."""
    if v is None or (_is_str(v) and not v.strip()):
        return None
    parse_statsd_address(string(v).strip())  # raises ValueError saying what is expected
    return v.strip()


def statsd_text(check: Callable[[str], str]) -> Callable[[Any], str]:
    """A statsd prefix or tag list: a string that keeps the datagram's form."""
    def validate(v: Any) -> str:
        return check("" if v is None else string(v))
    return validate


_LOG_LEVEL_ALIASES = {"warn": "warning", "fatal": "critical"}  # as Python's logging has them


def log_level(v: Any) -> str:
    if _is_str(v):
        level = v.strip().lower()
        level = _LOG_LEVEL_ALIASES.get(level, level)
        if level in ("debug", "info", "warning", "error", "critical"):
            return level
    raise ValueError(f"expected debug, info, warning, error or critical, got {v!r}")


def log_target(v: Any) -> str:
    """A log file, or ``-``; None (``errorlog = os.getenv(...) or None``) is ``-``."""
    return "-" if v is None else string(v)


def forwarded_ips(v: Any) -> list[str]:
    import ipaddress

    items = string_list(v)
    for item in items:
        if item in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses or CIDR ranges, '*' or 'unix', got {item!r}") from None
    return items


def scheme_headers(v: Any) -> dict[str, str]:
    """gunicorn's secure_scheme_headers: header name -> the value that means
    https.  Values match exactly; names must be upper case, as gunicorn
    compares them with the upper-cased request header (a name in another
    case never matches there, nor here)."""
    if not isinstance(v, dict) or not all(_is_str(k) and _is_str(x) for k, x in v.items()):
        raise ValueError(f"expected a dict of header names to values, got {v!r}")
    out: dict[str, str] = {}
    for name, value in v.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}", name):
            raise ValueError(f"expected header names, got {name!r}")
        out[name] = value
    return out


def header_names(v: Any) -> list[str]:
    """Header field names, upper case (gunicorn's forwarder_headers)."""
    items = string_list(v)
    for name in items:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}", name):
            raise ValueError(f"expected header names, got {name!r}")
    return [name.upper() for name in items]


_PROXY_PROTOCOL = {"false": "off", "off": "off", "0": "off", "none": "off",
                   "true": "auto", "auto": "auto", "1": "auto", "v1": "v1", "v2": "v2"}


def proxy_protocol_mode(v: Any) -> str:
    """off, v1, v2 or auto; gunicorn's spellings of them too (True: auto)."""
    if v is None:
        return "off"
    if isinstance(v, bool):
        return "auto" if v else "off"
    if _is_str(v) and v.strip().lower() in _PROXY_PROTOCOL:
        return _PROXY_PROTOCOL[v.strip().lower()]
    raise ValueError(f"expected off, v1, v2 or auto, got {v!r}")


@dataclass(frozen=True)
class Setting:
    """One setting: its single definition."""

    name: str
    section: str
    validator: Callable[[Any], Any]
    default: Any
    doc: str
    flags: tuple[str, ...] = ()
    metavar: str = "VALUE"
    multiple: bool = False   # the flag may be repeated (-b A -b B)
    is_flag: bool = False    # a boolean switch with no argument
    cli_only: bool = False   # an action of the command line, not a setting
    # None: forkserve's own; "": gunicorn's, with its meaning; else how it differs.
    gunicorn: str | None = None
    aliases: tuple[str, ...] = ()  # gunicorn's other names for it (config files)
    optional_value: Any = None     # the flag's value when given without one

    @property
    def flag(self) -> str:
        return self.flags[-1] if self.flags else ""


_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
#: The request reader's hard bound on a request head; no setting lifts it.
HEAD_CAP = 65536

SETTINGS: tuple[Setting, ...] = (
    # -- config
    Setting("config", "config", optional_string, None,
            "Python config file: PATH, file:PATH or python:MODULE. Without it, "
            "./forkserve.conf.py is read if it exists, else ./gunicorn.conf.py.",
            ("-c", "--config"), "FILE",
            gunicorn="also reads ./gunicorn.conf.py, after ./forkserve.conf.py"),
    Setting("wsgi_app", "config", optional_string, None,
            "The application, module:callable or module:factory(); the APP argument sets it.",
            (), "APP", gunicorn=""),
    Setting("check_config", "config", boolean, False,
            "Check the configuration and that the app loads, then exit.",
            ("--check-config",), is_flag=True, cli_only=True, gunicorn=""),
    Setting("print_config", "config", boolean, False,
            "Print the effective settings as a config file, then exit.",
            ("--print-config",), is_flag=True, cli_only=True,
            gunicorn="prints a loadable config file, with the ignored names and gunicorn "
                     "settings that have no effect as comments"),
    # -- server socket
    Setting("bind", "socket", addresses, ["127.0.0.1:8000"],
            "Address to listen on: HOST:PORT, :PORT (all IPv4 interfaces), [IPV6]:PORT, "
            "HOST (port 8000), unix:PATH or fd://N. Repeat for several. Default: "
            "0.0.0.0:$PORT if PORT is set.",
            ("-b", "--bind"), "ADDRESS", multiple=True, gunicorn=""),
    Setting("backlog", "socket", integer(0), 2048,
            "Pending connections the kernel queues per listening socket (0: the kernel's "
            "smallest queue).",
            ("--backlog",), "INT", gunicorn=""),
    Setting("reuse_port", "socket", boolean, False,
            "Set SO_REUSEPORT on the listening sockets.",
            ("--reuse-port",), is_flag=True, gunicorn=""),
    Setting("metrics_bind", "socket", optional_address, None,
            "Address of the master's control listener, HOST:PORT or unix:PATH (off by "
            "default): /metrics (Prometheus, OpenMetrics), /livez, /readyz.",
            ("--metrics-bind",), "ADDRESS"),
    Setting("umask", "socket", umask, 0,
            "umask of the master and workers; also governs unix socket file modes.",
            ("-m", "--umask"), "INT", gunicorn=""),
    # -- workers
    Setting("workers", "workers",
            integer(1, "0 workers would serve nothing: give 1 or more"), 1,
            "Number of worker processes. Default: WEB_CONCURRENCY if set, else 1.",
            ("-w", "--workers"), "INT",
            gunicorn="0 is refused (gunicorn starts no worker)"),
    Setting("worker_class", "workers", worker_class_name, worker_registry.AUTO,
            "sync (WSGI), asgi (ASGI on uvloop), gevent (WSGI on gevent, needs "
            "forkserve[gevent]) or auto (detected from the app). gunicorn's gthread and "
            "uvicorn's UvicornWorker and UvicornH11Worker are accepted, and a dotted path to a "
            "project's subclass of UvicornWorker (its CONFIG_KWARGS apply).",
            ("-k", "--worker-class"), "CLASS",
            gunicorn="default auto (gunicorn: sync); gthread is sync with threads; uvicorn's "
                     "workers and subclasses of them are asgi; gevent needs forkserve[gevent]; "
                     "eventlet, tornado and other classes are refused"),
    Setting("threads", "workers", integer(1, zero_is=1), 1,
            "Threads per sync worker that run the WSGI app; connections wait in an event "
            "loop (0 counts as 1).",
            ("--threads",), "INT", gunicorn=""),
    Setting("worker_connections", "workers",
            integer(1, "0 would accept no connection: give 1 or more"), 1000,
            "Most open client connections per worker.",
            ("--worker-connections",), "INT",
            gunicorn="also bounds sync workers; 0 is refused"),
    Setting("max_requests", "workers", integer(0), 0,
            "Restart a worker gracefully after this many requests (0: never).",
            ("--max-requests",), "INT", gunicorn=""),
    Setting("max_requests_jitter", "workers", integer(0), 0,
            "Add a random 0..N to max_requests per worker, so workers do not restart together.",
            ("--max-requests-jitter",), "INT", gunicorn=""),
    Setting("max_worker_memory", "workers", integer(0), 0,
            "Recycle a worker gracefully once its RSS exceeds this many MiB (0: never).",
            ("--max-worker-memory",), "MIB"),
    Setting("max_worker_memory_jitter", "workers", integer(0), 0,
            "Add a random 0..N MiB to max_worker_memory per worker.",
            ("--max-worker-memory-jitter",), "MIB"),
    Setting("max_worker_lifetime", "workers", seconds, 0.0,
            "Recycle a worker gracefully after this many seconds (0: never).",
            ("--max-worker-lifetime",), "SECONDS"),
    Setting("max_worker_lifetime_jitter", "workers", seconds, 0.0,
            "Add a random 0..N seconds to max_worker_lifetime per worker.",
            ("--max-worker-lifetime-jitter",), "SECONDS"),
    Setting("timeout", "workers", seconds, 30.0,
            "A worker that shows no progress for this many seconds is killed and replaced (0: never).",
            ("-t", "--timeout"), "SECONDS", gunicorn=""),
    Setting("graceful_timeout", "workers", seconds, 30.0,
            "On TERM or HUP, how long workers may finish in-flight requests before they are "
            "killed (0: at once).",
            ("--graceful-timeout",), "SECONDS", gunicorn=""),
    Setting("drain_delay", "workers", seconds, 0.0,
            "On TERM, how long /readyz answers 503 while the server still serves normally, "
            "before it stops accepting and drains (0: stop at once). Lets a load balancer "
            "route away first.",
            ("--drain-delay",), "SECONDS"),
    Setting("keepalive", "workers", seconds, 5.0,
            "Seconds an idle keep-alive connection is kept open (0: no keep-alive).",
            ("--keep-alive",), "SECONDS",
            gunicorn="default 5 (gunicorn: 2); the sync worker keeps connections alive "
                     "(gunicorn's closes each one)"),
    Setting("lifespan", "workers", lifespan_mode, "auto",
            "ASGI lifespan protocol: auto (use it if the app supports it), on, off.",
            ("--lifespan", "--asgi-lifespan"), "MODE", aliases=("asgi_lifespan",)),
    Setting("ws_max_size", "workers",
            integer(1, "a WebSocket message is always bounded here: give the largest "
                       "size in bytes"), 16 * 1024 * 1024,
            "Largest incoming WebSocket message in bytes (closed with 1009 beyond it).",
            ("--ws-max-size", "--websocket-max-message-size"), "BYTES",
            aliases=("websocket_max_message_size",),
            gunicorn="0 is refused (gunicorn: no limit)"),
    Setting("ws_ping_interval", "workers", seconds, 20.0,
            "Seconds between WebSocket pings from the server (0: no pings).",
            ("--ws-ping-interval",), "SECONDS"),
    Setting("ws_ping_timeout", "workers", seconds, 20.0,
            "Seconds to wait for a pong before closing the WebSocket with 1011.",
            ("--ws-ping-timeout",), "SECONDS"),
    Setting("limit_concurrency", "workers", integer(0), 0,
            "ASGI: most requests in progress per worker; 503 beyond it (0: no limit).",
            ("--limit-concurrency",), "INT"),
    Setting("root_path", "workers", string, "",
            "Mount point of the app behind a proxy: ASGI root_path and WSGI SCRIPT_NAME.",
            ("--root-path",), "PATH", gunicorn=""),
    # -- security
    Setting("limit_request_line", "security", integer(0), 4094,
            f"Longest request line in bytes (414 beyond it). 0 is not unlimited: it means "
            f"the {HEAD_CAP}-byte request head cap, a bound forkserve always keeps.",
            ("--limit-request-line",), "INT",
            gunicorn=f"0 is the {HEAD_CAP}-byte head cap (gunicorn: unlimited); values above "
                     f"8190 are honoured (gunicorn lowers them to 8190)"),
    Setting("limit_request_fields", "security", integer(0), 100,
            "Most header fields in a request (431 beyond it; 0: 32768, within the head cap).",
            ("--limit-request-fields",), "INT", gunicorn=""),
    Setting("limit_request_field_size", "security", integer(0), 8190,
            f"Largest header field in bytes (431 beyond it). 0 is not unlimited: it means "
            f"the {HEAD_CAP}-byte request head cap.",
            ("--limit-request-field_size", "--limit-request-field-size"), "INT",
            gunicorn=f"0 is the {HEAD_CAP}-byte head cap (gunicorn documents 0 as unlimited)"),
    Setting("limit_request_body", "security", optional_integer(0), None,
            "Largest request body in bytes (413 beyond it; unset: no limit).",
            ("--limit-request-body",), "INT"),
    Setting("header_timeout", "security", seconds, 10.0,
            "Seconds a client has to send a whole request head, from its first byte.",
            ("--header-timeout",), "SECONDS"),
    Setting("body_timeout", "security", seconds, 30.0,
            "Seconds a client may pause while sending a request body.",
            ("--body-timeout",), "SECONDS"),
    Setting("write_timeout", "security", seconds, 30.0,
            "Seconds a client may go without reading while a response is written to it.",
            ("--write-timeout",), "SECONDS"),
    Setting("forwarded_allow_ips", "security", forwarded_ips, ["127.0.0.1", "::1", "unix"],
            "Peers whose X-Forwarded-* and Forwarded headers are trusted: IPs, CIDR ranges, "
            "'unix' for unix sockets, or '*'. Default: FORWARDED_ALLOW_IPS if set.",
            ("--forwarded-allow-ips",), "LIST",
            gunicorn="a unix socket peer is trusted only if 'unix' is listed (gunicorn: always)"),
    Setting("secure_scheme_headers", "security", scheme_headers,
            {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
             "X-FORWARDED-SSL": "on"},
            "Headers a trusted proxy (forwarded_allow_ips) sets to say the client used "
            "https: upper-case header name -> exact value. Such a header with another value "
            "means http; two that disagree get 400.", (), "DICT",
            gunicorn="RFC 7239 Forwarded: proto= is read too, when none of these is sent"),
    Setting("forwarder_headers", "security", header_names, ["SCRIPT_NAME", "PATH_INFO"],
            "Header names with '_' a trusted proxy may send to a WSGI app (HTTP_<NAME>); "
            "a SCRIPT_NAME header sets SCRIPT_NAME. Other names with '_' are dropped.",
            ("--forwarder-headers",), "LIST",
            gunicorn="a path outside the SCRIPT_NAME header is passed whole (gunicorn: 500)"),
    Setting("proxy_protocol", "security", proxy_protocol_mode, "off",
            "Read a PROXY protocol header (HAProxy; v1, v2 or auto) at the start of a "
            "connection from proxy_allow_ips; it gives the client address. A connection "
            "without one is served as is.",
            ("--proxy-protocol",), "MODE", optional_value="auto",
            gunicorn="as in gunicorn (400 for a malformed header, 403 from an untrusted "
                     "sender); v1 UNKNOWN and v2 UNIX keep the peer's address (gunicorn's "
                     "WSGI worker: 400); no PROXY_ADDR/PROXY_PORT in the environ"),
    Setting("proxy_allow_ips", "security", forwarded_ips, ["127.0.0.1", "::1", "unix"],
            "Peers that may send a PROXY protocol header: IPs, CIDR ranges, 'unix' for unix "
            "sockets, or '*'.",
            ("--proxy-allow-from",), "LIST",
            gunicorn="a unix socket peer is trusted only if 'unix' is listed (gunicorn: always)"),
    # -- TLS
    Setting("certfile", "tls", optional_string, None,
            "TLS certificate file (PEM, the chain after the certificate); setting it makes "
            "every listener speak TLS (https, wss). Read again by each new worker (HUP).",
            ("--certfile",), "FILE", gunicorn=""),
    Setting("keyfile", "tls", optional_string, None,
            "TLS private key file (PEM, unencrypted); unset: the key is in certfile.",
            ("--keyfile",), "FILE", gunicorn="refused at start without certfile"),
    Setting("ca_certs", "tls", optional_string, None,
            "CA certificates (PEM) that client certificates are checked against (cert_reqs).",
            ("--ca-certs",), "FILE", gunicorn=""),
    Setting("cert_reqs", "tls", cert_reqs, 0,
            "Client certificates: 0 not asked for, 1 checked if sent, 2 required.",
            ("--cert-reqs",), "INT", gunicorn=""),
    Setting("ciphers", "tls", optional_string, None,
            "TLS 1.2 cipher suites, as an OpenSSL cipher list (unset: Python's defaults).",
            ("--ciphers",), "LIST", gunicorn=""),
    Setting("ssl_min_version", "tls",
            choice(*_TLS_VERSIONS, aliases={"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3",
                                            "1.2": "TLSv1.2", "1.3": "TLSv1.3"}),
            "TLSv1.2",
            "Oldest TLS version accepted: TLSv1.2 or TLSv1.3.",
            ("--ssl-min-version",), "VERSION"),
    Setting("ssl_version", "tls", ssl_version, 2,
            "Ignored, as gunicorn 27 ignores it (a warning says so unless it is the "
            "default): use ssl_min_version.",
            ("--ssl-version",), "VERSION",
            gunicorn="ignored with a warning, as in gunicorn 27 (deprecated there); "
                     "ssl_min_version sets the oldest version"),
    Setting("do_handshake_on_connect", "tls", boolean, False,
            "Accepted for gunicorn's configs; either way a worker's event loop does the "
            "handshake as soon as a connection is accepted, within header_timeout.",
            ("--do-handshake-on-connect",), is_flag=True,
            gunicorn="changes nothing: the handshake never blocks a worker (gunicorn: "
                     "True does it in the accepting thread)"),
    Setting("suppress_ragged_eofs", "tls", boolean, True,
            "A client that closes without a TLS close_notify is taken as having closed "
            "(false: as an error, in the sync worker; the ASGI worker always closes).",
            ("--suppress-ragged-eofs",), is_flag=True, gunicorn=""),
    # -- server mechanics
    Setting("preload_app", "server", boolean, False,
            "Import the app in the master before forking (shares memory; HUP then reloads it in the master).",
            ("--preload",), is_flag=True, gunicorn=""),
    Setting("reload", "server", boolean, False,
            "Watch the app's .py files (and reload_extra_files) and roll the workers as a "
            "HUP does when one changes; an edit that breaks the import leaves the old "
            "workers serving. For development.",
            ("--reload",), is_flag=True,
            gunicorn="the master watches and rolls the workers gracefully, with preload_app "
                     "too; a broken edit keeps the old workers (gunicorn: each worker watches "
                     "and exits, a broken edit serves its traceback)"),
    Setting("reload_engine", "server", choice("auto", "poll", "inotify"), "auto",
            "auto: watchfiles when installed (pip install 'forkserve[reload]'), else "
            "polling modification times each second; poll; inotify (watchfiles).",
            ("--reload-engine",), "ENGINE",
            gunicorn="inotify and auto use the watchfiles package (gunicorn: inotify); "
                     "inotify without it polls, with a warning"),
    Setting("reload_extra_files", "server", files_or_patterns, [],
            "More files reload watches (templates, config): paths, or glob patterns "
            "re-expanded on each scan; repeat the flag for several.",
            ("--reload-extra-file",), "FILE", multiple=True, gunicorn=""),
    Setting("chdir", "server", optional_string, None,
            "Change to this directory before loading the app.",
            ("--chdir",), "DIR", gunicorn=""),
    Setting("pythonpath", "server", string_list, [],
            "Directories to prepend to sys.path, comma separated.",
            ("--pythonpath",), "DIRS", gunicorn=""),
    Setting("raw_env", "server", env_list, [],
            "Environment variables to set, KEY=VALUE; repeat for several.",
            ("-e", "--env"), "KEY=VALUE", multiple=True, gunicorn=""),
    Setting("pidfile", "server", optional_string, None,
            "Write the master's PID to this file.",
            ("-p", "--pid"), "FILE", gunicorn=""),
    Setting("user", "server", user_or_group, None,
            "Switch worker processes to this user (name or uid).",
            ("-u", "--user"), "USER", gunicorn=""),
    Setting("group", "server", user_or_group, None,
            "Switch worker processes to this group (name or gid).",
            ("-g", "--group"), "GROUP", gunicorn=""),
    Setting("proc_name", "server", optional_string, None,
            "Name in process titles (default: the app).",
            ("-n", "--name"), "NAME", gunicorn=""),
    Setting("daemon", "server", boolean, False,
            "Detach from the terminal and run in the background (prefer a supervisor: "
            "systemd, a container runtime).",
            ("-D", "--daemon"), is_flag=True, gunicorn=""),
    # -- logging
    Setting("accesslog", "logging", optional_string, None,
            "Access log file, or - for stdout (default: no access log).",
            ("--access-logfile",), "FILE", gunicorn=""),
    Setting("access_log_format", "logging", string, _ACCESS_LOG_FORMAT,
            "Access log line, with gunicorn's atoms: h l u t r m U q H s b B f a T D M L p {header}i {header}o.",
            ("--access-logformat",), "FORMAT", gunicorn=""),
    Setting("log_format", "logging", choice("text", "json"), "text",
            "text: gunicorn's lines (access_log_format). json: one JSON object a line, in "
            "the access log (time, remote_addr, user, method, path, query, protocol, status, "
            "bytes, referer, user_agent, duration_us, duration, pid, and the {name}i, "
            "{name}o, {name}e that access_log_format names) and in the error log (time, "
            "level, pid, logger, message, exception).",
            ("--log-format",), "FORMAT"),
    Setting("errorlog", "logging", log_target, "-",
            "Error log file, or - (or None) for stderr.",
            ("--error-logfile", "--log-file"), "FILE",
            gunicorn="None is stderr, every level (gunicorn: stderr, warnings and errors only)"),
    Setting("loglevel", "logging", log_level, "info",
            "Error log level: debug, info, warning (or warn), error, critical (or fatal).",
            ("--log-level",), "LEVEL",
            gunicorn="another value is refused (gunicorn logs at info instead)"),
    Setting("logconfig_dict", "logging", dictionary, {},
            "A logging.config.dictConfig dict laid over gunicorn's defaults (key by key), "
            "its loggers gunicorn.error and gunicorn.access (forkserve's error and access "
            "logs hand their records to them). Handlers it makes may block.",
            gunicorn=""),
    Setting("logconfig_json", "logging", optional_string, None,
            "A JSON file holding such a dict (used when logconfig_dict is not set).",
            ("--log-config-json",), "FILE",
            gunicorn="a missing file is refused (gunicorn: ignored)"),
    Setting("logconfig", "logging", optional_string, None,
            "A logging.config.fileConfig ini file (used when neither of the above is set).",
            ("--log-config",), "FILE", gunicorn=""),
    Setting("syslog", "logging", boolean, False,
            "Send the error log, and the access log unless "
            "disable_redirect_access_to_syslog, to syslog at syslog_addr as well.",
            ("--log-syslog",), is_flag=True,
            gunicorn="the tag starts 'forkserve.' (gunicorn: 'gunicorn.'); datagrams are "
                     "sent without blocking"),
    Setting("syslog_addr", "logging", syslog_address, "udp://localhost:514",
            "Where syslog goes: udp://HOST[:PORT], tcp://HOST[:PORT], "
            "unix://PATH[#dgram|#stream] (/dev/log for the local daemon).",
            ("--log-syslog-to",), "ADDRESS", gunicorn=""),
    Setting("syslog_prefix", "logging", optional_string, None,
            "The syslog tag's middle part: forkserve.PREFIX.error (default: proc_name or "
            "the app).",
            ("--log-syslog-prefix",), "PREFIX", gunicorn=""),
    Setting("syslog_facility", "logging", syslog_facility, "user",
            "syslog facility: user, daemon, local0 ... local7, ...",
            ("--log-syslog-facility",), "FACILITY", gunicorn=""),
    Setting("disable_redirect_access_to_syslog", "logging", boolean, False,
            "With syslog: keep the access log out of it.",
            ("--disable-redirect-access-to-syslog",), is_flag=True, gunicorn=""),
    Setting("capture_output", "logging", boolean, False,
            "Send the stdout and stderr of the master and workers (print(), what C "
            "libraries write) to the errorlog file; nothing changes when errorlog is '-'.",
            ("--capture-output",), is_flag=True, gunicorn=""),
    Setting("statsd_host", "logging", statsd_address, None,
            "Send statsd metrics (gunicorn's names: gunicorn.requests, "
            "gunicorn.request.duration, ...) to HOST:PORT (UDP; port 8125 if left out) or "
            "unix:PATH (a unix datagram socket). Unset: no metrics.",
            ("--statsd-host",), "ADDRESS",
            gunicorn="several metrics of a request go in one datagram, one per line"),
    Setting("statsd_prefix", "logging", statsd_text(check_statsd_prefix), "",
            "Prefix for every statsd metric name (a trailing '.' is added).",
            ("--statsd-prefix",), "PREFIX",
            gunicorn="a one-letter prefix gets its '.' too (gunicorn: not); ':', '|', '@', "
                     "'#' and spaces are refused"),
    Setting("dogstatsd_tags", "logging", statsd_text(check_statsd_tags), "",
            "dogstatsd tags added to every statsd metric: name:value,name2:value2.",
            ("--dogstatsd-tags",), "TAGS",
            gunicorn="'|', '@', '#', spaces and non-ASCII are refused (gunicorn sends them, "
                     "or fails on each send)"),
    Setting("enable_backlog_metric", "logging", boolean, False,
            "With statsd_host: send gunicorn.backlog, the connections waiting in the "
            "listen queues (Linux).",
            ("--enable-backlog-metric",), is_flag=True, gunicorn=""),
    Setting("enable_stdio_inheritance", "logging", boolean, False,
            "With daemon: keep stdout and stderr where they point unless they are a "
            "terminal (else they go to /dev/null).",
            ("-R", "--enable-stdio-inheritance"), is_flag=True, gunicorn=""),
)

# Server hooks: config-file functions and the arguments they are called with.
HOOKS: dict[str, tuple[str, ...]] = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "post_request": ("worker", "req", "environ", "resp"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
    "ssl_context": ("config", "default_ssl_context_factory"),
}

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: gunicorn's other names for forkserve settings: alias -> setting.
ALIASES: dict[str, str] = {a: s.name for s in SETTINGS for a in s.aliases}
_CLI_ONLY = frozenset(s.name for s in SETTINGS if s.cli_only)
_FOREIGN_HOOKS = frozenset(f.name for f in FOREIGN.values() if f.hook)


def _flag_names() -> dict[str, str]:
    """A flag spelled as a config-file name (``preload`` for ``--preload``)
    -> the setting it is for; only where the two differ, and only names long
    enough not to be someone's ordinary variable (``pid``, ``env``)."""
    out: dict[str, str] = {}
    pairs = [(s.name, s.flags) for s in SETTINGS] + [(f.name, f.flags) for f in FOREIGN.values()]
    for name, flags in pairs:
        for flag in flags:
            spelled = flag.lstrip("-").replace("-", "_")
            if flag.startswith("--") and len(spelled) >= 6 and spelled != name \
                    and spelled not in BY_NAME and spelled not in ALIASES \
                    and spelled not in FOREIGN:
                out[spelled] = name
    return out


FLAG_NAMES: dict[str, str] = _flag_names()
_SETTING_NAMES = tuple(sorted({*BY_NAME, *ALIASES, *(set(FOREIGN) - _FOREIGN_HOOKS)}))
_HOOK_NAMES = tuple(sorted({*HOOKS, *_FOREIGN_HOOKS}))


def _edits(a: str, b: str, substitute: bool = True) -> int:
    """Edits from ``a`` to ``b``: a letter added or dropped, two neighbours
    swapped and (with ``substitute``) a letter changed each count one
    (optimal string alignment)."""
    change = 1 if substitute else 2  # without: a change is a drop and an add
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (change if ca != cb else 0))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def near_miss(name: str, candidates: Iterable[str]) -> list[str]:
    """The candidates ``name`` may be a typo of, likeliest first; empty if
    it is no typo.

    A typo is one edit away (``worker``, ``keep_alive``, ``timout``), or, in
    long names, two letters dropped, added or swapped
    (``max_request_jiter``); two changed letters make another word
    (``statsd_port``), and a name that merely adds to a candidate
    (``timeout_str``, ``use_loglevel``) is a helper variable, the way real
    config files name them.  A name that is also the last word of a
    candidate (``worker_init``, of ``post_worker_init``) gets that one too.
    """
    if len(name) < 4:
        return []
    found: list[tuple[int, str]] = []
    pool = list(candidates)
    for cand in pool:
        if cand == name or abs(len(cand) - len(name)) > 2:
            continue
        if _edits(name, cand) <= 1:
            found.append((1, cand))
        elif len(name) >= 10 and cand not in name and _edits(name, cand, substitute=False) <= 2:
            found.append((2, cand))
    if not found:
        return []
    # Only the closest: a one-letter slip is not also a two-letter one of
    # another name (preloads: preload, not reload).
    best = min(d for d, _ in found)
    found = [(d, c) for d, c in found if d == best]
    also = [c for c in pool if c.endswith("_" + name) and (c in BY_NAME or c in HOOKS)]
    return [c for _, c in sorted(found)] + sorted(also)


def _typo_of(name: str, value: Any) -> list[str]:
    """The settings or hooks a config-file name was probably meant as: a
    function is compared with hooks only, anything else with settings only,
    so a hint never points at a different kind of thing."""
    if callable(value) and not isinstance(value, type):
        return near_miss(name, _HOOK_NAMES)
    flag = FLAG_NAMES.get(name)
    return [flag] if flag else near_miss(name, _SETTING_NAMES)


def _unknown(name: str, targets: list[str]) -> str:
    if not targets:
        return "unknown setting"
    hint = " or ".join(repr(t) for t in targets)
    if all(t in _HOOK_NAMES for t in targets):
        return f"unknown server hook; did you mean {hint}?"
    if FLAG_NAMES.get(name) == targets[0]:
        flag = "--" + name.replace("_", "-")
        return f"unknown setting; did you mean {hint}? ({flag} is its command-line flag)"
    return f"unknown setting; did you mean {hint}?"


def _no_hook(*args: Any) -> None:
    return None


@dataclass
class Config:
    """The effective settings, as attributes, plus where each came from."""

    values: dict[str, Any] = field(default_factory=lambda: {s.name: s.default for s in SETTINGS})
    sources: dict[str, str] = field(default_factory=lambda: {s.name: "default" for s in SETTINGS})
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # gunicorn settings forkserve does not implement, as given: name -> (value, source).
    foreign: dict[str, tuple[Any, str]] = field(default_factory=dict)
    # A config file's own variables: name -> the file.
    ignored: dict[str, str] = field(default_factory=dict)
    # Lines to log once logging is set up, one per key: key -> (level, line).
    notes: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        if name in HOOKS:
            return self.__dict__["hooks"].get(name, _no_hook)
        if values is None:
            raise AttributeError(name)
        # gunicorn's cfg names that are not settings here (hooks use them).
        from .hookobjects import cfg_attribute
        return cfg_attribute(self, name)

    def set(self, name: str, raw: Any, source: str = "a server hook") -> None:
        """Validate ``raw`` for setting ``name`` (or a gunicorn name for it)
        and store it; ConfigError if bad or refused.  Without a source, a
        hook is setting it (gunicorn's ``cfg.set(name, value)``)."""
        setting = BY_NAME.get(ALIASES.get(name, name))
        if setting is None:
            foreign = FOREIGN.get(name)
            if foreign is None:
                raise ConfigError(name, _unknown(name, near_miss(name, _SETTING_NAMES)), source)
            self._set_foreign(foreign, raw, source)
            return
        try:
            value = setting.validator(raw)
        except ValueError as exc:
            raise ConfigError(name, str(exc), source) from None
        self.values[setting.name] = value
        self.sources[setting.name] = source if name == setting.name else f"{source}, as {name}"

    def _set_foreign(self, foreign: Foreign, raw: Any, source: str) -> None:
        name = foreign.name
        if foreign.is_quiet(raw) or foreign.needs:
            self.foreign.pop(name, None)
            why = f"it matters only with {foreign.needs}" if foreign.needs else \
                "it asks for nothing forkserve does not do"
            self.notes[name] = (logging.DEBUG, f"{name} = {raw!r} changes nothing here: {why} "
                                               f"({source})")
            return
        if foreign.outcome is Outcome.REFUSED:
            raise ConfigError(name, foreign.why, source)
        self.foreign[name] = (raw, source)
        shown = getattr(raw, "__qualname__", None) or repr(raw)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        self.notes[name] = (logging.WARNING, f"{name} = {shown} has no effect: {foreign.why} "
                                             f"({source})")

    def set_hook(self, name: str, fn: Any, source: str) -> None:
        if not callable(fn):
            raise ConfigError(name, f"a server hook must be callable, got {fn!r}", source)
        arity = len(HOOKS[name])
        try:
            inspect.signature(fn).bind(*range(arity))
        except TypeError:
            raise ConfigError(name, f"a server hook taking {arity} argument(s) "
                              f"({', '.join(HOOKS[name])}) is expected", source) from None
        except ValueError:  # builtins without a signature: trust them
            pass
        self.hooks[name] = fn
        self.sources[name] = source

    def ignore(self, name: str, source: str) -> None:
        """Record a config file's own variable (gunicorn ignores them too)."""
        self.ignored[name] = source
        self.notes[f"ignored {name}"] = (
            logging.DEBUG, f"{name}: not a setting, the config file's own variable; "
                           f"ignored ({source})")

    def note(self, key: str, level: int, line: str) -> None:
        """A line for the error log, once it is set up."""
        self.notes[key] = (level, line)

    @property
    def address_list(self) -> list[str]:
        return self.values["bind"]

    def items(self) -> Iterator[tuple[Setting, Any]]:
        for s in SETTINGS:
            if not s.cli_only:
                yield s, self.values[s.name]

    def to_python(self) -> str:
        """The effective settings as a config file (``--print-config``);
        what has no effect, and what was ignored, as comments."""
        lines = ["# forkserve effective configuration"]
        for s, value in self.items():
            src = self.sources[s.name]
            lines.append(f"{s.name} = {value!r}" + ("" if src == "default" else f"  # {src}"))
        for name, fn in sorted(self.hooks.items()):
            lines.append(f"# hook {name} = {getattr(fn, '__qualname__', fn)!r}  # {self.sources[name]}")
        if self.foreign:
            lines.append("# gunicorn settings that have no effect here:")
            for name, (value, src) in sorted(self.foreign.items()):
                shown = getattr(value, "__qualname__", None) or repr(value)
                lines.append(f"# {name} = {shown}  # {src}: {FOREIGN[name].why}")
        if self.ignored:
            lines.append("# ignored, the config file's own variables:")
            for src in sorted(set(self.ignored.values())):
                names = sorted(n for n, s in self.ignored.items() if s == src)
                lines.append(f"# {', '.join(names)}  # {src}")
        return "\n".join(lines) + "\n"


#: Environment variables that give a setting its default, as in gunicorn.
ENV_DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("WEB_CONCURRENCY", "workers", "{}"),
    ("PORT", "bind", "0.0.0.0:{}"),
    ("FORWARDED_ALLOW_IPS", "forwarded_allow_ips", "{}"),
)


def apply_environment(cfg: Config, environ: dict[str, str]) -> None:
    """Defaults from WEB_CONCURRENCY, PORT and FORWARDED_ALLOW_IPS."""
    for var, name, form in ENV_DEFAULTS:
        value = environ.get(var, "")
        if value:
            cfg.set(name, form.format(value), f"{var} environment variable")


def load_config_file(cfg: Config, location: str, base_dir: str | None = None) -> None:
    """Read a config file (PATH, file:PATH) or module (python:MODULE) and
    apply its module-level names.

    Lower-case names that are settings (gunicorn's too) or hooks are
    applied; a near miss of one (:func:`near_miss`) is an error, unless the
    name it is near is set as well; any other name is the file's own and
    ignored, as gunicorn ignores it.  Names starting with ``_``, other
    cases, modules and classes are the file's own.
    """
    if location.startswith("python:"):
        namespace = _import_config(location, base_dir)
    else:
        path = location[len("file:"):] if location.startswith("file:") else location
        namespace = _exec_config(path)
        location = path
    apply_namespace(cfg, namespace, location)


def _exec_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            code_text = f.read()
    except OSError as exc:
        raise ConfigError("config", f"cannot read the config file: {exc.strerror}", path) from None
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    try:
        code = compile(code_text, path, "exec")
        exec(code, namespace)
    except SyntaxError as exc:
        raise ConfigError("config", f"syntax error on line {exc.lineno}: {exc.msg}", path) from None
    except Exception as exc:
        raise ConfigError("config", f"the file raised {type(exc).__name__}: {exc}", path) from None
    return namespace


def _import_config(location: str, base_dir: str | None) -> dict[str, Any]:
    module_name = location[len("python:"):]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module_name):
        raise ConfigError("config", f"expected python:MODULE, got {location!r}", location)
    # As gunicorn: the module is found from the current directory.  It is
    # imported afresh each time, so a HUP reads it again.
    here = os.path.abspath(base_dir or os.getcwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    sys.modules.pop(module_name, None)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError("config", f"cannot import the config module: {exc}", location) from None
    except SyntaxError as exc:
        raise ConfigError("config", f"syntax error in {exc.filename} on line {exc.lineno}: "
                          f"{exc.msg}", location) from None
    except Exception as exc:
        raise ConfigError("config", f"the module raised {type(exc).__name__}: {exc}",
                          location) from None
    finally:
        if added:
            sys.path.remove(here)
    return dict(vars(module))


def apply_namespace(cfg: Config, namespace: dict[str, Any], source: str) -> None:
    """Apply a config file's module-level names (see :func:`load_config_file`)."""
    given = set(namespace)
    for name, value in namespace.items():
        if name.startswith("_") or name in _CLI_ONLY:
            continue
        if isinstance(value, types.ModuleType):
            continue  # import os; import syslog: a module, never the setting
        if name in HOOKS:
            cfg.set_hook(name, value, source)
        elif name in BY_NAME or name in ALIASES or name in FOREIGN:
            cfg.set(name, value, source)
        elif name != name.lower() or isinstance(value, type):
            continue  # constants, classes: plainly the file's own
        else:
            targets = _typo_of(name, value)
            meant = {*targets, *(a for a, t in ALIASES.items() if t in targets)}
            if targets and not meant & given:
                raise ConfigError(name, _unknown(name, targets), source)
            cfg.ignore(name, source)


def settings_markdown() -> str:
    """The README's settings table, generated from SETTINGS."""
    rows = ["| setting | flag | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        flags = ", ".join(f"`{f}`" for f in s.flags) if s.flags else "(APP argument)" \
            if s.name == "wsgi_app" else "(config file)"
        default = "unset" if s.default is None else f"`{s.default!r}`"
        rows.append(f"| `{s.name}` | {flags} | {default} | {_cell(s.doc)} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")


def gunicorn_outcome(name: str) -> tuple[Outcome, str, str]:
    """What gunicorn's setting ``name`` does here: (outcome, flags, note)."""
    if name in ALIASES:
        target = BY_NAME[ALIASES[name]]
        flag = "--" + name.replace("_", "-")
        note = f"another name for `{target.name}`"
        return Outcome.ALIAS, f"`{flag}`" if flag in target.flags else "", \
            f"{note}; {target.gunicorn}" if target.gunicorn else note
    if name in BY_NAME:
        s = BY_NAME[name]
        flags = ", ".join(f"`{f}`" for f in s.flags)
        return Outcome.SUPPORTED, flags, s.gunicorn or "as in gunicorn"
    if name in HOOKS:
        return Outcome.SUPPORTED, "", "server hook; " + (HOOK_NOTES.get(name) or "as in gunicorn")
    foreign = FOREIGN[name]
    return foreign.outcome, ", ".join(f"`{f}`" for f in foreign.flags), foreign.why


def gunicorn_markdown() -> str:
    """The README's table of gunicorn's settings, generated from the tables."""
    rows = ["| gunicorn setting | flags | here | why, or how it differs |", "|---|---|---|---|"]
    for name in GUNICORN_NAMES:
        outcome, flags, note = gunicorn_outcome(name)
        rows.append(f"| `{name}` | {flags} | {outcome.value} | {_cell(note)} |")
    return "\n".join(rows) + "\n"


_TABLES = {"settings": settings_markdown, "gunicorn": gunicorn_markdown}


def update_readme(path: str) -> None:
    """Replace the tables between the README's markers."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for key, render in _TABLES.items():
        begin = text.index(f"<!-- {key}:begin")
        begin = text.index("\n", begin) + 1
        end = text.index(f"<!-- {key}:end -->")
        text = text[:begin] + render() + text[end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    # python -m forkserve.config [--readme README.md | --gunicorn]
    if sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2])
    elif sys.argv[1:2] == ["--gunicorn"]:
        print(gunicorn_markdown(), end="")
    else:
        print(settings_markdown(), end="")
