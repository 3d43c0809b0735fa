"""The ``forkserve`` command: argv (and the environment) to a Config, then
the arbiter.

Every option is generated from the settings table in :mod:`forkserve.config`,
so the command line, config files and ``--print-config`` cannot drift apart.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Sequence

import click
from click.core import ParameterSource

from . import __version__
from .app import AppLoadError, WorkerClassMismatch, detect_kind, load_app
from .config import SETTINGS, Config, ConfigError, load_config_file

__all__ = ["main", "build_config", "command"]

EXIT_USAGE = 2
EXIT_APP = 3
_DEFAULT_CONFIG = "forkserve.conf.py"


def _make_command() -> click.Command:
    params: list[click.Parameter] = [click.Argument(["app"], required=False, metavar="APP")]
    for s in SETTINGS:
        if not s.flags:
            continue
        if s.is_flag:
            params.append(click.Option([*s.flags, s.name], is_flag=True, default=False,
                                       help=s.doc))
        else:
            params.append(click.Option([*s.flags, s.name], multiple=s.multiple,
                                       metavar=s.metavar, help=s.doc))
    params.append(click.Option(["--version"], is_flag=True, expose_value=False,
                               is_eager=True, callback=_print_version,
                               help="Show the version and exit."))
    return click.Command(
        "forkserve", params=params,
        help="Serve APP (module:callable, WSGI or ASGI) with a pre-forked pool of workers.",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"forkserve {__version__}")
        ctx.exit(0)


command = _make_command()


def _explicit(args: Sequence[str], prog: str) -> dict[str, Any]:
    """The options actually given in ``args`` (no defaults)."""
    ctx = command.make_context(prog, list(args))
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            given[name] = list(value) if isinstance(value, tuple) else value
    if ctx.params.get("app"):
        given["wsgi_app"] = ctx.params["app"]
    given.pop("app", None)
    return given


def build_config(argv: Sequence[str], environ: dict[str, str] | None = None,
                 cwd: str | None = None) -> Config:
    """Defaults < config file < FORKSERVE_CMD_ARGS < command line.

    A relative config path is taken from ``cwd`` (default: the current
    directory), so a HUP after --chdir still finds the file.
    """
    environ = dict(os.environ) if environ is None else environ
    cli = _explicit(argv, "forkserve")
    env_args = environ.get("FORKSERVE_CMD_ARGS", "")
    try:
        env = _explicit(shlex.split(env_args), "FORKSERVE_CMD_ARGS") if env_args else {}
    except ValueError as exc:
        raise ConfigError("FORKSERVE_CMD_ARGS", str(exc), "environment") from None
    cfg = Config()
    path = cli.get("config") or env.get("config")
    if path is None and os.path.exists(os.path.join(cwd or "", _DEFAULT_CONFIG)):
        path = _DEFAULT_CONFIG
    if path and cwd:
        path = os.path.join(cwd, path)
    if path:
        cfg.set("config", path, "command line" if "config" in cli else "FORKSERVE_CMD_ARGS"
                if "config" in env else "default")
        load_config_file(cfg, path)
    port = environ.get("PORT")
    if port and "bind" not in cli and "bind" not in env and cfg.sources["bind"] == "default":
        cfg.set("bind", f"0.0.0.0:{port}", "PORT environment variable")
    for given, source in ((env, "FORKSERVE_CMD_ARGS"), (cli, "command line")):
        for name, value in given.items():
            if name != "config":
                cfg.set(name, value, source)
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

    for item in cfg.raw_env:
        key, _, value = item.partition("=")
        os.environ[key] = value

    if cfg.print_config:
        sys.stdout.write(cfg.to_python())
        sys.exit(0)
    if cfg.check_config:
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

    from .arbiter import Arbiter
    from .logging import setup_logging

    try:
        setup_logging(cfg.errorlog, cfg.loglevel, cfg.accesslog)
    except OSError as exc:
        _fail(f"errorlog/accesslog: cannot open: {exc}", EXIT_USAGE)
    start_cwd = os.getcwd()
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            _fail(f"chdir: {exc.strerror}: {cfg.chdir} ({cfg.sources['chdir']})", EXIT_USAGE)
    os.umask(cfg.umask)

    def reload_config() -> Config:
        new = build_config(argv, cwd=start_cwd)
        new.values["chdir"] = None
        return new

    # The master has changed directory already; the app loads from here.
    cfg.values["chdir"] = None
    try:
        Arbiter(cfg, reload_config).run()
    except OSError as exc:
        # Bind failures and the like: one line, not a traceback.
        _fail(str(exc), 1)
