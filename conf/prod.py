"""forkserve production config: behind nginx (conf/nginx.conf) on the same
host, under systemd (systemd/) or started by hand.

    forkserve -c conf/prod.py myproject.wsgi:application

Every name here is a forkserve setting (gunicorn's names); see the README's
settings table.  Values can be overridden per host with FORKSERVE_CMD_ARGS
or on the command line.
"""

import multiprocessing
import os

# nginx talks to us over a unix socket: no TCP port to firewall, and the
# socket file's permissions decide who may connect (umask below).  Under
# systemd, forkserve.socket owns the socket and this bind is not used.
# Started by hand, forkserve creates /run/forkserve (mode 0755) if missing.
bind = os.environ.get("FORKSERVE_BIND", "unix:/run/forkserve/forkserve.sock")
backlog = 2048
# Started by hand, reload with: kill -HUP "$(cat /run/forkserve/forkserve.pid)"
pidfile = "/run/forkserve/forkserve.pid"

# One worker per core, plus one so a core is busy while another worker
# waits on I/O.  Sync workers: raise threads for apps that wait on a
# database or other services.
workers = multiprocessing.cpu_count() + 1
worker_class = "auto"        # sync for WSGI apps, asgi for ASGI apps
threads = 1
worker_connections = 1000

# A worker stuck this long in one request is killed and replaced.
timeout = 30
# TERM and HUP: in-flight requests get this long to finish.  Keep systemd's
# TimeoutStopSec a little above it (systemd/forkserve.service has 35 s).
graceful_timeout = 30
# Longer than nginx's upstream keepalive_timeout (4 s in conf/nginx.conf),
# so that nginx, not forkserve, closes idle upstream connections.
keepalive = 5

# Recycle workers now and then, so a slow leak in the app cannot grow
# without bound; jitter keeps them from restarting together.
max_requests = 10000
max_requests_jitter = 1000
max_worker_memory = 0        # MiB of RSS; set it if the app is known to grow

# nginx is the only peer allowed to say who the client is.
forwarded_allow_ips = ["127.0.0.1", "::1", "unix"]

# The socket file is created 0660 (rw for its owner and group, nothing for
# others; a socket has no use for x bits).  Under systemd, forkserve.socket
# sets the same mode and the group nginx runs as.
umask = 0o007

if os.getuid() == 0:
    # Started by hand as root (no systemd, whose unit sets User=/Group=):
    # never run the app as root.  Workers switch to nginx's user and group
    # (www-data on Debian and Ubuntu), and the socket file is given to them,
    # so nginx may connect to it.
    user = "www-data"
    group = "www-data"

# Logs go to the journal through stderr/stdout under systemd.
errorlog = "-"
loglevel = "info"
accesslog = "-"

proc_name = "forkserve"


def when_ready(server):
    server.log.info("forkserve ready: %s workers", server.num_workers)
