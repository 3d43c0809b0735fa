"""Settings: one table, read by the CLI, the config file loader,
``--print-config`` and the README's settings table.

Each setting has one definition (name, section, flags, validator, default,
doc).  Values come from, lowest precedence first: the defaults, the config
file, the ``FORKSERVE_CMD_ARGS`` environment variable, the command line.
Every value, whatever its source, goes through the same validator, and a bad
one is reported in one line naming the setting and where it came from.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .sockets import parse_address
from .workers import registry as worker_registry

__all__ = ["ConfigError", "Setting", "SETTINGS", "HOOKS", "Config", "load_config_file"]


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


def integer(minimum: int = 0) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"expected an integer >= {minimum}, got {v!r}")
        if _is_str(v) and re.fullmatch(r"[+-]?[0-9]{1,18}", v.strip()):
            v = int(v.strip(), 10)
        if not isinstance(v, int) or v < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {v!r}")
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


def log_level(v: Any) -> str:
    if _is_str(v) and v.strip().lower() in ("debug", "info", "warning", "error", "critical"):
        return v.strip().lower()
    raise ValueError(f"expected debug, info, warning, error or critical, got {v!r}")


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

    @property
    def flag(self) -> str:
        return self.flags[-1] if self.flags else ""


_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

SETTINGS: tuple[Setting, ...] = (
    # -- config
    Setting("config", "config", optional_string, None,
            "Python config file. Without it, ./forkserve.conf.py is read if it exists.",
            ("-c", "--config"), "FILE"),
    Setting("wsgi_app", "config", optional_string, None,
            "The application, module:callable or module:factory(); the APP argument sets it.",
            (), "APP"),
    Setting("check_config", "config", boolean, False,
            "Check the configuration and that the app loads, then exit.",
            ("--check-config",), is_flag=True, cli_only=True),
    Setting("print_config", "config", boolean, False,
            "Print the effective settings as a config file, then exit.",
            ("--print-config",), is_flag=True, cli_only=True),
    # -- server socket
    Setting("bind", "socket", addresses, ["127.0.0.1:8000"],
            "Address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. Repeat for several.",
            ("-b", "--bind"), "ADDRESS", multiple=True),
    Setting("backlog", "socket", integer(1), 2048,
            "Pending connections the kernel queues per listening socket.",
            ("--backlog",), "INT"),
    Setting("reuse_port", "socket", boolean, False,
            "Set SO_REUSEPORT on the listening sockets.",
            ("--reuse-port",), is_flag=True),
    Setting("umask", "socket", umask, 0,
            "umask of the master and workers; also governs unix socket file modes.",
            ("-m", "--umask"), "INT"),
    # -- workers
    Setting("workers", "workers", integer(1), 1,
            "Number of worker processes.",
            ("-w", "--workers"), "INT"),
    Setting("worker_class", "workers",
            choice(worker_registry.AUTO, *worker_registry.KINDS,
                   aliases=worker_registry.ALIASES), worker_registry.AUTO,
            "sync (WSGI), asgi (ASGI on uvloop) or auto (detected from the app). "
            "gunicorn's gthread and UvicornWorker names are accepted.",
            ("-k", "--worker-class"), "CLASS"),
    Setting("threads", "workers", integer(1), 1,
            "Threads per sync worker that run the WSGI app; connections wait in an event loop.",
            ("--threads",), "INT"),
    Setting("worker_connections", "workers", integer(1), 1000,
            "Most open client connections per worker.",
            ("--worker-connections",), "INT"),
    Setting("max_requests", "workers", integer(0), 0,
            "Restart a worker gracefully after this many requests (0: never).",
            ("--max-requests",), "INT"),
    Setting("max_requests_jitter", "workers", integer(0), 0,
            "Add a random 0..N to max_requests per worker, so workers do not restart together.",
            ("--max-requests-jitter",), "INT"),
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
            ("-t", "--timeout"), "SECONDS"),
    Setting("graceful_timeout", "workers", seconds, 30.0,
            "On TERM or HUP, how long workers may finish in-flight requests before they are killed.",
            ("--graceful-timeout",), "SECONDS"),
    Setting("keepalive", "workers", seconds, 5.0,
            "Seconds an idle keep-alive connection is kept open (0: no keep-alive).",
            ("--keep-alive",), "SECONDS"),
    Setting("lifespan", "workers", choice("auto", "on", "off"), "auto",
            "ASGI lifespan protocol: auto (use it if the app supports it), on, off.",
            ("--lifespan",), "MODE"),
    Setting("ws_max_size", "workers", integer(1), 16 * 1024 * 1024,
            "Largest incoming WebSocket message in bytes (closed with 1009 beyond it).",
            ("--ws-max-size",), "BYTES"),
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
            ("--root-path",), "PATH"),
    # -- security
    Setting("limit_request_line", "security", integer(0), 4094,
            "Longest request line in bytes (414 beyond it; 0: the 65536-byte head cap).",
            ("--limit-request-line",), "INT"),
    Setting("limit_request_fields", "security", integer(0), 100,
            "Most header fields in a request (431 beyond it).",
            ("--limit-request-fields",), "INT"),
    Setting("limit_request_field_size", "security", integer(0), 8190,
            "Largest header field in bytes (431 beyond it; 0: the head cap).",
            ("--limit-request-field_size", "--limit-request-field-size"), "INT"),
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
            "'unix' for unix sockets, or '*'.",
            ("--forwarded-allow-ips",), "LIST"),
    # -- server mechanics
    Setting("preload_app", "server", boolean, False,
            "Import the app in the master before forking (shares memory; HUP then reloads it in the master).",
            ("--preload",), is_flag=True),
    Setting("chdir", "server", optional_string, None,
            "Change to this directory before loading the app.",
            ("--chdir",), "DIR"),
    Setting("pythonpath", "server", string_list, [],
            "Directories to prepend to sys.path, comma separated.",
            ("--pythonpath",), "DIRS"),
    Setting("raw_env", "server", env_list, [],
            "Environment variables to set, KEY=VALUE; repeat for several.",
            ("-e", "--env"), "KEY=VALUE", multiple=True),
    Setting("pidfile", "server", optional_string, None,
            "Write the master's PID to this file.",
            ("-p", "--pid"), "FILE"),
    Setting("user", "server", user_or_group, None,
            "Switch worker processes to this user (name or uid).",
            ("-u", "--user"), "USER"),
    Setting("group", "server", user_or_group, None,
            "Switch worker processes to this group (name or gid).",
            ("-g", "--group"), "GROUP"),
    Setting("proc_name", "server", optional_string, None,
            "Name in process titles (default: the app).",
            ("-n", "--name"), "NAME"),
    # -- logging
    Setting("accesslog", "logging", optional_string, None,
            "Access log file, or - for stdout (default: no access log).",
            ("--access-logfile",), "FILE"),
    Setting("access_log_format", "logging", string, _ACCESS_LOG_FORMAT,
            "Access log line, with gunicorn's atoms: h l u t r m U q H s b B f a T D M L p {header}i {header}o.",
            ("--access-logformat",), "FORMAT"),
    Setting("errorlog", "logging", string, "-",
            "Error log file, or - for stderr.",
            ("--error-logfile", "--log-file"), "FILE"),
    Setting("loglevel", "logging", log_level, "info",
            "Error log level: debug, info, warning, error, critical.",
            ("--log-level",), "LEVEL"),
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
}

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _no_hook(*args: Any) -> None:
    return None


@dataclass
class Config:
    """The effective settings, as attributes, plus where each came from."""

    values: dict[str, Any] = field(default_factory=lambda: {s.name: s.default for s in SETTINGS})
    sources: dict[str, str] = field(default_factory=lambda: {s.name: "default" for s in SETTINGS})
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        if name in HOOKS:
            return self.__dict__["hooks"].get(name, _no_hook)
        raise AttributeError(name)

    def set(self, name: str, raw: Any, source: str) -> None:
        """Validate ``raw`` for setting ``name`` and store it; ConfigError if bad."""
        setting = BY_NAME.get(name)
        if setting is None:
            raise ConfigError(name, "unknown setting" + _suggest(name), source)
        try:
            value = setting.validator(raw)
        except ValueError as exc:
            raise ConfigError(name, str(exc), source) from None
        self.values[name] = value
        self.sources[name] = source

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

    @property
    def address_list(self) -> list[str]:
        return self.values["bind"]

    def items(self) -> Iterator[tuple[Setting, Any]]:
        for s in SETTINGS:
            if not s.cli_only:
                yield s, self.values[s.name]

    def to_python(self) -> str:
        """The effective settings as a config file (``--print-config``)."""
        lines = ["# forkserve effective configuration"]
        for s, value in self.items():
            src = self.sources[s.name]
            lines.append(f"{s.name} = {value!r}" + ("" if src == "default" else f"  # {src}"))
        for name, fn in sorted(self.hooks.items()):
            lines.append(f"# hook {name} = {getattr(fn, '__qualname__', fn)!r}  # {self.sources[name]}")
        return "\n".join(lines) + "\n"


def _suggest(name: str) -> str:
    match = difflib.get_close_matches(name, list(BY_NAME) + list(HOOKS), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def load_config_file(cfg: Config, path: str) -> None:
    """Execute a Python config file and apply its module-level names.

    Lower-case names must be settings or hooks; a typo is an error rather
    than a setting silently ignored.  Names starting with ``_``, ALL-CAPS
    constants, modules, classes and imported callables are the file's own.
    """
    source = path
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

    for name, value in namespace.items():
        if name.startswith("_") or name.isupper() or name in ("check_config", "print_config"):
            continue
        if isinstance(value, (types.ModuleType, type)):
            continue
        if name in HOOKS:
            cfg.set_hook(name, value, source)
        elif name in BY_NAME:
            cfg.set(name, value, source)
        elif callable(value) and getattr(value, "__module__", None) != "__config__":
            continue  # imported from elsewhere: from os.path import join
        else:
            raise ConfigError(name, "unknown setting" + _suggest(name), source)


def settings_markdown() -> str:
    """The README's settings table, generated from SETTINGS."""
    rows = ["| setting | flag | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        flags = ", ".join(f"`{f}`" for f in s.flags) if s.flags else "(APP argument)" \
            if s.name == "wsgi_app" else "(config file)"
        default = "unset" if s.default is None else f"`{s.default!r}`"
        rows.append(f"| `{s.name}` | {flags} | {default} | {s.doc.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def update_readme(path: str) -> None:
    """Replace the table between the README's settings markers."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    begin = text.index("<!-- settings:begin")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- settings:end -->")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:begin] + settings_markdown() + text[end:])


if __name__ == "__main__":
    # python -m forkserve.config [--readme README.md]
    import sys

    if sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2])
    else:
        print(settings_markdown(), end="")
