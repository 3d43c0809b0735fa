"""gunicorn's settings that forkserve has no setting of its own for.

forkserve reads gunicorn's config files and command lines, so every gunicorn
27 setting name is known.  The ones forkserve implements live in the
settings table (:data:`forkserve.config.SETTINGS`, under the same name or as
an alias, each saying how it differs from gunicorn's); the others are here,
each with one outcome:

- ``NO_EFFECT``: accepted; a value other than a quiet one gets one warning
  line saying why it changes nothing here;
- ``REFUSED``: a value other than a quiet one stops the server with one
  line saying what to use instead.

A quiet value is gunicorn's default (or one that asks for what forkserve
does anyway), so the templates that spell out every default
(``daemon = False``, ``spew = False``) run without noise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "Foreign", "FOREIGN", "GUNICORN_NAMES", "HOOK_NOTES"]


class Outcome(enum.Enum):
    """What a gunicorn setting does under forkserve."""

    SUPPORTED = "supported"
    ALIAS = "alias"
    NO_EFFECT = "no effect"
    REFUSED = "refused"


@dataclass(frozen=True)
class Foreign:
    """A gunicorn setting forkserve does not implement."""

    name: str
    outcome: Outcome
    why: str                          # the warning's or refusal's reason; the README's note
    quiet: tuple[Any, ...] = (None,)  # values taken without a word
    flags: tuple[str, ...] = ()       # gunicorn's command-line flags for it
    is_flag: bool = False             # a switch without an argument
    flag_value: Any = True            # what the switch sets
    multiple: bool = False            # the flag may repeat
    optional_value: Any = None        # a flag whose argument may be left out: its value then
    hook: bool = False                # a server hook (a function in config files)
    # The setting this one only matters with (reload_engine: reload).  That
    # one warns or is refused; this one, like in gunicorn without it, says
    # nothing more.
    needs: str = ""

    def is_quiet(self, value: Any) -> bool:
        """Whether ``value`` (a Python value, or a command-line string)
        asks for nothing beyond what forkserve does."""
        return any(_same(value, q) for q in self.quiet)


def _same(value: Any, quiet: Any) -> bool:
    if isinstance(value, str) and not isinstance(quiet, str):
        # A command-line string against a Python value: "false", "0".
        return quiet is not None and value.strip().lower() == str(quiet).lower()
    if isinstance(value, bool) or isinstance(quiet, bool):
        return value is quiet
    if isinstance(value, dict) and isinstance(quiet, dict):
        # Header names in any case, as gunicorn compares them.
        return {str(k).upper(): v for k, v in value.items()} == quiet
    try:
        return bool(value == quiet)
    except Exception:
        return False


_LOGCONFIG = ("forkserve has no logger class to replace: shape the logs with logconfig_dict "
              "(or logconfig, logconfig_json) targeting gunicorn.error and gunicorn.access, "
              "or errorlog, accesslog, access_log_format")
_STRICT = "forkserve's request reader stays strict: such requests get 400"
_H1 = "forkserve speaks HTTP/1.1 only"
_DIRTY = "used only with dirty_apps, which forkserve does not run"
_CONTROL = "forkserve has no control socket: control it with signals (see Signals)"
_BOOL = (False, "false")

_FOREIGN: tuple[Foreign, ...] = (
    # -- debugging
    Foreign("spew", Outcome.NO_EFFECT,
            "forkserve has no line tracer: run the app under a debugger instead", _BOOL,
            ("--spew",), is_flag=True),
    # -- server mechanics
    Foreign("sendfile", Outcome.NO_EFFECT,
            "forkserve always sends wsgi.file_wrapper responses with sendfile(2) when the "
            "file allows it", (None, True, "true"), ("--no-sendfile",), is_flag=True,
            flag_value=False),
    Foreign("worker_tmp_dir", Outcome.NO_EFFECT,
            "the heartbeat lives in shared memory, not in a file", (None,),
            ("--worker-tmp-dir",)),
    Foreign("initgroups", Outcome.NO_EFFECT,
            "when it switches user, forkserve always gives the workers that user's groups "
            "(initgroups)", (False, True, "false", "true"), ("--initgroups",), is_flag=True),
    Foreign("tmp_upload_dir", Outcome.NO_EFFECT,
            "request bodies are streamed to the app, never stored (gunicorn 27 does not "
            "use it either)"),
    Foreign("paste", Outcome.REFUSED,
            "PasteDeploy apps: load it in a module (app = paste.deploy.loadapp("
            "'config:/path/app.ini')) and serve module:app", (None, ""),
            ("--paste", "--paster")),
    Foreign("raw_paste_global_conf", Outcome.REFUSED,
            "PasteDeploy global settings go with paste: load the app in a module and pass "
            "global_conf to loadapp", ([], ()), ("--paste-global",), multiple=True),
    Foreign("protocol", Outcome.REFUSED,
            "forkserve speaks HTTP only: point the proxy at it over HTTP (nginx: proxy_pass, "
            "not uwsgi_pass)", ("http",), ("--protocol",)),
    Foreign("uwsgi_allow_ips", Outcome.NO_EFFECT,
            "used only with protocol = 'uwsgi', which forkserve does not speak",
            ("127.0.0.1,::1", ["127.0.0.1", "::1"]), ("--uwsgi-allow-from",), needs="protocol"),
    Foreign("header_map", Outcome.NO_EFFECT,
            "header names with '_' never reach the app (gunicorn's 'drop')", ("drop",),
            ("--header-map",)),
    Foreign("permit_obsolete_folding", Outcome.NO_EFFECT, _STRICT, _BOOL,
            ("--permit-obsolete-folding",), is_flag=True),
    Foreign("strip_header_spaces", Outcome.NO_EFFECT, _STRICT, _BOOL,
            ("--strip-header-spaces",), is_flag=True),
    Foreign("permit_unconventional_http_method", Outcome.NO_EFFECT, _STRICT, _BOOL,
            ("--permit-unconventional-http-method",), is_flag=True),
    Foreign("permit_unconventional_http_version", Outcome.NO_EFFECT, _STRICT, _BOOL,
            ("--permit-unconventional-http-version",), is_flag=True),
    Foreign("casefold_http_method", Outcome.NO_EFFECT, _STRICT, _BOOL,
            ("--casefold-http-method",), is_flag=True),
    # -- logging
    Foreign("logger_class", Outcome.NO_EFFECT, _LOGCONFIG,
            ("gunicorn.glogging.Logger",), ("--logger-class",)),
    # -- process naming
    Foreign("default_proc_name", Outcome.NO_EFFECT,
            "process titles come from proc_name, or the app", ("gunicorn",)),
    # -- HTTP/2
    Foreign("http_protocols", Outcome.NO_EFFECT, _H1 + "; clients that offer h2 get HTTP/1.1",
            ("h1",), ("--http-protocols",)),
    Foreign("http2_cleartext", Outcome.REFUSED,
            _H1 + ": put a proxy that speaks h2c in front", ("off",), ("--http2-cleartext",)),
    Foreign("http2_max_concurrent_streams", Outcome.NO_EFFECT, _H1, (100, "100"),
            ("--http2-max-concurrent-streams",), needs="http_protocols"),
    Foreign("http2_initial_window_size", Outcome.NO_EFFECT, _H1, (65535, "65535"),
            ("--http2-initial-window-size",), needs="http_protocols"),
    Foreign("http2_max_frame_size", Outcome.NO_EFFECT, _H1, (16384, "16384"),
            ("--http2-max-frame-size",), needs="http_protocols"),
    Foreign("http2_max_header_list_size", Outcome.NO_EFFECT, _H1, (65536, "65536"),
            ("--http2-max-header-list-size",), needs="http_protocols"),
    # -- ASGI
    Foreign("asgi_loop", Outcome.NO_EFFECT, "the ASGI worker always runs on uvloop",
            ("auto", "uvloop"), ("--asgi-loop",)),
    Foreign("asgi_disconnect_grace_period", Outcome.NO_EFFECT,
            "an ASGI app's receive() gets http.disconnect as soon as the client is gone",
            (3, "3"), ("--asgi-disconnect-grace-period",)),
    Foreign("http_parser", Outcome.NO_EFFECT, "forkserve has one request reader of its own",
            ("auto",), ("--http-parser",)),
    # -- dirty arbiters
    Foreign("dirty_apps", Outcome.REFUSED,
            "gunicorn's dirty arbiters have no forkserve equivalent: run that work in a "
            "service or task queue of its own", ([], ()), ("--dirty-app",), multiple=True),
    Foreign("dirty_workers", Outcome.NO_EFFECT, _DIRTY, (0, "0"), ("--dirty-workers",),
            needs="dirty_apps"),
    Foreign("dirty_timeout", Outcome.NO_EFFECT, _DIRTY, (300, "300"), ("--dirty-timeout",),
            needs="dirty_apps"),
    Foreign("dirty_threads", Outcome.NO_EFFECT, _DIRTY, (1, "1"), ("--dirty-threads",),
            needs="dirty_apps"),
    Foreign("dirty_graceful_timeout", Outcome.NO_EFFECT, _DIRTY, (30, "30"),
            ("--dirty-graceful-timeout",), needs="dirty_apps"),
    Foreign("on_dirty_starting", Outcome.NO_EFFECT, _DIRTY, hook=True, needs="dirty_apps"),
    Foreign("dirty_post_fork", Outcome.NO_EFFECT, _DIRTY, hook=True, needs="dirty_apps"),
    Foreign("dirty_worker_init", Outcome.NO_EFFECT, _DIRTY, hook=True, needs="dirty_apps"),
    Foreign("dirty_worker_exit", Outcome.NO_EFFECT, _DIRTY, hook=True, needs="dirty_apps"),
    # -- control socket
    Foreign("control_socket", Outcome.NO_EFFECT, _CONTROL, (None,), ("--control-socket",)),
    Foreign("control_socket_mode", Outcome.NO_EFFECT, _CONTROL, (0o600, "0600", "384"),
            ("--control-socket-mode",), needs="control_socket"),
    Foreign("control_socket_disable", Outcome.NO_EFFECT, _CONTROL,
            (False, True, "false", "true"), ("--no-control-socket",), is_flag=True),
)

FOREIGN: dict[str, Foreign] = {f.name: f for f in _FOREIGN}

#: Every setting of gunicorn 27, in the order of its documentation.
GUNICORN_NAMES: tuple[str, ...] = (
    "config", "wsgi_app", "bind", "backlog", "workers", "worker_class", "threads",
    "worker_connections", "max_requests", "max_requests_jitter", "timeout",
    "graceful_timeout", "keepalive", "limit_request_line", "limit_request_fields",
    "limit_request_field_size", "reload", "reload_engine", "reload_extra_files", "spew",
    "check_config", "print_config", "preload_app", "sendfile", "reuse_port", "chdir",
    "daemon", "raw_env", "pidfile", "worker_tmp_dir", "user", "group", "umask", "initgroups",
    "tmp_upload_dir", "secure_scheme_headers", "forwarded_allow_ips", "accesslog",
    "disable_redirect_access_to_syslog", "access_log_format", "errorlog", "loglevel",
    "capture_output", "logger_class", "logconfig", "logconfig_dict", "logconfig_json",
    "syslog_addr", "syslog", "syslog_prefix", "syslog_facility", "enable_stdio_inheritance",
    "statsd_host", "dogstatsd_tags", "statsd_prefix", "enable_backlog_metric", "proc_name",
    "default_proc_name", "pythonpath", "paste", "on_starting", "on_reload", "when_ready",
    "pre_fork", "post_fork", "post_worker_init", "worker_int", "worker_abort", "pre_exec",
    "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed", "on_exit",
    "ssl_context", "proxy_protocol", "proxy_allow_ips", "protocol", "uwsgi_allow_ips",
    "keyfile", "certfile", "ssl_version", "cert_reqs", "ca_certs", "suppress_ragged_eofs",
    "do_handshake_on_connect", "ciphers", "http_protocols", "http2_cleartext",
    "http2_max_concurrent_streams", "http2_initial_window_size", "http2_max_frame_size",
    "http2_max_header_list_size", "raw_paste_global_conf", "permit_obsolete_folding",
    "strip_header_spaces", "permit_unconventional_http_method",
    "permit_unconventional_http_version", "casefold_http_method", "forwarder_headers",
    "header_map", "asgi_loop", "asgi_lifespan", "asgi_disconnect_grace_period",
    "websocket_max_message_size", "http_parser", "root_path", "dirty_apps", "dirty_workers",
    "dirty_timeout", "dirty_threads", "dirty_graceful_timeout", "on_dirty_starting",
    "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit", "control_socket",
    "control_socket_mode", "control_socket_disable",
)

#: How forkserve's server hooks differ from gunicorn's ("" where they do not).
HOOK_NOTES: dict[str, str] = {
    "when_ready": "runs once the first workers serve (gunicorn: before they are forked)",
    "ssl_context": "called when a worker boots, and once in the master on start and HUP to "
                   "check the settings (gunicorn's sync workers: once per connection)",
}
