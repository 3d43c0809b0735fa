"""The ``forkserve`` command: argv (and the environment) to a Config, then
the arbiter.

Every option is generated from the settings tables in :mod:`forkserve.config`
and :mod:`forkserve.gunicorn_compat`, so the command line, config files and
``--print-config`` cannot drift apart, and gunicorn's flags are all known.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import Any, Sequence

import click
from click.core import ParameterSource

from . import __version__
from .app import AppLoadError, WorkerClassMismatch, detect_kind, load_app
from .config import (SETTINGS, Config, ConfigError, apply_environment, load_config_file,
                     near_miss)
from .gunicorn_compat import FOREIGN
from .uvicorn_compat import apply_worker_subclass, is_class_path

__all__ = ["main", "build_config", "command"]

EXIT_USAGE = 2
EXIT_APP = 3
_DEFAULT_CONFIG = "forkserve.conf.py"
_GUNICORN_CONFIG = "gunicorn.conf.py"


def _make_command() -> click.Command:
    params: list[click.Parameter] = [click.Argument(["app"], required=False, metavar="APP")]
    for s in SETTINGS:
        if not s.flags:
            continue
        if s.is_flag:
            params.append(click.Option([*s.flags, s.name], is_flag=True, default=False,
                                       help=s.doc))
        elif s.optional_value is not None:
            params.append(click.Option([*s.flags, s.name], is_flag=False,
                                       flag_value=s.optional_value, metavar=s.metavar,
                                       help=s.doc))
        else:
            params.append(click.Option([*s.flags, s.name], multiple=s.multiple,
                                       metavar=s.metavar, help=s.doc))
    # gunicorn's flags for what forkserve does not do: parsed, so that each
    # gets its warning or refusal (the settings table says which), not help.
    for f in FOREIGN.values():
        if not f.flags:
            continue
        if f.is_flag:
            params.append(click.Option([*f.flags, f.name], is_flag=True,
                                       flag_value=f.flag_value, default=None, hidden=True))
        elif f.optional_value is not None:
            params.append(click.Option([*f.flags, f.name], is_flag=False,
                                       flag_value=f.optional_value, default=None, hidden=True))
        else:
            params.append(click.Option([*f.flags, f.name], multiple=f.multiple, hidden=True))
    params.append(click.Option(["-v", "--version"], is_flag=True, expose_value=False,
                               is_eager=True, callback=_print_version,
                               help="Show the version and exit."))
    return click.Command(
        "forkserve", params=params,
        help="Serve APP (module:callable, WSGI or ASGI) with a pre-forked pool of workers. "
             "gunicorn's options are accepted too; those without an effect here say why.",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"forkserve {__version__}")
        ctx.exit(0)


command = _make_command()
_LONG_FLAGS = sorted(o for p in command.params if isinstance(p, click.Option)
                     for o in p.opts if o.startswith("--"))


def _explicit(args: Sequence[str], prog: str) -> dict[str, Any]:
    """The options actually given in ``args`` (no defaults)."""
    try:
        ctx = command.make_context(prog, list(args))
    except click.NoSuchOption as exc:
        # click's own hint is a loose close match (--reload -> --preload);
        # ours names only a typo of a real flag.
        # Compared without the leading dashes, which are no letters of
        # the name (else --preloads would be near --reload too).
        given = (exc.option_name or "").lstrip("-")
        hint = ["--" + f for f in near_miss(given, [f[2:] for f in _LONG_FLAGS])]
        also = f"; did you mean {' or '.join(hint)}?" if hint else ""
        raise click.UsageError(f"no such option: {exc.option_name}{also}") from None
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            given[name] = list(value) if isinstance(value, tuple) else value
    if ctx.params.get("app"):
        given["wsgi_app"] = ctx.params["app"]
    given.pop("app", None)
    return given


def _env_args(environ: dict[str, str], var: str) -> dict[str, Any]:
    """The options in an environment variable written as a command line."""
    text = environ.get(var, "")
    if not text:
        return {}
    try:
        return _explicit(shlex.split(text), var)
    except ValueError as exc:
        raise ConfigError(var, str(exc), "environment") from None
    except click.ClickException as exc:
        raise ConfigError(var, exc.format_message().replace("\n", " "), "environment") from None


def _config_location(cfg: Config, given: list[tuple[dict[str, Any], str]],
                     cwd: str | None) -> tuple[str | None, str]:
    """Which config file to read, and what chose it."""
    for args, source in given:
        if args.get("config"):
            return args["config"], source
    here = cwd or os.getcwd()
    ours = os.path.exists(os.path.join(here, _DEFAULT_CONFIG))
    theirs = os.path.exists(os.path.join(here, _GUNICORN_CONFIG))
    if ours:
        if theirs:
            cfg.note("default config", logging.INFO,
                     f"Reading ./{_DEFAULT_CONFIG}; ./{_GUNICORN_CONFIG} is not read")
        return _DEFAULT_CONFIG, "default"
    if theirs:
        cfg.note("default config", logging.INFO,
                 f"Reading ./{_GUNICORN_CONFIG}, as gunicorn would (there is no "
                 f"./{_DEFAULT_CONFIG})")
        return _GUNICORN_CONFIG, "found in the current directory"
    return None, ""


def build_config(argv: Sequence[str], environ: dict[str, str] | None = None,
                 cwd: str | None = None) -> Config:
    """Defaults (and the environment's: WEB_CONCURRENCY, PORT,
    FORWARDED_ALLOW_IPS) < config file < GUNICORN_CMD_ARGS <
    FORKSERVE_CMD_ARGS < command line.

    A relative config path is taken from ``cwd`` (default: the current
    directory), so a HUP after --chdir still finds the file.
    """
    environ = dict(os.environ) if environ is None else environ
    cli = _explicit(argv, "forkserve")
    ours = _env_args(environ, "FORKSERVE_CMD_ARGS")
    theirs = _env_args(environ, "GUNICORN_CMD_ARGS")
    cfg = Config()
    if "wsgi_app" in theirs:
        # gunicorn takes the app from its command line only.
        cfg.note("GUNICORN_CMD_ARGS app", logging.WARNING,
                 f"GUNICORN_CMD_ARGS: {theirs.pop('wsgi_app')!r} is not an option; ignored, "
                 f"as gunicorn ignores it")
    if environ.get("GUNICORN_CMD_ARGS"):
        both = (" FORKSERVE_CMD_ARGS is applied after it."
                if environ.get("FORKSERVE_CMD_ARGS") else "")
        cfg.note("GUNICORN_CMD_ARGS", logging.INFO,
                 f"Applying GUNICORN_CMD_ARGS, as gunicorn would: "
                 f"{environ['GUNICORN_CMD_ARGS']}.{both}")
    apply_environment(cfg, environ)
    layers = [(cli, "command line"), (ours, "FORKSERVE_CMD_ARGS"), (theirs, "GUNICORN_CMD_ARGS")]
    location, chosen_by = _config_location(cfg, layers, cwd)
    if location:
        cfg.set("config", location, chosen_by)
        if cwd and not location.startswith("python:"):
            path = location[len("file:"):] if location.startswith("file:") else location
            location = os.path.join(cwd, path)
        load_config_file(cfg, location, cwd)
    for given, source in reversed(layers):
        for name, value in given.items():
            if name != "config":
                cfg.set(name, value, source)
    if is_class_path(cfg.worker_class):
        apply_worker_subclass(cfg, cwd)
    if not cfg.wsgi_app:
        raise ConfigError("wsgi_app", "no application given; usage: forkserve [OPTIONS] "
                          "module:callable", "command line")
    return cfg


def _fail(message: str, code: int) -> None:
    click.echo(f"forkserve: error: {message}", err=True)
    sys.exit(code)


def _reserve_std_fds() -> None:
    """Put /dev/null on whichever of descriptors 0, 1 and 2 is closed.

    Some supervisors start daemons with stdout or stderr closed (``>&-``).
    Python then sets ``sys.stdout``/``sys.stderr`` to None, and the next
    descriptor opened (the error log, a listening socket) would become
    descriptor 1 or 2, where anything writing to "stdout" or "stderr" (a C
    library, a traceback, the access log's ``-``) would land in it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free one: fd
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, errors="backslashreplace"))


def _daemonize(keep_stdio: bool) -> None:
    """Detach from the terminal, as gunicorn's ``daemon`` does: fork, start
    a new session, fork again (so the daemon can never regain a
    controlling terminal); the launching process exits 0.  stdin goes to
    /dev/null, and so do stdout and stderr unless ``keep_stdio`` (then only
    if they are a terminal)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for fd in (1, 2):
        if not keep_stdio or os.isatty(fd):
            os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _apply_raw_env(cfg: Config) -> None:
    for item in cfg.raw_env:
        key, _, value = item.partition("=")
        os.environ[key] = value


def _log_notes(cfg: Config) -> None:
    """The config's notes (warnings for gunicorn settings without effect,
    the config file read...) to the error log."""
    from .logging import error_log

    for level, line in cfg.notes.values():
        error_log.log(level, line)


def _check_tls(cfg: Config) -> None:
    """Build the TLS context once, before forking, so that a bad
    certificate is a config error (relative paths are from the directory
    the master serves from, after chdir); its warnings join the notes."""
    from . import tls

    for i, line in enumerate(tls.check(cfg)):
        cfg.note(f"tls {i}", logging.WARNING, line)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    _reserve_std_fds()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = build_config(argv)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "), EXIT_USAGE)
        return
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
        return

    _apply_raw_env(cfg)

    if cfg.print_config:
        sys.stdout.write(cfg.to_python())
        sys.exit(0)
    if cfg.check_config:
        try:
            _check_tls(cfg)
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
            return
        for level, line in cfg.notes.values():
            if level >= logging.WARNING:
                click.echo(f"forkserve: warning: {line}", err=True)
        try:
            app = load_app(cfg.wsgi_app, cfg.chdir, cfg.pythonpath, cfg.worker_class)
        except WorkerClassMismatch as exc:
            # Found only by importing the app, as at boot, where a worker
            # finds it: an app boot failure (3), not a usage error (2).
            _fail(str(exc), EXIT_APP)
            return
        except AppLoadError as exc:
            _fail(f"the app does not load: {exc}", EXIT_APP)
            return
        except Exception as exc:
            _fail(f"the app does not load: {type(exc).__name__}: {exc}", EXIT_APP)
            return
        kind = detect_kind(app)
        click.echo(f"forkserve: config OK; {cfg.wsgi_app} is {'an' if kind == 'asgi' else 'a'} "
                   f"{kind.upper()} app")
        sys.exit(0)

    # A master re-executed by USR2 is detached already (it is its old
    # master's child).
    if cfg.daemon and "FORKSERVE_PARENT_PID" not in os.environ:
        if os.environ.get("NOTIFY_SOCKET"):
            cfg.note("daemon", logging.WARNING, "daemon under systemd (Type=notify): systemd "
                     "loses track of a master that detaches; drop daemon")
        _daemonize(cfg.enable_stdio_inheritance)

    from .arbiter import Arbiter
    from . import statsd
    from .logconfig import LogConfigError, configure_logging
    from .logging import capture_output

    capture_output(cfg.capture_output)
    try:
        configure_logging(cfg)
    except OSError as exc:
        _fail(f"errorlog/accesslog: cannot open: {exc}", EXIT_USAGE)
    except LogConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    statsd.configure(cfg)
    start_cwd = os.getcwd()
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            _fail(f"chdir: {exc.strerror}: {cfg.chdir} ({cfg.sources['chdir']})", EXIT_USAGE)
    os.umask(cfg.umask)
    try:
        _check_tls(cfg)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    _log_notes(cfg)

    def reload_config() -> Config:
        new = build_config(argv, cwd=start_cwd)
        new.values["chdir"] = None
        _check_tls(new)  # a bad certificate fails the reload; the old workers serve on
        _apply_raw_env(new)  # for the new workers, as gunicorn's reload does
        capture_output(new.capture_output)
        _log_notes(new)
        return new

    # The master has changed directory already; the app loads from here.
    cfg.values["chdir"] = None
    try:
        Arbiter(cfg, reload_config).run()
    except OSError as exc:
        # Bind failures and the like: one line, not a traceback.
        _fail(str(exc), 1)
