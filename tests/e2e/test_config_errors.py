"""Config files, precedence, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import APPS, ROOT, run_forkserve

pytestmark = pytest.mark.e2e


def _write(tmp_path, text: str):
    path = tmp_path / "conf.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("worker = 2\n", "worker: unknown setting; did you mean 'workers'?"),
    ("workers = 'four'\n", "workers: expected an integer >= 1, got 'four'"),
    ("workers = 0\n", "workers: expected an integer >= 1, got 0 (0 workers would serve "
                      "nothing: give 1 or more)"),
    ("bind = ['127.0.0.1:99999']\n", "bind: invalid port in '127.0.0.1:99999'"),
    ("bind = 'fe80::1:80'\n", "bind: an IPv6 address is written [ADDR]:PORT"),
    ("timeout = -1\n", "timeout: expected a number of seconds >= 0"),
    ("worker_class = 'eventlet'\n", "worker_class: 'eventlet' is not available: gunicorn 27 "
                                    "dropped eventlet too: serve blocking I/O with -k sync"),
    ("worker_class = 'nope'\n", "worker_class: expected auto, sync, asgi or gevent"),
    ("certfile = 'cert.pem'\n", "certfile: cannot read cert.pem: No such file or directory"),
    ("def post_forks(server, worker):\n    pass\n", "post_forks: unknown server hook; did you mean 'post_fork'?"),
    ("def post_fork(server):\n    pass\n", "post_fork: a server hook taking 2 argument(s)"),
    ("workers = (\n", "config: syntax error on line"),
    ("raise RuntimeError('nope')\n", "config: the file raised RuntimeError: nope"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, text, needle):
    conf = _write(tmp_path, text)
    proc = run_forkserve("-c", str(conf), "wsgi_basic:application")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert str(conf) in lines[0]
    assert "Booting" not in proc.stderr + proc.stdout


def test_missing_config_file(tmp_path):
    proc = run_forkserve("-c", str(tmp_path / "nope.py"), "wsgi_basic:application")
    assert proc.returncode == 2
    assert "cannot read the config file" in proc.stderr and "nope.py" in proc.stderr


def test_bad_flag_value_names_the_setting(tmp_path):
    proc = run_forkserve("-w", "many", "wsgi_basic:application")
    assert proc.returncode == 2
    assert proc.stderr.strip() == \
        "forkserve: error: workers: expected an integer >= 1, got 'many' (command line)"
    proc = run_forkserve("-b", "unix:", "wsgi_basic:application")
    assert proc.returncode == 2 and "bind: empty unix socket path" in proc.stderr


def test_no_app_is_a_usage_error():
    proc = run_forkserve()
    assert proc.returncode == 2 and "no application given" in proc.stderr


def test_precedence_defaults_file_env_cli(tmp_path):
    conf = _write(tmp_path, "workers = 3\ntimeout = 11\nkeepalive = 7\nbind = '127.0.0.1:9'\n")
    proc = run_forkserve("-c", str(conf), "--print-config", "-t", "13", "wsgi_basic:application",
                         env={"FORKSERVE_CMD_ARGS": "-t 12 --keep-alive 8"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "workers = 3  # " + str(conf) in out            # file over default
    assert "keepalive = 8.0  # FORKSERVE_CMD_ARGS" in out   # env over file
    assert "timeout = 13.0  # command line" in out          # cli over env
    assert "graceful_timeout = 30.0\n" in out               # default


def test_print_config_output_is_a_loadable_config(tmp_path):
    proc = run_forkserve("-w", "3", "--threads", "4", "-b", "127.0.0.1:8123", "-b", "unix:/tmp/x.sock",
                         "--print-config", "wsgi_basic:application")
    assert proc.returncode == 0, proc.stderr
    conf = _write(tmp_path, proc.stdout)
    again = run_forkserve("-c", str(conf), "--print-config")
    assert again.returncode == 0, again.stderr
    strip = lambda text: [line.split("  #")[0] for line in text.splitlines()]  # noqa: E731
    assert strip(again.stdout) == strip(proc.stdout)


def test_check_config():
    ok = run_forkserve("--check-config", "wsgi_basic:application")
    assert ok.returncode == 0 and "WSGI app" in ok.stdout
    bad = run_forkserve("--check-config", "broken_import:application")
    assert bad.returncode == 3
    assert "this_module_does_not_exist" in bad.stderr
    missing = run_forkserve("--check-config", "wsgi_basic:nothing_here")
    assert missing.returncode == 3 and "has no attribute 'nothing_here'" in missing.stderr


def test_default_config_file_in_cwd(tmp_path):
    (tmp_path / "forkserve.conf.py").write_text("workers = 5\n")
    proc = run_forkserve("--print-config", "wsgi_basic:application", cwd=tmp_path)
    assert proc.returncode == 0
    assert "workers = 5  # forkserve.conf.py" in proc.stdout


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "forkserve", "--help"], capture_output=True,
                         text=True, cwd=str(ROOT), timeout=30)
    assert out.returncode == 0
    for flag in ("--bind", "--workers", "--worker-class", "--threads", "--timeout",
                 "--graceful-timeout", "--keep-alive", "--max-requests", "--max-requests-jitter",
                 "--pid", "--access-logfile", "--error-logfile", "--log-level", "--preload",
                 "--name", "--chdir", "--check-config", "--print-config"):
        assert flag in out.stdout, flag
    assert run_forkserve("--version").stdout.startswith("forkserve ")
    assert APPS.exists()


@pytest.mark.parametrize("args, given, detected", [
    (("-k", "asgi", "wsgi_basic:application"), "worker_class: asgi", "is a WSGI app"),
    (("-k", "uvicorn.workers.UvicornWorker", "wsgi_basic:application"), "worker_class: asgi",
     "is a WSGI app"),
    (("-k", "sync", "asgi_basic:app"), "worker_class: sync", "is an ASGI app"),
    (("-k", "gthread", "starlette_app:app"), "worker_class: sync", "is an ASGI app"),
])
def test_check_config_refuses_a_worker_class_the_app_cannot_run_under(args, given, detected):
    proc = run_forkserve("--check-config", *args)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("forkserve:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"forkserve: error: {given}") and detected in lines[0], lines[0]
    assert "OK" not in proc.stdout


@pytest.mark.parametrize("args, kind", [
    (("-k", "asgi", "asgi_basic:app"), "ASGI"),
    (("-k", "sync", "wsgi_basic:application"), "WSGI"),
    (("starlette_app:app",), "ASGI"),
])
def test_check_config_accepts_a_matching_worker_class(args, kind):
    proc = run_forkserve("--check-config", *args)
    assert proc.returncode == 0, proc.stderr
    assert f"config OK; {args[-1]} is " in proc.stdout and f"{kind} app" in proc.stdout


@pytest.mark.parametrize("preload", [False, True], ids=["workers-load", "preload"])
@pytest.mark.parametrize("args, detected", [
    (("-k", "asgi", "wsgi_basic:application"), "is a WSGI app"),
    (("-k", "sync", "asgi_basic:app"), "is an ASGI app"),
])
def test_boot_refuses_a_worker_class_the_app_cannot_run_under(forkserve, args, detected,
                                                              preload):
    # Before: the server booted and answered every request with a 500.
    server = forkserve(args[-1], *args[:-1], "-w", "2", *(["--preload"] if preload else []),
                       wait=False)
    assert server.wait_exit(20) == 3, server.log
    log = server.log
    refusals = [line for line in log.splitlines() if f"worker_class: {args[1]}" in line]
    assert refusals and detected in refusals[0], log
    assert "Booting worker" not in log
