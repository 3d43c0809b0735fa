"""gunicorn's config files and command lines, run unchanged under forkserve
and under gunicorn 27 in the same test (issue 13).

Each case is written the way real projects write them (helper variables,
conditionals on environment variables, worker formulas, logging dicts,
hooks, Procfile and Cloud Run command lines, a Docker image's
gunicorn_conf.py): written for this suite, not copied.  Both servers run it
as real processes in a directory of their own, on loopback, and must reach
the same outcome: served with the same answer to the same request, or both
refused.  A forkserve server must then stop promptly on TERM.

One deliberate change from the originals: where they bind ``0.0.0.0`` (or
``:$PORT``, all interfaces) these bind ``127.0.0.1``, since servers started
here listen on loopback only; the all-interfaces forms are parsed by the unit
tests (tests/unit/test_config.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from conftest import APPS, ROOT, SERVER_ENV, free_port, parse_response, read_until_close

pytestmark = pytest.mark.e2e
pytest.importorskip("gunicorn", minversion="27")

SERVERS = ("forkserve", "gunicorn")
# Environment variables either server reads: a test gives them explicitly.
_SERVER_ENV = (*SERVER_ENV, "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "SENDFILE")
STOP_WITHIN = 10.0  # seconds from TERM to a forkserve master gone (no request in flight)


@dataclass
class Case:
    """One config file or command line, as a project would ship it.

    ``argv`` follows the server's name; ``@PORT@`` and ``@DIR@`` (the
    case's directory) are filled in there, in ``files`` and in ``env``.
    With ``shell``, ``argv`` is a shell command line (a Procfile's), run by
    ``sh -c`` with ``$SERVER`` naming the server.
    """

    id: str
    argv: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    answer: bytes | None = b"compat ok"   # None: both must refuse to start
    exit_zero: bool = False               # a one-shot command (--check-config)
    shell: bool = False
    unix: str = ""                        # connect to this socket (under @DIR@) instead
    preamble: bytes = b""                 # sent before the request (a PROXY header)
    status: int = 200                     # another: both answer it (bodies may differ)
    # Speak TLS, checking the server against the test CA (@CERTS@, made by
    # tests/tlscerts.py); "client": with a client certificate too.
    tls: str = ""
    daemon_pidfile: str = ""              # the launcher detaches; the master is in this file
    occupy_port: bool = False             # something else already listens on @PORT@
    then_files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # must contain
    # forkserve's WARNING lines, each starting with one of these, in order;
    # and lines its log must contain.
    warnings: tuple[str, ...] = ()
    logged: tuple[str, ...] = ()


TIANGOLO_STYLE = """\
import json
import multiprocessing
import os

workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
max_workers_str = os.getenv("MAX_WORKERS")
use_max_workers = None
if max_workers_str:
    use_max_workers = int(max_workers_str)
web_concurrency_str = os.getenv("WEB_CONCURRENCY", None)

host = os.getenv("HOST", "0.0.0.0")
port = os.getenv("PORT", "80")
bind_env = os.getenv("BIND", None)
use_loglevel = os.getenv("LOG_LEVEL", "info")
if bind_env:
    use_bind = bind_env
else:
    use_bind = f"{host}:{port}"

cores = multiprocessing.cpu_count()
workers_per_core = float(workers_per_core_str)
default_web_concurrency = workers_per_core * cores
if web_concurrency_str:
    web_concurrency = int(web_concurrency_str)
    assert web_concurrency > 0
else:
    web_concurrency = max(int(default_web_concurrency), 2)
    if use_max_workers:
        web_concurrency = min(web_concurrency, use_max_workers)
accesslog_var = os.getenv("ACCESS_LOG", "-")
use_accesslog = accesslog_var or None
errorlog_var = os.getenv("ERROR_LOG", "-")
use_errorlog = errorlog_var or None
graceful_timeout_str = os.getenv("GRACEFUL_TIMEOUT", "120")
timeout_str = os.getenv("TIMEOUT", "120")
keepalive_str = os.getenv("KEEP_ALIVE", "5")

# Gunicorn config variables
loglevel = use_loglevel
workers = web_concurrency
bind = use_bind
errorlog = use_errorlog
worker_tmp_dir = "/dev/shm"
accesslog = use_accesslog
graceful_timeout = int(graceful_timeout_str)
timeout = int(timeout_str)
keepalive = int(keepalive_str)

# For debugging and testing
log_data = {
    "loglevel": loglevel,
    "workers": workers,
    "bind": bind,
    "graceful_timeout": graceful_timeout,
    "timeout": timeout,
    "keepalive": keepalive,
    "errorlog": errorlog,
    "accesslog": accesslog,
    "workers_per_core": workers_per_core,
    "use_max_workers": use_max_workers,
    "host": host,
    "port": port,
}
print(json.dumps(log_data))
"""

EXAMPLE_CONFIG_WITH_HOOKS = """\
# Server socket
bind = '127.0.0.1:@PORT@'
backlog = 2048

# Worker processes
workers = 2
worker_class = 'sync'
worker_connections = 1000
timeout = 30
keepalive = 2

# Debugging
spew = False

# Server mechanics
daemon = False
raw_env = [
    'COMPAT_GREETING=hooked',
]
pidfile = None
umask = 0
user = None
group = None
tmp_upload_dir = None

# Logging
errorlog = '-'
loglevel = 'info'
accesslog = '-'
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# Process naming
proc_name = None

# Server hooks
def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)

def pre_fork(server, worker):
    pass

def pre_exec(server):
    server.log.info("Forked child, re-executing.")

def when_ready(server):
    server.log.info("Server is ready. Spawning workers")
    import os
    with open(os.path.join(os.path.dirname(__file__), "ready.marker"), "w") as f:
        f.write("ready %d" % server.pid)

def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")

def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
"""

LOGGING_DICT = """\
import os

bind = "127.0.0.1:@PORT@"
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
accesslog = "-"

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "format": '{"time": "%(asctime)s", "level": "%(levelname)s", '
                      '"message": "%(message)s"}',
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        },
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
}
"""

UVICORN_WORKER_SUBCLASS = """\
from uvicorn.workers import UvicornWorker


class MyUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "off",
        "proxy_headers": True,
        "forwarded_allow_ips": "*",
        "root_path": "/api",
        "timeout_keep_alive": 10,
        "limit_concurrency": 100,
        "ws_max_size": 1048576,
        "headers": [("x-extra", "1")],
    }
"""

ROOT_PATH_APP = """\
async def app(scope, receive, send):
    assert scope["type"] == "http"  # lifespan is off
    body = f"{scope['root_path']} {scope['scheme']} {scope['client'][0]}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

LOGGING_TO_FILES = """\
import os

bind = "127.0.0.1:@PORT@"
LOG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "logs")
os.makedirs(LOG_DIR, exist_ok=True)

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["access_file"], "propagate": False,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "error"},
        "error_file": {"class": "logging.FileHandler", "formatter": "error",
                       "filename": os.path.join(LOG_DIR, "error.log")},
        "access_file": {"class": "logging.FileHandler", "formatter": "access",
                        "filename": os.path.join(LOG_DIR, "access.log")},
    },
    "formatters": {
        "error": {"format": "ERROR-LOG %(name)s %(levelname)s %(message)s"},
        "access": {"format": "ACCESS %(name)s %(message)s"},
    },
}
"""

CASES = [
    Case("docker-image-conf-uvicorn-worker",
         "-c gunicorn_conf.py -k uvicorn.workers.UvicornWorker compat_asgi:app",
         files={"gunicorn_conf.py": TIANGOLO_STYLE},
         env={"HOST": "127.0.0.1", "PORT": "@PORT@", "MAX_WORKERS": "2", "LOG_LEVEL": "info"},
         answer=b"compat asgi ok",
         warnings=("worker_tmp_dir = '/dev/shm' has no effect: the heartbeat lives in shared "
                   "memory",)),
    Case("heroku-procfile",
         "exec $SERVER compat_wsgi:application --bind 127.0.0.1:$PORT --log-file - "
         "--access-logfile -",
         env={"PORT": "@PORT@", "WEB_CONCURRENCY": "2"}, shell=True),
    Case("cloud-run",
         "exec $SERVER --bind 127.0.0.1:$PORT --workers 1 --threads 8 --timeout 0 "
         "compat_wsgi:application",
         env={"PORT": "@PORT@"}, shell=True),
    Case("gunicorn-conf-py-found-in-cwd", "compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             import multiprocessing
             import os

             bind = "127.0.0.1:" + os.environ.get("PORT", "8000")
             workers = min(multiprocessing.cpu_count() * 2 + 1, 3)
             worker_class = "gthread"
             threads = 2
             accesslog = "-"
             """)},
         env={"PORT": "@PORT@"},
         logged=("Reading ./gunicorn.conf.py, as gunicorn would (there is no "
                 "./forkserve.conf.py)",)),
    Case("gunicorn-cmd-args", "compat_wsgi:application",
         env={"GUNICORN_CMD_ARGS": "--bind=127.0.0.1:@PORT@ --workers=2 --access-logfile=- "
                                   "--timeout 60"},
         logged=("Applying GUNICORN_CMD_ARGS, as gunicorn would: --bind=127.0.0.1:",)),
    Case("example-config-with-hooks", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": EXAMPLE_CONFIG_WITH_HOOKS}, path="/env",
         answer=b"hooked", then_files={"ready.marker": ("ready",)}),
    Case("logging-dict", "-c config/gunicorn.py compat_wsgi:application",
         files={"config/gunicorn.py": LOGGING_DICT}, env={"LOG_LEVEL": "INFO"},
         logged=('"level": "INFO", "message": "Booting worker with pid',)),
    Case("logging-dict-to-files", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": LOGGING_TO_FILES},
         then_files={"logs/access.log": ("ACCESS gunicorn.access 127.0.0.1 - - [",
                                         '"GET / HTTP/1.1" 200 9 "-"'),
                     "logs/error.log": ("ERROR-LOG gunicorn.error INFO Booting worker with pid",
                                        "ERROR-LOG gunicorn.error INFO Listening at: ")}),
    Case("syslog-udp", "--log-syslog --log-syslog-to udp://127.0.0.1:9 --log-syslog-prefix app "
         "--log-syslog-facility local0 -b 127.0.0.1:@PORT@ compat_wsgi:application"),
    Case("capture-output-to-log-files", "--config gunicorn_config.py compat_wsgi:application",
         files={"gunicorn_config.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             workers = 2
             errorlog = "@DIR@/logs/error.log"
             accesslog = "@DIR@/logs/access.log"
             capture_output = True
             enable_stdio_inheritance = True
             loglevel = "info"
             """), "logs/.keep": ""},
         path="/print", answer=b"printed",
         then_files={"logs/error.log": ("compat: printed to stdout",
                                        "compat: printed to stderr"),
                     "logs/access.log": ("GET /print",)}),
    Case("behind-a-proxy", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             workers = 2
             forwarded_allow_ips = "*"
             proxy_allow_ips = "*"
             secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
             """)},
         path="/scheme", headers={"X-Forwarded-Proto": "https"}, answer=b"https"),
    Case("secure-scheme-default-ssl-header", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": 'bind = "127.0.0.1:@PORT@"\nforwarded_allow_ips = "127.0.0.1"\n'},
         path="/scheme", headers={"X-Forwarded-Ssl": "on"}, answer=b"https"),
    Case("secure-scheme-headers-set", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             forwarded_allow_ips = "127.0.0.1,::1"
             secure_scheme_headers = {
                 "X-FORWARDED-PROTOCOL": "ssl",
                 "X-FORWARDED-PROTO": "https",
             }
             """)},
         path="/scheme", headers={"X-Forwarded-Protocol": "ssl"}, answer=b"https"),
    # gunicorn matches the names as written against upper-cased request
    # headers: a name written in mixed case never matches.
    Case("secure-scheme-headers-mixed-case", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             secure_scheme_headers = {"X-Forwarded-Proto": "https"}
             """)},
         path="/scheme", headers={"X-Forwarded-Proto": "https"}, answer=b"http"),
    Case("secure-scheme-headers-other-value", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             secure_scheme_headers = {"X-FORWARDED-SSL": "on"}
             """)},
         path="/scheme", headers={"X-Forwarded-Ssl": "yes"}, answer=b"http"),
    Case("secure-scheme-headers-untrusted-peer", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             forwarded_allow_ips = "10.0.0.0/8"
             secure_scheme_headers = {"X-FORWARDED-SSL": "on"}
             """)},
         path="/scheme", headers={"X-Forwarded-Ssl": "on"}, answer=b"http"),
    Case("forwarder-headers-script-name", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             forwarded_allow_ips = "127.0.0.1"
             forwarder_headers = "SCRIPT_NAME,PATH_INFO,REMOTE_USER"
             """)},
         path="/sub/mounted", headers={"SCRIPT_NAME": "/sub", "REMOTE_USER": "ann"},
         answer=b"/sub ann"),
    Case("proxy-protocol-v1-from-haproxy", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             proxy_protocol = "v1"
             proxy_allow_ips = "127.0.0.1"
             """)},
         preamble=b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n",
         path="/remote", answer=b"192.0.2.7 4242"),
    Case("proxy-protocol-v2-flag", "-b 127.0.0.1:@PORT@ --proxy-protocol --workers 2 "
         "compat_wsgi:application",
         preamble=(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([198, 51, 100, 9])
                   + bytes([127, 0, 0, 1]) + b"\x11\x5c\x00\x50"),
         path="/remote", answer=b"198.51.100.9 4444"),
    Case("proxy-protocol-true-without-a-header", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": 'bind = "127.0.0.1:@PORT@"\nproxy_protocol = True\n'},
         path="/remote", answer=b"127.0.0.1"),
    Case("secure-scheme-headers-disagree", "-b 127.0.0.1:@PORT@ compat_wsgi:application",
         path="/scheme", headers={"X-Forwarded-Ssl": "on", "X-Forwarded-Proto": "http"},
         status=400),
    Case("proxy-protocol-untrusted-sender", "-b 127.0.0.1:@PORT@ --proxy-protocol v1 "
         "--proxy-allow-from 10.0.0.0/8 compat_wsgi:application",
         preamble=b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n", path="/remote", status=403),
    Case("proxy-protocol-malformed", "-b 127.0.0.1:@PORT@ --proxy-protocol auto "
         "compat_wsgi:application",
         preamble=b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 80\r\n", path="/remote", status=400),
    Case("python-module-config", "-c python:compat_settings compat_wsgi:application",
         env={"COMPAT_PORT": "@PORT@", "APP_ENV": "staging"}, path="/env",
         answer=b"from staging settings"),
    Case("file-prefix-config-without-py", "-c file:deploy/gunicorn.cfg compat_wsgi:application",
         files={"deploy/gunicorn.cfg": 'bind = "127.0.0.1:@PORT@"\nworkers = 2\n'}),
    Case("dockerfile-gthread",
         "--bind 127.0.0.1:@PORT@ --workers 2 --threads 4 --worker-class gthread "
         "--worker-tmp-dir /dev/shm --log-file=- --access-logfile=- compat_wsgi:application",
         warnings=("worker_tmp_dir = '/dev/shm' has no effect",)),
    Case("dockerfile-recycling",
         "-b 127.0.0.1:@PORT@ -w 2 --max-requests 1000 --max-requests-jitter 50 --timeout 120 "
         "--graceful-timeout 30 --keep-alive 5 --log-level debug compat_wsgi:application"),
    Case("env-flags",
         "-b 127.0.0.1:@PORT@ -e COMPAT_GREETING=from-flag --env OTHER=1 compat_wsgi:application",
         path="/env", answer=b"from-flag"),
    Case("chdir", "--chdir @DIR@/src -b 127.0.0.1:@PORT@ compat_chdir_app:application",
         files={"src/compat_chdir_app.py": (
             "def application(environ, start_response):\n"
             "    start_response('200 OK', [('Content-Length', '8')])\n"
             "    return [b'chdir ok']\n")},
         answer=b"chdir ok"),
    Case("pythonpath", "--pythonpath @DIR@/lib -b 127.0.0.1:@PORT@ compat_lib_app:application",
         files={"lib/compat_lib_app.py": (
             "def application(environ, start_response):\n"
             "    start_response('200 OK', [('Content-Length', '6')])\n"
             "    return [b'lib ok']\n")},
         answer=b"lib ok"),
    Case("preload-reuse-port",
         "--preload --reuse-port -w 2 -b 127.0.0.1:@PORT@ compat_wsgi:application"),
    Case("unix-socket-for-nginx",
         "--bind unix:@DIR@/app.sock --umask 007 -w 2 compat_wsgi:application",
         unix="app.sock"),
    Case("dev-reload", "--reload --bind 127.0.0.1:@PORT@ compat_wsgi:application",
         logged=("reload: watching",)),
    Case("statsd", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             import os

             bind = "127.0.0.1:@PORT@"
             statsd_host = os.environ.get("STATSD_HOST", "127.0.0.1:9125")
             statsd_prefix = "compat"
             dogstatsd_tags = "env:test,service:compat"
             """)}),  # nothing listens on 9125: both serve, neither complains
    Case("flask-app-factory", "-w 2 -b 127.0.0.1:@PORT@ 'compat_wsgi:create_app()'",
         answer=b"factory"),
    Case("limit-request-line-0", "--limit-request-line 0 -b 127.0.0.1:@PORT@ "
         "compat_wsgi:application", path="/line?" + "q" * 10000, answer=b"10000"),
    Case("uvicorn-h11-worker",
         "-k uvicorn.workers.UvicornH11Worker -b 127.0.0.1:@PORT@ -w 1 compat_asgi:app",
         answer=b"compat asgi ok"),
    Case("own-uvicorn-worker-subclass",
         "-k myproj.workers.MyUvicornWorker -b 127.0.0.1:@PORT@ -w 1 myproj.main:app",
         files={"myproj/__init__.py": "",
                "myproj/workers.py": UVICORN_WORKER_SUBCLASS,
                "myproj/main.py": ROOT_PATH_APP},
         headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
         answer=b"/api https 203.0.113.9",
         warnings=("myproj.workers.MyUvicornWorker.CONFIG_KWARGS: forkserve cannot honour "
                   "headers=[('x-extra', '1')]",)),
    Case("gunicorn-27-asgi-names", "-c gunicorn.conf.py compat_asgi:app",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             bind = "127.0.0.1:@PORT@"
             worker_class = "asgi"
             asgi_lifespan = "on"
             websocket_max_message_size = 1048576
             """)},
         answer=b"compat asgi ok"),
    Case("several-binds", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": 'bind = ["127.0.0.1:@PORT@", "unix:@DIR@/also.sock"]\n'}),
    Case("daemon-with-pidfile",
         "-D --pid @DIR@/app.pid -b 127.0.0.1:@PORT@ --error-logfile @DIR@/error.log "
         "compat_wsgi:application",
         daemon_pidfile="app.pid"),
    # As Flask's deployment docs run gunicorn with gevent.
    Case("gevent-config", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             import multiprocessing

             bind = "127.0.0.1:@PORT@"
             workers = min(multiprocessing.cpu_count(), 2)
             worker_class = "gevent"
             worker_connections = 1000
             timeout = 30
             """)}),
    Case("gevent-class-path-app-factory",
         "-k gunicorn.workers.ggevent.GeventWorker -w 1 -b 127.0.0.1:@PORT@ "
         "'compat_wsgi:create_app()'", answer=b"factory"),
    Case("tls-command-line",
         "--certfile @CERTS@/server.pem --keyfile @CERTS@/server.key -w 2 "
         "-b 127.0.0.1:@PORT@ compat_wsgi:application",
         path="/scheme", answer=b"https", tls="server"),
    Case("tls-mutual-with-ssl-context-hook", "-c gunicorn.conf.py compat_asgi:app",
         files={"gunicorn.conf.py": textwrap.dedent("""\
             import ssl

             bind = "127.0.0.1:@PORT@"
             worker_class = "asgi"
             certfile = "@CERTS@/server.pem"
             keyfile = "@CERTS@/server.key"
             ca_certs = "@CERTS@/ca.pem"
             cert_reqs = ssl.CERT_REQUIRED
             ciphers = "ECDHE+AESGCM"
             do_handshake_on_connect = True

             def ssl_context(conf, default_ssl_context_factory):
                 context = default_ssl_context_factory()
                 context.minimum_version = ssl.TLSVersion.TLSv1_3
                 return context
             """)},
         path="/scheme", answer=b"https", tls="client"),
    Case("tls-refused-keyfile-missing",
         "--certfile @CERTS@/server.pem --keyfile @DIR@/missing.key -b 127.0.0.1:@PORT@ "
         "compat_wsgi:application", answer=None, tls="server"),
    Case("check-config", "--check-config -b 127.0.0.1:@PORT@ compat_wsgi:application",
         exit_zero=True, answer=None),
    Case("refused-config-raises", "-c gunicorn.conf.py compat_wsgi:application",
         files={"gunicorn.conf.py": 'import os\nworkers = int(os.environ["GUNICORN_WORKERS"])\n'},
         answer=None),
    Case("refused-app-missing", "-b 127.0.0.1:@PORT@ compat_no_such_module:app", answer=None),
    Case("refused-port-in-use", "-b 127.0.0.1:@PORT@ compat_wsgi:application", answer=None,
         occupy_port=True),
]


# -- running one server --------------------------------------------------------

@dataclass
class Outcome:
    kind: str                   # "served", "refused", "exited 0"
    answer: bytes | None = None
    detail: str = ""


_CERTS: list[Path] = []  # the test CA's directory, once a TLS case made it


def _fill(text: str, port: int, workdir: Path) -> str:
    text = text.replace("@PORT@", str(port)).replace("@DIR@", str(workdir))
    return text.replace("@CERTS@", str(_CERTS[0])) if _CERTS else text


def _ask(case: Case, port: int, workdir: Path) -> bytes | None:
    """The response body to the case's request, or None if nothing answers."""
    head = [f"GET {case.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
            *(f"{k}: {v}" for k, v in case.headers.items())]
    try:
        if case.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(workdir / case.unix))
        else:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return None
    if case.tls:
        ctx = ssl.create_default_context(cafile=str(_CERTS[0] / "ca.pem"))
        if case.tls == "client":
            ctx.load_cert_chain(str(_CERTS[0] / "client.pem"), str(_CERTS[0] / "client.key"))
        try:
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        except OSError:
            sock.close()
            return None
    with sock:
        try:
            sock.sendall(case.preamble + ("\r\n".join(head) + "\r\n\r\n").encode())
            raw = read_until_close(sock)
        except OSError:
            return None
    if not raw:
        return None
    status, _, body = parse_response(raw)
    return f"{status} ".encode() + body


class Run:
    """One server running one case in a directory of its own."""

    def __init__(self, server: str, case: Case, base: Path) -> None:
        self.server = server
        self.case = case
        self.port = free_port()
        self.dir = base / server
        self.dir.mkdir()
        for name, text in case.files.items():
            path = self.dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_fill(text, self.port, self.dir))
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
        env["HOME"] = str(self.dir)  # gunicorn's control socket goes under it
        env.update({k: _fill(v, self.port, self.dir) for k, v in case.env.items()})
        server_cmd = [sys.executable, "-m", server]
        if case.shell:
            env["SERVER"] = " ".join(map(shlex.quote, server_cmd))
            cmd = ["sh", "-c", case.argv]
        else:
            cmd = server_cmd + shlex.split(_fill(case.argv, self.port, self.dir))
        self.log_path = self.dir / "output.log"
        self.pids: set[int] = set()
        self.blocker: socket.socket | None = None
        if case.occupy_port:
            self.blocker = socket.socket()
            self.blocker.bind(("127.0.0.1", self.port))
            self.blocker.listen(1)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=str(self.dir), env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.master = self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _remember_pids(self) -> None:
        try:
            master = psutil.Process(self.master)
            self.pids.add(self.master)
            self.pids.update(c.pid for c in master.children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def outcome(self, timeout: float = 40.0) -> Outcome:
        case = self.case
        deadline = time.monotonic() + timeout
        if case.daemon_pidfile:
            code = self.proc.wait(timeout)
            if code != 0:
                return Outcome("refused", detail=f"launcher exited {code}")
            pidfile = self.dir / case.daemon_pidfile
            while not pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.master = int(pidfile.read_text().strip())
        while time.monotonic() < deadline:
            self._remember_pids()
            if case.daemon_pidfile:
                alive = psutil.pid_exists(self.master)
                code = None if alive else -1
            else:
                code = self.proc.poll()
            if code is not None:
                kind = "exited 0" if code == 0 else "refused"
                return Outcome(kind, detail=f"exit status {code}")
            if case.answer is not None:
                answer = _ask(case, self.port, self.dir)
                if answer is not None:
                    self._remember_pids()
                    return Outcome("served", answer)
            time.sleep(0.2)
        return Outcome("hung", detail=f"neither served nor exited within {timeout}s")

    def stop(self) -> float:
        """TERM the master; seconds until it is gone (inf if it had to be killed)."""
        self._remember_pids()
        start = time.monotonic()
        took = float("inf")
        try:
            os.kill(self.master, signal.SIGTERM)
        except ProcessLookupError:
            took = 0.0
        else:
            while time.monotonic() - start < STOP_WITHIN * 2:
                if self.proc.pid == self.master and self.proc.poll() is not None:
                    took = time.monotonic() - start
                    break
                if self.proc.pid != self.master and not _running(self.master):
                    took = time.monotonic() - start
                    break
                time.sleep(0.05)
        self.cleanup()
        return took

    def cleanup(self) -> None:
        for pid in self.pids | {self.master}:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.blocker is not None:
            self.blocker.close()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def short_tmp():
    # Unix socket paths must stay under 108 bytes: pytest's tmp_path is long.
    with tempfile.TemporaryDirectory(prefix="fs-compat-") as d:
        yield Path(d)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_runs_unchanged_under_forkserve_as_under_gunicorn(case, short_tmp, tmp_path_factory):
    if case.tls and not _CERTS:
        sys.path.insert(0, str(Path(__file__).parent.parent))
        from tlscerts import make_pki
        _CERTS.append(make_pki(tmp_path_factory.mktemp("pki")))
    outcomes: dict[str, Outcome] = {}
    stop_times: dict[str, float] = {}
    logs: dict[str, str] = {}
    for server in SERVERS:
        run = Run(server, case, short_tmp)
        try:
            outcomes[server] = outcome = run.outcome()
            if outcome.kind == "served":
                for name, needles in case.then_files.items():
                    path = run.dir / name
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not (
                            path.exists() and all(n in path.read_text() for n in needles)):
                        time.sleep(0.1)
                    text = path.read_text() if path.exists() else "(missing)"
                    assert all(n in text for n in needles), (server, name, text[-2000:])
        finally:
            stop_times[server] = run.stop()
            logs[server] = run.log
    report = "\n".join(f"--- {s}: {outcomes[s]}\n{logs[s][-3000:]}" for s in SERVERS)
    expected = ("exited 0" if case.exit_zero else "refused") if case.answer is None else "served"
    assert outcomes["gunicorn"].kind == expected, report
    assert outcomes["forkserve"].kind == expected, report
    if expected == "served":
        if case.status != 200:
            assert all(outcomes[s].answer.startswith(b"%d " % case.status) for s in SERVERS), \
                report
        else:
            assert outcomes["forkserve"].answer == outcomes["gunicorn"].answer == \
                b"200 " + case.answer, report
        assert stop_times["forkserve"] < STOP_WITHIN, \
            f"forkserve took {stop_times['forkserve']:.1f}s to stop on TERM\n{report}"
        # One line per gunicorn setting without effect here, and no other warning.
        warned = [line.split("[WARNING] ", 1)[1] for line in logs["forkserve"].splitlines()
                  if "[WARNING] " in line]
        assert len(warned) == len(case.warnings), report
        for line, start in zip(warned, case.warnings):
            assert line.startswith(start), report
        for line in case.logged:
            assert line in logs["forkserve"], report


# -- settings forkserve now implements, side by side with gunicorn -------------

def _start(server: str, workdir: Path, args: list[str], stdout) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
    env["HOME"] = str(workdir)
    return subprocess.Popen([sys.executable, "-m", server, *args], cwd=str(workdir), env=env,
                            stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _served(port: int, path: str = "/", timeout: float = 30.0) -> bytes:
    case = Case("probe", "", path=path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = _ask(case, port, Path("."))
        if answer is not None:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"nothing answered on port {port} within {timeout}s")


def _fd_target(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def _kill_tree(pid: int) -> None:
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inherit", [False, True], ids=["stdio-to-devnull", "stdio-inherited"])
def test_daemon_detaches_as_gunicorn_does(short_tmp, inherit):
    """-D: the launcher exits 0; the master runs in a session of its own,
    not leading it (double fork), stdin on /dev/null, stdout and stderr on
    /dev/null too unless -R keeps them (they are a file here, not a tty)."""
    seen = {}
    for server in SERVERS:
        workdir = short_tmp / server
        workdir.mkdir()
        port = free_port()
        out_path = workdir / "launcher.out"
        args = ["-D", "--pid", str(workdir / "app.pid"), "-b", f"127.0.0.1:{port}",
                "--error-logfile", str(workdir / "error.log"), *(["-R"] if inherit else []),
                "compat_wsgi:application"]
        with open(out_path, "wb") as out:
            launcher = _start(server, workdir, args, out)
        master = 0
        try:
            assert launcher.wait(30) == 0, out_path.read_text()
            pidfile = workdir / "app.pid"
            deadline = time.monotonic() + 20
            while not pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            master = int(pidfile.read_text())
            assert _served(port) == b"200 compat ok"
            devnull = os.path.realpath(os.devnull)
            seen[server] = (
                os.getsid(master) != os.getsid(0),          # a session of its own
                os.getsid(master) != master,                # not its leader
                _fd_target(master, 0) == devnull,
                _fd_target(master, 1) == (str(out_path) if inherit else devnull),
                _fd_target(master, 2) == (str(out_path) if inherit else devnull),
            )
            os.kill(master, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WITHIN
            while _running(master) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _running(master), f"{server} daemon still running after TERM"
        finally:
            if master:
                _kill_tree(master)
    assert seen["forkserve"] == seen["gunicorn"] == (True,) * 5, seen


@pytest.mark.timeout(120)
def test_capture_output_follows_the_error_log_when_reopened(short_tmp):
    """capture_output: what the app prints lands in the error log file, and
    after logrotate moves it and USR1 asks for a reopen, in the new file."""
    for server in SERVERS:
        workdir = short_tmp / server
        workdir.mkdir()
        port = free_port()
        log = workdir / "error.log"
        with open(workdir / "stdout", "wb") as out:
            proc = _start(server, workdir, ["--capture-output", "--error-logfile", str(log),
                                            "-w", "2", "-b", f"127.0.0.1:{port}",
                                            "compat_wsgi:application"], out)
        try:
            assert _served(port, "/print") == b"200 printed"
            wait_text = "compat: printed to stderr"
            _wait_for_text(log, wait_text)
            assert "compat: printed to stdout" in log.read_text()
            log.rename(workdir / "error.log.1")
            proc.send_signal(signal.SIGUSR1)
            # Every worker must have reopened: ask until the new file has it.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                _served(port, "/print")
                if log.exists() and wait_text in log.read_text():
                    break
                time.sleep(0.3)
            assert log.exists() and "compat: printed to stdout" in log.read_text(), server
            assert (workdir / "stdout").read_text().count("compat: printed") == 0, server
        finally:
            _kill_tree(proc.pid)
            proc.wait(10)


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path}: "
                         f"{path.read_text()[-2000:] if path.exists() else '(missing)'}")


def test_without_capture_output_prints_stay_on_stdout(forkserve):
    server = forkserve("compat_wsgi:application")
    assert server.get("/print")[2] == b"printed"
    _wait_for_text(server.stdout_path, "compat: printed to stdout")
    assert "compat: printed" not in server.log


def test_hup_reads_gunicorn_conf_py_again(forkserve, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 1\nworker_tmp_dir = '/dev/shm'\n")
    server = forkserve("compat_wsgi:application", cwd=tmp_path)
    old = set(server.wait_workers(1))
    assert server.log.count("Reading ./gunicorn.conf.py") == 1
    (tmp_path / "gunicorn.conf.py").write_text(
        "workers = 2\nraw_env = ['COMPAT_GREETING=reloaded']\nworker_tmp_dir = '/dev/shm'\n")
    server.signal(signal.SIGHUP)
    server.wait_log("Reading ./gunicorn.conf.py", count=2)
    # Not the old worker and the first new one, while the second is forked.
    server.wait_workers(2, timeout=20, exclude=old)
    assert server.log.count("worker_tmp_dir = '/dev/shm' has no effect") == 2
    assert server.get("/env")[2] == b"reloaded"  # raw_env applied again, as gunicorn does


def test_check_config_prints_the_warnings():
    from conftest import run_forkserve

    proc = run_forkserve("--check-config", "--spew", "--worker-tmp-dir", "/dev/shm",
                         "compat_wsgi:application")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("forkserve: warning: ") for line in lines)
    assert "spew = True has no effect" in proc.stderr and "config OK" in proc.stdout


_DEV_APP = """\
def application(environ, start_response):
    body = {answer!r}
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.timeout(120)
def test_reload_picks_up_an_edit_under_both(short_tmp):
    """--reload: an edit of the app file is served soon after, under both
    (gunicorn restarts its workers; forkserve rolls them as on HUP)."""
    for server in SERVERS:
        workdir = short_tmp / server
        workdir.mkdir()
        app_file = workdir / "dev_app.py"
        app_file.write_text(_DEV_APP.format(answer=b"v1"))
        port = free_port()
        with open(workdir / "out.log", "wb") as out:
            proc = _start(server, workdir, ["--reload", "-b", f"127.0.0.1:{port}",
                                            "dev_app:application"], out)
        try:
            assert _served(port) == b"200 v1", (server, (workdir / "out.log").read_text())
            time.sleep(1.5)  # gunicorn's poller takes its first snapshot after boot
            tmp = workdir / "dev_app.py.new"
            tmp.write_text(_DEV_APP.format(answer=b"v2"))
            tmp.replace(app_file)
            deadline = time.monotonic() + 20
            answer = b""
            while time.monotonic() < deadline and answer != b"200 v2":
                answer = _served(port)
                time.sleep(0.2)
            assert answer == b"200 v2", (server, (workdir / "out.log").read_text()[-3000:])
        finally:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            _kill_tree(proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# -- statsd: the same metrics as gunicorn sends, to a listener in the test ------

class _StatsdListener:
    """A datagram socket in the test, read by a thread of its own from the
    start: a unix datagram queue holds only 10 datagrams (max_dgram_qlen),
    and gunicorn's blocking send waits for room."""

    def __init__(self, transport: str, workdir: Path) -> None:
        if transport == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = str(workdir / "statsd.sock")
            self.sock.bind(path)
            self.address = f"unix:{path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.settimeout(0.1)
        self.metrics: list[tuple[str, str, str, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.metrics += [_metric(line) for line in data.decode("ascii").split("\n") if line]

    def wait(self, done, timeout: float = 20.0) -> list[tuple[str, str, str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(self.metrics):
            time.sleep(0.05)
        return list(self.metrics)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def _metric(line: str) -> tuple[str, str, str, str]:
    """(name, value, type, tags) of one statsd line, name:value|type[|@rate][|#tags]."""
    name, _, rest = line.partition(":")
    value, _, rest = rest.partition("|")
    fields = rest.split("|")
    tags = next((f[1:] for f in fields[1:] if f.startswith("#")), "")
    return name, value, fields[0], tags


def _total(metrics: list[tuple], name: str) -> float:
    return sum(float(value) for n, value, _, _ in metrics if n == name)


_STATSD_RUNS = (("forkserve", "sync", "compat_wsgi:application"),
                ("forkserve", "asgi", "compat_asgi:app"),
                ("gunicorn", "sync", "compat_wsgi:application"),
                ("gunicorn", "asgi", "compat_asgi:app"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("transport", ["udp", "unix"])
def test_statsd_metrics_as_gunicorn_sends_them(short_tmp, transport):
    """statsd_host, statsd_prefix, dogstatsd_tags and enable_backlog_metric
    under forkserve (both worker kinds) and gunicorn 27 (sync and asgi)
    with the same settings: the listener in the test gets the same request,
    status, worker and backlog metrics, of the same types, prefixed and
    tagged the same way, and each
    counts exactly the requests sent (3 answered 200, 2 answered 404).
    gunicorn's asgi worker sends request metrics only with an access log,
    so every run has one."""
    prefix = "compat.gunicorn."
    seen: dict[str, set] = {}
    for server, kind, app in _STATSD_RUNS:
        run_id = f"{server}-{kind}"
        workdir = short_tmp / run_id
        workdir.mkdir()
        listener = _StatsdListener(transport, workdir)
        port = free_port()
        args = ["-w", "2", "-k", kind, "-b", f"127.0.0.1:{port}", "--statsd-host", listener.address,
                "--statsd-prefix", "compat", "--dogstatsd-tags", "env:test,service:compat",
                "--enable-backlog-metric", "--access-logfile", str(workdir / "access.log"),
                app]
        with open(workdir / "output.log", "wb") as out:
            proc = _start(server, workdir, args, out)
        try:
            assert _served(port).startswith(b"200 ")  # the first request
            for path in ("/", "/", "/missing", "/missing"):
                assert _served(port, path)[:4] == (b"200 " if path == "/" else b"404 ")

            def done(metrics):
                return (_total(metrics, prefix + "requests") >= 5
                        and _total(metrics, prefix + "request.status.200")
                        + _total(metrics, prefix + "request.status.404") >= 5
                        and len([m for m in metrics if m[2] == "ms"]) >= 5
                        and any(m[0] == prefix + "workers" for m in metrics)
                        and any(m[0] == prefix + "backlog" for m in metrics))
            metrics = listener.wait(done)
        finally:
            _kill_tree(proc.pid)
            proc.wait(10)
            listener.close()
        log = (workdir / "output.log").read_text(errors="replace")
        report = f"{run_id}: {metrics}\n{log[-3000:]}"
        assert _total(metrics, prefix + "requests") == 5, report
        assert _total(metrics, prefix + "request.status.200") == 3, report
        assert _total(metrics, prefix + "request.status.404") == 2, report
        durations = [float(v) for n, v, t, _ in metrics if n == prefix + "request.duration"]
        assert len(durations) == 5 and all(0 <= d < 10_000 for d in durations), report
        assert {v for n, v, _, _ in metrics if n == prefix + "workers"} == {"2"}, report
        seen[run_id] = {(n, t, tags) for n, _, t, tags in metrics
                        if n.startswith(prefix + "request") or n in (prefix + "workers",
                                                                     prefix + "backlog")}
    expected = {(prefix + "requests", "c", "env:test,service:compat"),
                (prefix + "request.status.200", "c", "env:test,service:compat"),
                (prefix + "request.status.404", "c", "env:test,service:compat"),
                (prefix + "request.duration", "ms", "env:test,service:compat"),
                (prefix + "workers", "g", "env:test,service:compat"),
                (prefix + "backlog", "h", "env:test,service:compat")}
    assert all(names == expected for names in seen.values()), seen
