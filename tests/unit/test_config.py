"""Settings: gunicorn's config files and command lines read as gunicorn
reads them, with typo protection kept (issue 13)."""

from __future__ import annotations

import logging
import textwrap

import click
import pytest

from forkserve.cli import build_config, command
from forkserve.config import (ALIASES, BY_NAME, HEAD_CAP, HOOKS, Config, ConfigError,
                              gunicorn_outcome, load_config_file, near_miss)
from forkserve.gunicorn_compat import FOREIGN, GUNICORN_NAMES, Outcome
from forkserve.http.request import Limits
from forkserve.sockets import parse_address

gunicorn_config = pytest.importorskip("gunicorn.config")


def _load(tmp_path, text: str, name: str = "conf.py") -> Config:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    cfg = Config()
    load_config_file(cfg, str(path))
    return cfg


def _build(argv=(), environ=None, cwd=None) -> Config:
    return build_config([*argv, "app:application"], environ or {}, cwd=str(cwd) if cwd else None)


def _warnings(cfg: Config) -> list[str]:
    return [line for level, line in cfg.notes.values() if level >= logging.WARNING]


# -- every gunicorn setting and flag is known ----------------------------------

def test_every_gunicorn_setting_is_known_with_one_outcome():
    theirs = [s.name for s in gunicorn_config.KNOWN_SETTINGS]
    assert sorted(theirs) == sorted(GUNICORN_NAMES)
    for name in theirs:
        kinds = [name in BY_NAME, name in ALIASES, name in HOOKS, name in FOREIGN]
        assert kinds.count(True) == 1, name
        outcome, _, note = gunicorn_outcome(name)
        assert note, name


def _gunicorn_flags():
    for s in gunicorn_config.KNOWN_SETTINGS:
        for flag in s.cli or ():
            yield s, flag


@pytest.mark.parametrize("setting, flag", list(_gunicorn_flags()),
                         ids=[f for _, f in _gunicorn_flags()])
def test_every_gunicorn_flag_is_parsed(setting, flag):
    switch = getattr(setting, "action", None) in ("store_true", "store_const")
    args = [flag] if switch else [flag, _a_value(setting.name)]
    ctx = command.make_context("forkserve", [*args, "app:application"])
    assert ctx.params["app"] == "app:application"


def _a_value(name: str) -> str:
    return {"bind": "127.0.0.1:9", "worker_class": "sync", "loglevel": "info",
            "forwarded_allow_ips": "*", "raw_env": "A=1", "umask": "0",
            "user": "0", "group": "0", "config": "x.py", "asgi_lifespan": "on",
            "pythonpath": "x", "proxy_protocol": "off"}.get(name, "1")


@pytest.mark.parametrize("name", [n for n, f in FOREIGN.items() if f.flags])
def test_foreign_flags_reach_their_setting(name):
    f = FOREIGN[name]
    args = [f.flags[0]] if f.is_flag else [f.flags[0], "x"]
    try:
        cfg = _build(args)
    except ConfigError as exc:
        assert f.outcome is Outcome.REFUSED and exc.name == name
        return
    assert f.outcome is Outcome.NO_EFFECT
    if f.needs or (f.is_flag and f.is_quiet(f.flag_value)):
        assert name not in cfg.foreign and not _warnings(cfg)
    else:
        assert cfg.foreign[name][1] == "command line" and len(_warnings(cfg)) == 1


# -- config files: helpers ignored, typos caught --------------------------------

TIANGOLO_STYLE = """
    import json
    import multiprocessing
    import os

    workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
    max_workers_str = os.getenv("MAX_WORKERS")
    use_max_workers = int(max_workers_str) if max_workers_str else None
    web_concurrency_str = os.getenv("WEB_CONCURRENCY", None)
    host = os.getenv("HOST", "0.0.0.0")
    port = os.getenv("PORT", "80")
    bind_env = os.getenv("BIND", None)
    use_loglevel = os.getenv("LOG_LEVEL", "info")
    use_bind = bind_env if bind_env else f"{host}:{port}"
    cores = multiprocessing.cpu_count()
    workers_per_core = float(workers_per_core_str)
    default_web_concurrency = workers_per_core * cores
    web_concurrency = max(int(default_web_concurrency), 2)
    accesslog_var = os.getenv("ACCESS_LOG", "-")
    use_accesslog = accesslog_var or None
    errorlog_var = os.getenv("ERROR_LOG", "-")
    use_errorlog = errorlog_var or None
    graceful_timeout_str = os.getenv("GRACEFUL_TIMEOUT", "120")
    timeout_str = os.getenv("TIMEOUT", "120")
    keepalive_str = os.getenv("KEEP_ALIVE", "5")

    loglevel = use_loglevel
    workers = web_concurrency
    bind = use_bind
    errorlog = use_errorlog
    worker_tmp_dir = "/dev/shm"
    accesslog = use_accesslog
    graceful_timeout = int(graceful_timeout_str)
    timeout = int(timeout_str)
    keepalive = int(keepalive_str)
    log_data = {"loglevel": loglevel, "workers": workers, "bind": bind}
"""


def test_helper_variables_are_the_files_own(tmp_path):
    cfg = _load(tmp_path, TIANGOLO_STYLE)
    assert cfg.bind == ["0.0.0.0:80"] and cfg.timeout == 120.0 and cfg.keepalive == 5.0
    assert {"host", "port", "use_bind", "use_loglevel", "timeout_str", "log_data", "cores",
            "workers_per_core", "web_concurrency"} <= set(cfg.ignored)
    assert not {"os", "json", "multiprocessing"} & set(cfg.ignored)  # modules: silent
    # One warning, for the one gunicorn setting without effect; helpers at debug level.
    assert _warnings(cfg) == ["worker_tmp_dir = '/dev/shm' has no effect: the heartbeat "
                              f"lives in shared memory, not in a file ({tmp_path / 'conf.py'})"]
    assert any("host: not a setting" in line for _, line in cfg.notes.values())
    printed = cfg.to_python()
    assert "# worker_tmp_dir = '/dev/shm'" in printed and "use_bind" in printed


@pytest.mark.parametrize("text, hint", [
    ("worker = 2\n", "did you mean 'workers'?"),
    ("keep_alive = 5\n", "did you mean 'keepalive'?"),
    ("timout = 5\n", "did you mean 'timeout'?"),
    ("max_request_jiter = 5\n", "did you mean 'max_requests_jitter'?"),
    ("acesslog = '-'\n", "did you mean 'accesslog'?"),
    ("preload = True\n", "did you mean 'preload_app'? (--preload is its command-line flag)"),
    ("log_level = 'debug'\n", "did you mean 'loglevel'?"),
    ("worker_tmp_dirs = '/dev/shm'\n", "did you mean 'worker_tmp_dir'?"),
    ("def post_forks(server, worker):\n    pass\n", "did you mean 'post_fork'?"),
    ("def worker_init(worker):\n    pass\n", "did you mean 'worker_int' or 'post_worker_init'?"),
])
def test_a_near_miss_is_an_error_naming_the_setting_and_file(tmp_path, text, hint):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    kind = "server hook" if text.startswith("def ") else "setting"
    assert f"unknown {kind}; {hint}" in str(info.value)
    assert str(tmp_path / "conf.py") in str(info.value)


def test_a_near_miss_of_a_setting_the_file_also_sets_is_a_helper(tmp_path):
    cfg = _load(tmp_path, """
        import os
        log_level = os.getenv("LOG_LEVEL", "warning")
        loglevel = log_level
        worker = 3
        workers = worker
    """)
    assert cfg.loglevel == "warning" and cfg.workers == 3
    assert {"log_level", "worker"} <= set(cfg.ignored)


@pytest.mark.parametrize("name", [
    "host", "port", "cores", "use_bind", "bind_env", "log_data", "command", "gunicorn_conf",
    "logger", "use_loglevel", "timeout_str", "graceful_timeout_str", "keepalive_str",
    "max_workers", "web_concurrency", "workers_per_core", "statsd_port", "env", "name", "pid",
    "debug", "logfile", "log_dir", "num_workers", "threads_per_worker", "bind_address",
])
def test_helper_names_are_not_typos(name):
    assert near_miss(name, list(BY_NAME) + list(FOREIGN)) == []


def test_a_hint_never_points_at_a_different_kind_of_thing(tmp_path):
    # A value near a hook's name is not that hook, a function near a
    # setting's name is not that setting: both are the file's own.
    cfg = _load(tmp_path, "on_exits = 1\ndef timeouts():\n    return 3\n")
    assert set(cfg.ignored) == {"on_exits", "timeouts"}


def test_exact_gunicorn_names_get_their_own_message_never_a_hint(tmp_path):
    cfg = _load(tmp_path, "worker_tmp_dir = '/dev/shm'\nspew = True\nreload = True\n")
    lines = _warnings(cfg)
    assert len(lines) == 2
    assert all("did you mean" not in line for line in lines)
    assert any(line.startswith("spew = True has no effect: forkserve has no line tracer")
               for line in lines)
    assert cfg.reload is True
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "paste = 'development.ini'\n")
    assert "did you mean" not in str(info.value) and "paste.deploy.loadapp" in str(info.value)


def test_other_cases_classes_and_underscores_are_the_files_own(tmp_path):
    cfg = _load(tmp_path, """
        WORKERS = 4
        Bind = "x"
        _timeout = 3
        class Worker:
            pass
    """)
    assert cfg.workers == 1 and not cfg.ignored and cfg.sources["workers"] == "default"


@pytest.mark.parametrize("text", [
    "daemon = False\nkeyfile = None\ncertfile = None\nreload = False\nspew = False\n",
    "secure_scheme_headers = {'X-Forwarded-Proto': 'https'}\n",
    "secure_scheme_headers = {'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', "
    "'X-FORWARDED-SSL': 'on'}\n",
    "proxy_protocol = 'off'\nprotocol = 'http'\nhttp_protocols = 'h1'\ndirty_apps = []\n",
    "logconfig_dict = {}\nsyslog = False\nstatsd_host = None\nsendfile = True\n",
])
def test_gunicorn_defaults_pass_without_a_word(tmp_path, text):
    cfg = _load(tmp_path, text)
    assert _warnings(cfg) == [] and cfg.foreign == {}


@pytest.mark.parametrize("text, needle", [
    ("protocol = 'uwsgi'\n", "nginx: proxy_pass, not uwsgi_pass"),
    ("paste = 'development.ini'\n", "paste.deploy.loadapp"),
    ("dirty_apps = ['x:y']\n", "task queue"),
    ("http2_cleartext = 'upgrade'\n", "h2c"),
])
def test_refused_settings_say_what_to_use(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert needle in str(info.value)


def test_no_effect_setting_warns_once_whatever_sets_it(tmp_path):
    path = tmp_path / "conf.py"
    path.write_text("worker_tmp_dir = '/tmp'\n")
    cfg = _build(["-c", str(path), "--worker-tmp-dir", "/dev/shm"])
    lines = _warnings(cfg)
    assert lines == ["worker_tmp_dir = '/dev/shm' has no effect: the heartbeat lives in shared "
                     "memory, not in a file (command line)"]


def test_aliases(tmp_path):
    cfg = _load(tmp_path, "asgi_lifespan = 'off'\nwebsocket_max_message_size = 1024\n")
    assert cfg.lifespan == "off" and cfg.ws_max_size == 1024
    assert cfg.sources["lifespan"].endswith(", as asgi_lifespan")
    cfg = _build(["--asgi-lifespan", "on", "--websocket-max-message-size", "2048"])
    assert cfg.lifespan == "on" and cfg.ws_max_size == 2048


def test_ssl_context_is_a_hook_taking_gunicorns_two_arguments(tmp_path):
    cfg = _load(tmp_path, """
        def ssl_context(config, default_ssl_context_factory):
            return default_ssl_context_factory()
        def on_exit(server):
            pass
    """)
    assert {"on_exit", "ssl_context"} <= set(cfg.hooks)
    assert not cfg.foreign and not _warnings(cfg)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "def ssl_context(config):\n    pass\n")
    assert "a server hook taking 2 argument(s) (config, default_ssl_context_factory)" \
        in str(info.value)


def test_log_settings_take_what_gunicorn_configs_write(tmp_path):
    cfg = _load(tmp_path, "import os\nerrorlog = os.getenv('ERROR_LOG') or None\n"
                          "loglevel = 'WARN'\n")
    assert cfg.errorlog == "-" and cfg.loglevel == "warning"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "loglevel = 'verbose'\n")  # gunicorn: info, silently
    assert "expected debug, info, warning, error or critical" in str(info.value)


# -- worker classes --------------------------------------------------------------

@pytest.mark.parametrize("given, kind", [
    ("sync", "sync"), ("gthread", "sync"), ("asgi", "asgi"),
    ("uvicorn.workers.UvicornWorker", "asgi"), ("uvicorn.workers.UvicornH11Worker", "asgi"),
    ("uvicorn_worker.UvicornWorker", "asgi"), ("gunicorn.workers.gthread.ThreadWorker", "sync"),
    ("gevent", "gevent"), ("gunicorn.workers.ggevent.GeventWorker", "gevent"),
])
def test_worker_class_names(given, kind):
    assert _build(["-k", given]).worker_class == kind


@pytest.mark.parametrize("given, needle", [
    ("eventlet", "gunicorn 27 dropped eventlet too: serve blocking I/O with -k sync --threads N"),
    ("tornado", "no tornado worker"),
    ("meinheld.gmeinheld.MeinheldWorker", "expected auto, sync, asgi or gevent"),
])
def test_worker_classes_forkserve_lacks_are_refused_with_what_to_use(given, needle):
    with pytest.raises(ConfigError) as info:
        _build(["-k", given])
    assert needle in str(info.value)


# -- what 0 means ----------------------------------------------------------------

def test_zero_means_what_gunicorn_means_or_is_refused_with_what_to_use():
    cfg = _build(["--threads", "0", "--backlog", "0", "-t", "0", "--max-requests", "0",
                  "--keep-alive", "0", "--limit-request-line", "0",
                  "--limit-request-fields", "0", "--limit-request-field_size", "0"])
    assert cfg.threads == 1 and cfg.backlog == 0 and cfg.timeout == 0 and cfg.keepalive == 0
    limits = Limits.from_config(cfg)
    # gunicorn: unlimited; here the head cap the reader always keeps (documented).
    assert limits.request_line == HEAD_CAP and limits.field_size == HEAD_CAP
    assert limits.fields == 32768  # gunicorn's own maximum
    assert f"{HEAD_CAP}-byte request head cap" in BY_NAME["limit_request_line"].doc
    for args, needle in ((["-w", "0"], "0 workers would serve nothing: give 1 or more"),
                         (["--worker-connections", "0"], "0 would accept no connection"),
                         (["--websocket-max-message-size", "0"], "always bounded here")):
        with pytest.raises(ConfigError) as info:
            _build(args)
        assert needle in str(info.value)


# -- the environment -------------------------------------------------------------

def test_web_concurrency_port_forwarded_allow_ips_are_defaults(tmp_path):
    env = {"WEB_CONCURRENCY": "3", "PORT": "5000", "FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    cfg = _build(environ=env)
    assert cfg.workers == 3 and cfg.bind == ["0.0.0.0:5000"]
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8"]
    assert cfg.sources["workers"] == "WEB_CONCURRENCY environment variable"
    conf = tmp_path / "c.py"
    conf.write_text("workers = 5\nbind = '127.0.0.1:7000'\n")
    cfg = _build(["-c", str(conf)], env)
    assert cfg.workers == 5 and cfg.bind == ["127.0.0.1:7000"]
    assert _build(["-w", "2", "-b", ":8080"], env).workers == 2
    with pytest.raises(ConfigError) as info:
        _build(environ={"WEB_CONCURRENCY": "lots"})
    assert "(WEB_CONCURRENCY environment variable)" in str(info.value)


def test_gunicorn_cmd_args_under_forkserve_cmd_args_and_the_command_line(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("workers = 5\ntimeout = 5\nkeepalive = 5\ngraceful_timeout = 5\n")
    env = {"GUNICORN_CMD_ARGS": f"-c {conf} --timeout 6 --keep-alive 6 -w 6 --threads 6",
           "FORKSERVE_CMD_ARGS": "--keep-alive 7 -w 7"}
    cfg = _build(["-w", "8"], env)
    assert (cfg.graceful_timeout, cfg.timeout, cfg.keepalive, cfg.workers, cfg.threads) == \
        (5, 6, 7, 8, 6)
    assert cfg.sources["timeout"] == "GUNICORN_CMD_ARGS"
    info = [line for level, line in cfg.notes.values() if level == logging.INFO]
    assert any(line.startswith("Applying GUNICORN_CMD_ARGS") and
               "FORKSERVE_CMD_ARGS is applied after it" in line for line in info)


def test_gunicorn_cmd_args_app_is_ignored_as_gunicorn_does():
    cfg = _build(environ={"GUNICORN_CMD_ARGS": "--workers 2 other:app"})
    assert cfg.wsgi_app == "app:application" and cfg.workers == 2
    assert any("'other:app' is not an option; ignored" in w for w in _warnings(cfg))


def test_gunicorn_conf_py_is_read_when_there_is_no_forkserve_conf_py(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    cfg = _build(cwd=tmp_path)
    assert cfg.workers == 4
    assert any("Reading ./gunicorn.conf.py" in line for _, line in cfg.notes.values())
    (tmp_path / "forkserve.conf.py").write_text("workers = 2\n")
    cfg = _build(cwd=tmp_path)
    assert cfg.workers == 2
    assert any("./gunicorn.conf.py is not read" in line for _, line in cfg.notes.values())


def test_config_from_python_module_and_file_prefix(tmp_path, monkeypatch):
    pkg = tmp_path / "deploy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "gunicorn_settings.py").write_text("workers = 3\nhost = '0.0.0.0'\n")
    monkeypatch.chdir(tmp_path)
    cfg = _build(["-c", "python:deploy.gunicorn_settings"])
    assert cfg.workers == 3 and cfg.ignored == {"host": "python:deploy.gunicorn_settings"}
    (pkg / "gunicorn_settings.py").write_text("workers = 4\n")
    assert _build(["-c", "python:deploy.gunicorn_settings"]).workers == 4  # read afresh
    with pytest.raises(ConfigError) as info:
        _build(["-c", "python:deploy.missing"])
    assert "cannot import the config module" in str(info.value)
    (tmp_path / "g.conf").write_text("workers = 6\n")
    assert _build(["-c", "file:g.conf"]).workers == 6


# -- command-line flags ------------------------------------------------------------

@pytest.mark.parametrize("flag, message", [
    ("--reloadd", "no such option: --reloadd; did you mean --reload?"),
    ("--daemonize", "no such option: --daemonize"),
    ("--keyfil", "no such option: --keyfil; did you mean --keyfile?"),
    ("--wokers", "no such option: --wokers; did you mean --workers?"),
])
def test_unknown_flags_get_only_typo_hints(flag, message):
    with pytest.raises(click.UsageError) as info:
        _build([flag, "1"])
    assert info.value.format_message() == message


@pytest.mark.parametrize("args, warned", [
    (["--spew"], "spew = True has no effect"),
    (["--no-sendfile"], "sendfile = False has no effect"),
    (["--worker-tmp-dir", "/dev/shm"], "worker_tmp_dir = '/dev/shm' has no effect"),
    (["--logger-class", "app.Logger"], "logger_class = 'app.Logger' has no effect"),
    (["--statsd-host", "127.0.0.1:8125", "--statsd-prefix", "app"], None),  # implemented
    (["--certfile", "", "--ciphers", "ECDHE"], None),
])
def test_gunicorn_flags_without_effect_warn(args, warned):
    # One line for a setting without effect; none for those that matter only
    # with another (statsd_prefix, ciphers), as in gunicorn without it.
    lines = _warnings(_build(args))
    if warned is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(warned) and "(command line)" in lines[0]


def test_daemon_and_friends_are_settings():
    cfg = _build(["-D", "-R", "--capture-output"])
    assert cfg.daemon and cfg.enable_stdio_inheritance and cfg.capture_output
    assert _warnings(cfg) == []


# -- bind ----------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    (":8080", "0.0.0.0:8080"), ("0.0.0.0:80", "0.0.0.0:80"), ("[::]:80", "[::]:80"),
    ("unix:/run/app.sock", "unix:/run/app.sock"), ("unix://run/x.sock", "unix:run/x.sock"),
    ("fd://3", "fd://3"), ("tcp://127.0.0.1:5000", "127.0.0.1:5000"),
    ("localhost", "localhost:8000"), ("[::1]", "[::1]:8000"),
])
def test_bind_forms_gunicorn_accepts(text, shown):
    assert str(parse_address(text)) == shown


# -- proxy_protocol, proxy_allow_ips, secure_scheme_headers: gunicorn's values --------

@pytest.mark.parametrize("value, mode", [
    ("True", "auto"), ("False", "off"), ("None", "off"), ("'v1'", "v1"), ("'V2'", "v2"),
    ("'auto'", "auto"), ("'true'", "auto"), ("'0'", "off"), ("'none'", "off"),
])
def test_proxy_protocol_takes_gunicorns_values(tmp_path, value, mode):
    cfg = _load(tmp_path, f"proxy_protocol = {value}\n")
    assert cfg.proxy_protocol == mode and _warnings(cfg) == []
    assert gunicorn_config.validate_proxy_protocol(eval(value)) == mode


def test_proxy_protocol_flags():
    assert _build(["--proxy-protocol", "--workers", "1"]).proxy_protocol == "auto"
    assert _build(["--proxy-protocol", "v1"]).proxy_protocol == "v1"
    cfg = _build(["--proxy-protocol", "v2", "--proxy-allow-from", "10.0.0.0/8,unix"])
    assert cfg.proxy_protocol == "v2" and cfg.proxy_allow_ips == ["10.0.0.0/8", "unix"]
    with pytest.raises(ConfigError, match="off, v1, v2 or auto"):
        _build(["--proxy-protocol", "v3"])
    with pytest.raises(ConfigError, match="proxy_allow_ips"):
        _build(["--proxy-allow-from", "not-an-ip"])


def test_secure_scheme_headers_and_forwarder_headers(tmp_path):
    cfg = _load(tmp_path, "secure_scheme_headers = {'X-SCHEME': 'secure'}\n"
                          "forwarder_headers = 'script_name, REMOTE_USER'\n")
    assert cfg.secure_scheme_headers == {"X-SCHEME": "secure"}
    assert cfg.forwarder_headers == ["SCRIPT_NAME", "REMOTE_USER"]
    with pytest.raises(ConfigError, match="secure_scheme_headers"):
        _load(tmp_path, "secure_scheme_headers = ['X-SCHEME']\n")
    with pytest.raises(ConfigError, match="secure_scheme_headers"):
        _load(tmp_path, "secure_scheme_headers = {'X SCHEME': 'on'}\n")
