"""Refusals and close-match hints (issue 13, item 7): a hint names only a
typo of the same kind of thing (a flag for a flag, a hook for a function,
a setting for a value, a worker class for a worker class), never a
neighbour that means something else (--preload for --reload).

The issue's cases (worker_tmp_dir, --reload, --daemon, --keyfile,
-k gevent) are checked for what must hold whether forkserve implements
them or refuses them (other branches implement reload, TLS and gevent):
no hint pointing elsewhere, and a refusal says what to use.  The
misspellings stay near misses whatever those branches do.
"""

from __future__ import annotations

import textwrap

import click
import pytest

from forkserve.cli import build_config
from forkserve.config import ConfigError, near_miss


def _outcome(argv=(), conf: str = "", tmp_path=None) -> str:
    """The refusal line, or "" if the settings are taken."""
    if conf:
        (tmp_path / "conf.py").write_text(textwrap.dedent(conf))
        argv = ["-c", str(tmp_path / "conf.py"), *argv]
    try:
        build_config([*argv, "app:app"], {}, cwd=str(tmp_path) if tmp_path else None)
    except click.UsageError as exc:
        return exc.format_message()
    except ConfigError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("argv", [
    ["--reload"], ["--daemon"], ["--keyfile", "key.pem"], ["--certfile", "c.pem"],
    ["--worker-tmp-dir", "/dev/shm"], ["-k", "gevent"], ["-k", "eventlet"],
])
def test_gunicorns_own_flags_never_get_a_hint(argv):
    line = _outcome(argv)
    assert "did you mean" not in line
    assert "\n" not in line


@pytest.mark.parametrize("conf", [
    "worker_tmp_dir = '/dev/shm'\n", "reload = True\n", "daemon = True\n",
    "keyfile = '/etc/ssl/key.pem'\ncertfile = '/etc/ssl/cert.pem'\n",
    "worker_class = 'gevent'\n",
])
def test_gunicorns_own_names_in_a_config_file_never_get_a_hint(tmp_path, conf):
    assert "did you mean" not in _outcome(conf=conf, tmp_path=tmp_path)


@pytest.mark.parametrize("worker, needle", [
    ("gevent", "-k sync --threads N"),
    ("eventlet", "-k sync --threads N"),
    ("tornado", "-k asgi"),
    ("egg:meinheld#gmeinheld", "expected auto, sync, asgi or gevent"),
    ("gunicorn.workers.ggevent.GeventWorker", "gevent"),
])
def test_a_refused_worker_class_says_what_to_use(worker, needle):
    line = _outcome(["-k", worker])
    if line:  # gevent may be served by another branch's worker
        assert needle in line and "did you mean" not in line


@pytest.mark.parametrize("argv, hint", [
    (["--relaod"], "did you mean --reload?"),
    (["--reloadd"], "did you mean --reload?"),
    (["--preloads"], "did you mean --preload?"),      # not --reload too
    (["--reloads"], "did you mean --reload?"),        # not --preload too
    (["--deamon"], "did you mean --daemon?"),
    (["--keyfil", "k.pem"], "did you mean --keyfile?"),
    (["--key-file", "k.pem"], "did you mean --keyfile?"),
    (["--worker-tmpdir", "/dev/shm"], "did you mean --worker-tmp-dir?"),
    (["--asgi-lifespn", "on"], "did you mean --asgi-lifespan?"),
    (["-k", "gthred"], "did you mean 'gthread'?"),
    (["-k", "syncc"], "did you mean 'sync'?"),
])
def test_misspelt_flags_and_worker_classes_get_the_one_they_are_near(argv, hint):
    line = _outcome(argv)
    assert line.endswith(hint) or f"{hint} (" in line, line


@pytest.mark.parametrize("flag", ["--daemonize", "--access-log", "--preload-app", "--gevent"])
def test_a_flag_that_is_no_typo_gets_no_hint(flag):
    assert _outcome([flag, "x"]) == f"no such option: {flag}"


@pytest.mark.parametrize("conf, line", [
    ("worker_tmp_dr = '/dev/shm'\n",
     "worker_tmp_dr: unknown setting; did you mean 'worker_tmp_dir'?"),
    ("relaod = True\n", "relaod: unknown setting; did you mean 'reload'?"),
    ("deamon = True\n", "deamon: unknown setting; did you mean 'daemon'?"),
    ("def post_worker_int(worker):\n    pass\n",
     "post_worker_int: unknown server hook; did you mean 'post_worker_init'?"),
    ("def when_redy(server):\n    pass\n",
     "when_redy: unknown server hook; did you mean 'when_ready'?"),
])
def test_misspelt_config_names_name_the_same_kind_of_thing(tmp_path, conf, line):
    assert _outcome(conf=conf, tmp_path=tmp_path).startswith(line)


def test_only_the_closest_names_are_offered():
    # One letter from preload, two from reload: preload only.
    assert near_miss("preloads", ["preload", "reload"]) == ["preload"]
    assert near_miss("reloads", ["preload", "reload"]) == ["reload"]
    # Equally close: both.
    assert near_miss("worker_init", ["worker_int", "post_worker_init"]) == \
        ["worker_int", "post_worker_init"]


# -- gunicorn 27's names for the ASGI settings -------------------------------------

@pytest.mark.parametrize("conf, lifespan", [
    ("asgi_lifespan = 'off'\n", "off"), ("asgi_lifespan = 'ON'\n", "on"),
    ("asgi_lifespan = None\n", "auto"), ("asgi_lifespan = ' Off '\n", "off"),
])
def test_asgi_lifespan_takes_what_gunicorn_takes(tmp_path, conf, lifespan):
    (tmp_path / "conf.py").write_text(conf)
    cfg = build_config(["-c", str(tmp_path / "conf.py"), "app:app"], {})
    assert cfg.lifespan == lifespan and cfg.sources["lifespan"].endswith("as asgi_lifespan")


def test_asgi_names_on_the_command_line_and_their_refusals(tmp_path):
    cfg = build_config(["--asgi-lifespan", "off", "--websocket-max-message-size", "1048576",
                        "app:app"], {})
    assert cfg.lifespan == "off" and cfg.ws_max_size == 1048576
    assert "expected one of auto, on, off" in _outcome(["--asgi-lifespan", "maybe"])
    # gunicorn's 0 is "no limit"; forkserve keeps a bound and says what to give.
    (tmp_path / "conf.py").write_text("websocket_max_message_size = 0\n")
    line = _outcome(conf="websocket_max_message_size = 0\n", tmp_path=tmp_path)
    assert line.startswith("websocket_max_message_size: expected an integer >= 1, got 0 "
                           "(a WebSocket message is always bounded here")
