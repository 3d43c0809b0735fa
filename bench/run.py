#!/usr/bin/env python3
"""Benchmark forkserve against gunicorn and uvicorn (stdlib + psutil only).

Every server runs with one worker under `taskset -c SERVER_CPU`; the load
generator (wrk -t1 -c64, or a built-in Python one if wrk is missing) runs
under `taskset -c CLIENT_CPU`.  Each run starts a fresh server, sanity-checks
one request, warms up, measures, reads the PSS of the whole server tree and
stops the server by PID.  Repeats are interleaved across servers and the
tables report medians.

Run from the repository root with an interpreter that has forkserve:
    python bench/run.py --list
    python bench/run.py --smoke --peers-python /tmp/anchors/bin/python
    python bench/run.py --peers-python /tmp/anchors/bin/python
    python bench/run.py --memory | --hup
    python bench/run.py --report /tmp/forkserve-bench/XXXX.jsonl
"""

import argparse
import array
import datetime
import http.client
import json
import multiprocessing
import os
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

try:
    import psutil
except ImportError:
    sys.exit("bench/run.py needs psutil: pip install psutil")

BENCH = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(BENCH, "apps")
REPO = os.path.dirname(BENCH)
OUT_DIR = "/tmp/forkserve-bench"
HELLO = b"Hello, world!"
# Busy time on a pinned cpu beyond what the server or client used, in % of
# one cpu; above this another tenant was competing (softirq work stays below).
NOISY_PCT = 15
POST_LEN = 16384

SCENARIOS = {
    "hello": dict(method="GET", headers={}, body_len=0, lua=None),
    "hello-close": dict(method="GET", headers={"Connection": "close"},
                        body_len=0, lua=None),
    "post": dict(method="POST",
                 headers={"Content-Type": "application/octet-stream"},
                 body_len=POST_LEN, lua="post16k.lua"),
}

APP = {"wsgi": "hello_wsgi:application", "asgi": "hello_asgi:app", "native": ""}

# "modules" are checked by importing them in the interpreter that will run
# the server, so a half-installed peer is skipped instead of failing runs.
SERVERS = {
    "forkserve-sync": dict(tool="forkserve", kind="wsgi",
                           args=["-k", "sync"], modules=["forkserve"]),
    "forkserve-threads": dict(tool="forkserve", kind="wsgi",
                              args=["-k", "sync", "--threads", "4"],
                              modules=["forkserve"]),
    "forkserve-asgi": dict(tool="forkserve", kind="asgi", args=["-k", "asgi"],
                           modules=["forkserve", "uvloop"]),
    # The same with the master's /metrics on: every exchange adds to the
    # shared-memory counters (issue 14: at least 97 % of the req/s without).
    "forkserve-sync-metrics": dict(tool="forkserve", kind="wsgi",
                                   args=["-k", "sync", "--metrics-bind", "127.0.0.1:0"],
                                   modules=["forkserve"]),
    "forkserve-asgi-metrics": dict(tool="forkserve", kind="asgi",
                                   args=["-k", "asgi", "--metrics-bind", "127.0.0.1:0"],
                                   modules=["forkserve", "uvloop"]),
    "gunicorn-sync": dict(tool="gunicorn", kind="wsgi", args=["-k", "sync"],
                          modules=["gunicorn"]),
    "gunicorn-gthread": dict(tool="gunicorn", kind="wsgi",
                             args=["-k", "gthread", "--threads", "4"],
                             modules=["gunicorn"]),
    # gunicorn's process model with uvicorn's worker: "gunicorn for the
    # same app" when the app is ASGI.
    "gunicorn-uvicorn": dict(tool="gunicorn", kind="asgi",
                             args=["-k", "uvicorn_worker.UvicornWorker"],
                             modules=["gunicorn", "uvicorn_worker", "httptools", "uvloop"]),
    "uvicorn-httptools": dict(tool="uvicorn", kind="asgi",
                              args=["--http", "httptools", "--loop", "uvloop"],
                              modules=["uvicorn", "httptools", "uvloop"]),
    "uvicorn-h11": dict(tool="uvicorn", kind="asgi",
                        args=["--http", "h11", "--loop", "uvloop"],
                        modules=["uvicorn", "h11", "uvloop"]),
    # Rust HTTP servers with Python apps: the fastest peers there are.
    "granian-asgi": dict(tool="granian", kind="asgi",
                         args=["--interface", "asgi", "--loop", "uvloop"],
                         modules=["granian", "uvloop"]),
    "granian-wsgi": dict(tool="granian", kind="wsgi", args=["--interface", "wsgi"],
                         modules=["granian"]),
    # Not a server: a fixed answer per request head on uvloop, parsing
    # nothing (ceiling_uvloop.py), to show the loop's and wrk's own limit.
    "ceiling-uvloop": dict(tool="ceiling", kind="native", args=[], modules=["uvloop"],
                           scenarios=("hello",)),
}

# Settings these servers read from the environment would silently change
# what is measured.
_ENV_DROP = ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")


def log(*parts):
    """Progress goes to stderr so stdout carries only the tables."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- servers --

class Toolchain:
    """Where each server's command and interpreter come from."""

    def __init__(self, args):
        self.forkserve = args.forkserve or os.path.join(
            os.path.dirname(sys.executable), "forkserve")
        # A console script's own interpreter sits next to it in a venv; that
        # is the one that must be able to import forkserve.
        py = os.path.join(os.path.dirname(self.forkserve), "python")
        self.forkserve_python = py if os.access(py, os.X_OK) else sys.executable
        self.peers_python = args.peers_python or sys.executable
        self._probes = {}

    def python_for(self, name):
        """The interpreter whose imports decide whether `name` can run."""
        if SERVERS[name]["tool"] == "forkserve":
            return self.forkserve_python
        return self.peers_python

    def probe(self, python):
        """Import every module any server needs in `python`; {module: [ok, version or error]}."""
        if python not in self._probes:
            mods = sorted({m for s in SERVERS.values() for m in s["modules"]})
            code = ("import importlib, importlib.metadata as md, json, sys\n"
                    "out = {'python': [True, sys.version.split()[0]]}\n"
                    "for m in sys.argv[1:]:\n"
                    "    try:\n"
                    "        importlib.import_module(m)\n"
                    "    except Exception as e:\n"
                    "        out[m] = [False, f'{type(e).__name__}: {e}']\n"
                    "        continue\n"
                    "    try: out[m] = [True, md.version(m)]\n"
                    "    except Exception: out[m] = [True, '?']\n"
                    "print(json.dumps(out))\n")
            try:
                cp = subprocess.run([python, "-c", code, *mods], cwd=APPS,
                                    capture_output=True, text=True, timeout=60)
                self._probes[python] = json.loads(cp.stdout)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self._probes[python] = {"python": [False, str(exc)]}
        return self._probes[python]

    def available(self, name):
        """(True, '') if `name` can run here, else (False, why)."""
        srv = SERVERS[name]
        if srv["tool"] == "forkserve" and not os.access(self.forkserve, os.X_OK):
            return False, f"no executable {self.forkserve} (use --forkserve)"
        python = self.python_for(name)
        probe = self.probe(python)
        if not probe["python"][0]:
            return False, f"{python}: {probe['python'][1]}"
        missing = [f"{m} ({probe[m][1]})" for m in srv["modules"]
                   if not probe.get(m, [False])[0]]
        if missing:
            return False, f"{python} cannot import " + ", ".join(missing)
        return True, ""

    def versions(self):
        """Versions of the interpreters and server packages in use."""
        out = {}
        for label, py in (("forkserve-python", self.forkserve_python),
                          ("peers-python", self.peers_python)):
            out[label] = {m: v[1] for m, v in self.probe(py).items() if v[0]}
        try:
            out["forkserve-git"] = subprocess.run(
                ["git", "-C", REPO, "describe", "--always", "--dirty"],
                capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        return out

    def argv(self, name, port, workers=1, preload=False):
        """The server's command line (without the taskset prefix)."""
        srv = SERVERS[name]
        app = APP[srv["kind"]]
        if srv["tool"] == "forkserve":
            return [self.forkserve, "-w", str(workers), "-b", f"127.0.0.1:{port}",
                    "--log-level", "warning", *srv["args"],
                    *(["--preload"] if preload else []), app]
        if srv["tool"] == "gunicorn":
            return [self.peers_python, "-m", "gunicorn", "-w", str(workers),
                    "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                    *srv["args"], *(["--preload"] if preload else []), app]
        if srv["tool"] == "granian":
            return [self.peers_python, "-m", "granian", "--workers", str(workers),
                    "--runtime-threads", "1", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", *srv["args"], app]
        if srv["tool"] == "ceiling":
            return [self.peers_python, os.path.join(BENCH, "ceiling_uvloop.py"), str(port)]
        return [self.peers_python, "-m", "uvicorn", "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--log-level", "warning", *srv["args"], app]


def expected_children(name, workers):
    """Worker processes the master forks (uvicorn with 1 worker has none)."""
    tool = SERVERS[name]["tool"]
    if tool == "ceiling" or (tool == "uvicorn" and workers == 1):
        return 0
    return workers


def runs_scenarios(name):
    """The scenarios `name` runs (the ceiling: only hello, as in the anchors)."""
    return SERVERS[name].get("scenarios", tuple(SCENARIOS))


def free_port():
    """A port the kernel just handed out; servers bind it with SO_REUSEADDR."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env():
    env = {k: v for k, v in os.environ.items()
           if k not in _ENV_DROP and not k.startswith("UVICORN_")}
    env["PYTHONPATH"] = APPS
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Server:
    """One server tree: started under taskset in its own session, stopped by PID."""

    def __init__(self, argv, port, cpu, logpath):
        self.port = port
        self.logpath = logpath
        self.argv = ["taskset", "-c", cpu, *argv]
        self._log = open(logpath, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=APPS, env=_server_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid  # taskset execs, so this is the master
        self.seen = {}
        self.stopped = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def tree(self):
        """The master and all its descendants, as psutil.Process objects."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def workers(self):
        """Direct children of the master."""
        try:
            return psutil.Process(self.pid).children()
        except psutil.Error:
            return []

    def log_tail(self, n=800):
        """The end of the server's output, for failure reports."""
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_ready(self, scenario="hello", timeout=20.0, workers=None):
        """Retry one checked request until it passes; (ok, detail)."""
        deadline = time.monotonic() + timeout
        detail = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, (f"exited rc={self.proc.returncode}: "
                               + self.log_tail(300).strip().replace("\n", " | "))
            ok, detail = check_request(self.port, scenario, timeout=2.0)
            if ok:
                break
            time.sleep(0.1)
        else:
            return False, f"not ready in {timeout:.0f}s: {detail}"
        # A master listens before its workers exist; memory and reload
        # measurements need the whole pool up.
        while workers is not None and len(self.workers()) < workers:
            if time.monotonic() > deadline:
                return False, f"only {len(self.workers())}/{workers} workers"
            time.sleep(0.05)
        self.tree()
        return True, detail

    def stop(self, timeout=10.0):
        """SIGTERM the master, SIGKILL after `timeout`, then kill any leftover by PID."""
        if self._log.closed:
            return self.stopped
        self.tree()
        how = "exited before stop"
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
                how = "SIGTERM"
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                how = "SIGKILL"
        others = [p for pid, p in self.seen.items() if pid != self.pid]
        _, alive = psutil.wait_procs(others, timeout=5)
        # Anything still in the server's session was started by it, even if
        # it was reparented before we saw it.
        for pid in psutil.pids():
            try:
                if pid != os.getpid() and os.getsid(pid) == self.pid:
                    alive.append(psutil.Process(pid))
            except (OSError, psutil.Error):
                pass
        left = sorted({p.pid for p in alive if _alive(p)})
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        if left:
            how += f", killed leftover pids {left}"
        self._log.close()
        self.stopped = how
        return how


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pss_kib(procs):
    """Sum of Pss over /proc/PID/smaps_rollup of `procs`."""
    total = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_seconds(procs):
    """User + system CPU time of `procs`."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def cpu_busy_seconds(cpus):
    """Non-idle seconds of `cpus` since boot, from /proc/stat (everyone's work)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = [int(x) for x in vals]
                # iowait is idle time too: nothing was running.
                busy += sum(v[:8]) - v[3] - v[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _request_bytes(scenario, port):
    sc = SCENARIOS[scenario]
    headers = {"Host": f"127.0.0.1:{port}", **sc["headers"]}
    if sc["body_len"]:
        headers["Content-Length"] = str(sc["body_len"])
    head = f"{sc['method']} / HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + b"x" * sc["body_len"]


def expected_body(scenario):
    """What a correct server answers in `scenario`."""
    return str(POST_LEN).encode() if SCENARIOS[scenario]["body_len"] else HELLO


def check_request(port, scenario, timeout=10.0):
    """One request of `scenario`, checked (status, body, headers); (ok, detail)."""
    sc = SCENARIOS[scenario]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(sc["method"], "/", body=b"x" * sc["body_len"] or None,
                     headers=sc["headers"])
        r = conn.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    want = expected_body(scenario)
    problems = []
    if r.status != 200:
        problems.append(f"status {r.status}")
    if body != want:
        problems.append(f"body {body[:40]!r}")
    if r.getheader("content-length") != str(len(want)):
        problems.append(f"content-length {r.getheader('content-length')}")
    if not (r.getheader("content-type") or "").startswith("text/plain"):
        problems.append(f"content-type {r.getheader('content-type')}")
    detail = f"{r.status} {body[:20]!r} connection={r.getheader('connection')}"
    return not problems, "; ".join(problems) or detail


# ----------------------------------------------------------- load: wrk ----

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def parse_wrk(out):
    """req/s, p50/p99 (ms), requests, socket errors and non-2xx/3xx from wrk --latency output."""
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None,
         "sock_err": {}, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            r[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        r["sock_err"] = {k: int(v) for k, v in zip(
            ("connect", "read", "write", "timeout"), m.groups()) if int(v)}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def run_wrk(args, port, scenario, secs):
    """Run wrk pinned to the client CPU; parsed results plus client CPU seconds."""
    sc = SCENARIOS[scenario]
    argv = ["taskset", "-c", args.client_cpu, args.wrk, "-t1",
            f"-c{args.conns}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    for k, v in sc["headers"].items():
        if sc["lua"] is None:  # the lua script sets its own headers
            argv += ["-H", f"{k}: {v}"]
    if sc["lua"]:
        argv += ["-s", os.path.join(BENCH, sc["lua"])]
    argv.append(f"http://127.0.0.1:{port}/")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        cp = subprocess.run(argv, capture_output=True, text=True,
                            timeout=secs + 30)
        out, rc = cp.stdout + cp.stderr, cp.returncode
    except subprocess.TimeoutExpired:
        out, rc = "wrk did not finish", -1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = parse_wrk(out)
    r["client_cpu_s"] = (after.ru_utime - before.ru_utime
                         + after.ru_stime - before.ru_stime)
    if rc != 0 or r["rps"] is None:
        r["error"] = f"wrk rc={rc}: {out.strip()[-300:]}"
    r["raw"] = out
    return r


# ------------------------------------------------- load: built-in Python ----

class _Conn:
    __slots__ = ("sock", "buf", "out", "t0", "need", "status", "close")


def _pyload_proc(port, request, close_each, nconns, secs, cpu, pipe):
    """One client process: `nconns` non-blocking keep-alive connections."""
    os.sched_setaffinity(0, cpu)
    sel = selectors.DefaultSelector()
    lat = array.array("d")
    errors = non2xx = 0
    now = time.perf_counter

    def open_conn():
        c = _Conn()
        c.sock = socket.socket()
        c.sock.setblocking(False)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.connect_ex(("127.0.0.1", port))
        c.buf, c.need, c.out, c.t0 = bytearray(), None, memoryview(request), now()
        sel.register(c.sock, selectors.EVENT_WRITE, c)

    def drop(c):
        sel.unregister(c.sock)
        c.sock.close()
        open_conn()

    def write(c, registered=selectors.EVENT_WRITE):
        c.out = c.out[c.sock.send(c.out):]
        want = selectors.EVENT_WRITE if c.out else selectors.EVENT_READ
        # Skipping the epoll_ctl when nothing changes keeps this client cheap.
        if want != registered:
            sel.modify(c.sock, want, c)

    def read(c):
        nonlocal non2xx
        data = c.sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the response ended")
        c.buf += data
        if c.need is None:
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(c.buf[:end]).lower().split(b"\r\n")
            c.status = int(head[0].split()[1])
            fields = dict(h.split(b":", 1) for h in head[1:] if b":" in h)
            c.need = end + 4 + int(fields.get(b"content-length", b"0"))
            c.close = fields.get(b"connection", b"").strip() == b"close"
        if len(c.buf) < c.need:
            return
        lat.append(now() - c.t0)
        if not 200 <= c.status < 400:
            non2xx += 1
        if close_each or c.close:
            drop(c)
            return
        del c.buf[:c.need]
        c.need, c.out, c.t0 = None, memoryview(request), now()
        write(c, selectors.EVENT_READ)

    for _ in range(nconns):
        open_conn()
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        for key, events in sel.select(0.1):
            c = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    write(c)
                else:
                    read(c)
            except (OSError, ValueError, IndexError):
                errors += 1
                drop(c)
    pipe.send((errors, non2xx, lat.tobytes()))
    pipe.close()


def run_pyload(args, port, scenario, secs):
    """The fallback load generator: several processes pinned to the client CPU."""
    nprocs = max(1, min(4, args.conns))
    shares = [args.conns // nprocs + (i < args.conns % nprocs)
              for i in range(nprocs)]
    request = _request_bytes(scenario, port)
    close_each = "Connection" in SCENARIOS[scenario]["headers"]
    ctx = multiprocessing.get_context("fork")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    jobs = []
    for n in shares:
        rx, tx = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_pyload_proc, args=(
            port, request, close_each, n, secs, _cpus(args.client_cpu), tx),
            daemon=True)  # so an interrupted harness does not wait for them
        p.start()
        tx.close()
        jobs.append((p, rx))
    lat = array.array("d")
    errors = non2xx = 0
    for p, rx in jobs:
        try:
            e, n2, raw = rx.recv()
            errors += e
            non2xx += n2
            lat.frombytes(raw)
        except EOFError:
            errors += 1
        p.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ordered = sorted(lat)

    def pct(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 \
            if ordered else None

    r = {"rps": len(ordered) / secs, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
         "requests": len(ordered), "sock_err": {"errors": errors} if errors else {},
         "non2xx": non2xx,
         "client_cpu_s": (after.ru_utime - before.ru_utime
                          + after.ru_stime - before.ru_stime)}
    if not ordered:
        r["error"] = "no request completed"
    return r


def _cpus(spec):
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


# ------------------------------------------------------------- runs ----

def one_run(args, tools, name, scenario, rep, logdir):
    """Start `name`, check, warm up, measure `scenario`, read PSS, stop; a JSON-able record."""
    port = free_port()
    rec = dict(type="run", server=name, scenario=scenario, rep=rep, ok=False,
               loadgen=args.loadgen)
    logpath = os.path.join(logdir, f"{name}-{scenario}-{rep}.log")
    load = run_wrk if args.loadgen == "wrk" else run_pyload
    with Server(tools.argv(name, port), port, args.server_cpu, logpath) as srv:
        rec["cmd"] = shlex.join(srv.argv)
        ok, detail = srv.wait_ready(scenario, args.ready_timeout)
        if not ok:
            rec["error"] = f"sanity check: {detail}"
            return _finish(rec, srv)
        if args.warmup > 0:
            load(args, port, scenario, args.warmup)
        procs = srv.tree()
        scpus, ccpus = _cpus(args.server_cpu), _cpus(args.client_cpu)
        sbusy0, cbusy0 = cpu_busy_seconds(scpus), cpu_busy_seconds(ccpus)
        cpu0, t0 = cpu_seconds(procs), time.monotonic()
        r = load(args, port, scenario, args.duration)
        wall = time.monotonic() - t0
        after = srv.tree()
        rec["server_cpu_pct"] = round(100 * (cpu_seconds(
            [p for p in after if p in procs]) - cpu0) / wall)
        rec["client_cpu_pct"] = round(100 * r.pop("client_cpu_s") / wall)
        # Busy time of the pinned cpus that neither the server nor the client
        # accounts for: another tenant (or softirq work) competing with them.
        rec["server_cpu_other_pct"] = round(100 * (
            cpu_busy_seconds(scpus) - sbusy0) / wall) - rec["server_cpu_pct"]
        rec["client_cpu_other_pct"] = round(100 * (
            cpu_busy_seconds(ccpus) - cbusy0) / wall) - rec["client_cpu_pct"]
        rec.update(r)
        rec["pss_kib"] = pss_kib(after)
        rec["nprocs"] = len(after)
        if "error" in r:
            return _finish(rec, srv)
        ok, detail = check_request(port, scenario)
        if not ok:
            rec["post_check"] = detail
        rec["ok"] = True
        return _finish(rec, srv)


def _finish(rec, srv):
    rec["stop"] = srv.stop()
    if not rec["ok"]:
        rec["log_tail"] = srv.log_tail()
    return rec


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _f(x, nd=2):
    if x is None:
        return "-"
    return f"{x:,.0f}" if nd == 0 else f"{x:.{nd}f}"


def summarize(records):
    """Median rows per (scenario, server), in SCENARIOS/SERVERS order."""
    groups = {}
    for r in records:
        if r.get("type") == "run":
            groups.setdefault((r["scenario"], r["server"]), []).append(r)
    order = {n: i for i, n in enumerate(SERVERS)}
    sorder = {n: i for i, n in enumerate(SCENARIOS)}
    rows = []
    for (scen, name), rs in sorted(groups.items(), key=lambda kv: (
            sorder.get(kv[0][0], 99), order.get(kv[0][1], 99))):
        good = [r for r in rs if r["ok"]]
        rps = [r["rps"] for r in good]
        notes = [f"n={len(good)}/{len(rs)}"]
        if len(rps) > 1:
            notes.append(f"range {min(rps):,.0f}-{max(rps):,.0f}")
        scpu = _med([r.get("server_cpu_pct") for r in good])
        ccpu = _med([r.get("client_cpu_pct") for r in good])
        if scpu is not None:
            notes.append(f"cpu srv {scpu:.0f}% cli {ccpu:.0f}%")
            if ccpu >= 95:
                notes.append("client-bound")
        noisy = [max(r.get("server_cpu_other_pct", 0), r.get("client_cpu_other_pct", 0))
                 for r in good]
        noisy = [n for n in noisy if n > NOISY_PCT]
        if noisy:
            notes.append(f"NOISY {len(noisy)}/{len(good)} (other load on the "
                         f"pinned cpus up to {max(noisy)}%)")
        errs = {}
        for r in good:
            for k, v in r.get("sock_err", {}).items():
                errs[k] = errs.get(k, 0) + v
        if errs:
            notes.append("sock err " + " ".join(f"{k} {v}" for k, v in errs.items()))
        non2xx = sum(r.get("non2xx", 0) for r in good)
        if non2xx:
            notes.append(f"non-2xx {non2xx}")
        for r in good:
            if r.get("post_check"):
                notes.append(f"after-load check: {r['post_check']}")
                break
        for r in rs:
            if not r["ok"]:
                notes.append("FAILED: " + r.get("error", "?")[:100])
                break
        for r in rs:
            if "leftover" in r.get("stop", "") or "SIGKILL" in r.get("stop", ""):
                notes.append("stop: " + r["stop"])
                break
        pss = _med([r.get("pss_kib") for r in good])
        rows.append(dict(server=name, scenario=scen, rps=_med(rps),
                         p50=_med([r.get("p50_ms") for r in good]),
                         p99=_med([r.get("p99_ms") for r in good]),
                         pss=None if pss is None else pss / 1024, noisy=bool(noisy),
                         notes="; ".join(notes).replace("|", "/")))
    return rows


def report(records):
    """The markdown results table and the RATIOS table."""
    rows = summarize(records)
    out = []
    meta = next((r for r in records if r.get("type") == "meta"), None)
    if meta:
        a = meta["args"]
        out += [f"forkserve {meta['versions'].get('forkserve-git', '?')}; "
                f"server on cpu {a['server_cpu']}, {meta['loadgen']} on cpu "
                f"{a['client_cpu']}; -c{a['conns']}; warm-up {a['warmup']}s + "
                f"{a['duration']}s; {a['repeats']} repeat(s), interleaved; "
                f"{meta['ts']}", ""]
        if meta["loadgen"] != "wrk":
            out += ["NOTE: rows come from the built-in Python load generator, "
                    "not wrk: they are client-bound (they measure the client "
                    "as much as the server). Compare ratios only.", ""]
    out += ["| server | scenario | req/s (median) | p50 ms | p99 ms | PSS MiB | notes |",
            "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['server']} | {r['scenario']} | {_f(r['rps'], 0)} | "
                   f"{_f(r['p50'])} | {_f(r['p99'])} | {_f(r['pss'], 1)} | "
                   f"{r['notes']} |")
    out += ["", "RATIOS (forkserve req/s / peer req/s, peers serving the same kind of app; "
            "p99 ms forkserve vs peer)", "",
            "| scenario | forkserve/peer | req/s ratio | p99 ms |",
            "|---|---|---:|---|"]
    for fs in rows:
        if SERVERS.get(fs["server"], {}).get("tool") != "forkserve":
            continue
        kind = SERVERS[fs["server"]]["kind"]
        for peer in rows:
            # A peer serves the same kind of app: WSGI against WSGI servers,
            # ASGI against ASGI ones.
            psrv = SERVERS.get(peer["server"], {})
            if (peer["scenario"] != fs["scenario"] or psrv.get("tool") == "forkserve"
                    or psrv.get("kind") != kind):
                continue
            ratio = (f"{fs['rps'] / peer['rps']:.2f}x"
                     if fs["rps"] and peer["rps"] else "-")
            if fs["noisy"] or peer["noisy"]:
                ratio += " (noisy)"
            out.append(f"| {fs['scenario']} | {fs['server']}/{peer['server']} | "
                       f"{ratio} | {_f(fs['p99'])} vs {_f(peer['p99'])} |")
    # What a feature costs: a "<server>-metrics" row against "<server>".
    pairs = [(on, off) for on in rows for off in rows
             if on["server"] == off["server"] + "-metrics" and on["scenario"] == off["scenario"]]
    if pairs:
        out += ["", "METRICS ON / OFF (req/s ratio, same run)", "",
                "| scenario | servers | req/s ratio |", "|---|---|---:|"]
        for on, off in pairs:
            ratio = f"{on['rps'] / off['rps']:.3f}" if on["rps"] and off["rps"] else "-"
            out.append(f"| {on['scenario']} | {on['server']}/{off['server']} | {ratio} |")
    skipped = [r for r in records if r.get("type") == "skip"]
    out += _skipped_lines(skipped)
    return "\n".join(out)


def _jsonl_path(args):
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        return args.out
    os.makedirs(OUT_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(OUT_DIR, f"{stamp}.jsonl")


def _write_jsonl(jsonl, records):
    with open(jsonl, "w") as jf:
        for r in records:
            jf.write(json.dumps(r) + "\n")


def _skipped_lines(skips):
    """The report's closing line naming the servers that could not run."""
    if not skips:
        return []
    return ["", "Skipped: " + "; ".join(f"{s['server']} ({s['reason']})" for s in skips)]


def _logdir(jsonl):
    d = os.path.splitext(jsonl)[0] + "-logs"
    os.makedirs(d, exist_ok=True)
    return d


def _meta(args, tools, mode):
    return dict(type="meta", mode=mode, loadgen=args.loadgen,
                ts=datetime.datetime.now().isoformat(timespec="seconds"),
                cmdline=shlex.join([sys.executable, *sys.argv]),
                args={k: v for k, v in vars(args).items()},
                versions=tools.versions(), loadavg=os.getloadavg())


def bench(args, tools, servers, skips):
    """The load benchmark: every scenario x repeat x server, fresh server each run."""
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}; have {', '.join(SCENARIOS)}")
    jsonl = _jsonl_path(args)
    logdir = _logdir(jsonl)
    plan = [(scen, name) for scen in scenarios for name in servers
            if scen in runs_scenarios(name)]
    total = len(plan) * args.repeats
    est = total * (args.warmup + args.duration + 2)
    log(f"{total} runs, about {est / 60:.1f} min; results -> {jsonl}")
    if args.loadgen != "wrk":
        log("using the built-in Python load generator, not wrk: rows are "
            "client-bound")
    records = [_meta(args, tools, "bench"), *skips]
    with open(jsonl, "w") as jf:
        for r in records:
            jf.write(json.dumps(r) + "\n")
        i = 0
        for scen in scenarios:
            # Interleaved (A B C A B C) so that drift on a shared machine
            # spreads over all servers instead of hitting one.
            for rep in range(args.repeats):
                for name in [n for s, n in plan if s == scen]:
                    i += 1
                    rec = one_run(args, tools, name, scen, rep, logdir)
                    records.append(rec)
                    jf.write(json.dumps(rec) + "\n")
                    jf.flush()
                    if rec["ok"]:
                        log(f"[{i}/{total}] {name:18} {scen:11} "
                            f"{rec['rps']:>9,.0f} req/s p50 {_f(rec['p50_ms'])} "
                            f"p99 {_f(rec['p99_ms'])} ms PSS "
                            f"{rec['pss_kib'] / 1024:.1f} MiB cpu srv "
                            f"{rec['server_cpu_pct']}% cli {rec['client_cpu_pct']}% other "
                            f"{rec['server_cpu_other_pct']}%/{rec['client_cpu_other_pct']}%")
                    else:
                        log(f"[{i}/{total}] {name:18} {scen:11} FAILED: "
                            f"{rec.get('error')}")
    print(report(records))
    print(f"\nraw results: {jsonl}")
    return 0 if all(r["ok"] for r in records if r.get("type") == "run") else 1


def smoke(args, tools, servers):
    """Start each server once, check every scenario's response, stop it."""
    logdir = _logdir(os.path.join(OUT_DIR, "smoke"))
    bad = 0
    for name in servers:
        port = free_port()
        t0 = time.monotonic()
        with Server(tools.argv(name, port), port, args.server_cpu,
                    os.path.join(logdir, f"{name}.log")) as srv:
            ok, detail = srv.wait_ready("hello", args.ready_timeout)
            results = [("ready", ok, detail)]
            if ok:
                results += [(s, *check_request(port, s)) for s in runs_scenarios(name)]
            stop = srv.stop()
        fails = [f"{s}: {d}" for s, good, d in results if not good]
        clean = stop == "SIGTERM"
        bad += bool(fails) or not clean
        print(f"{'OK  ' if not fails and clean else 'FAIL'} {name:18} "
              f"{time.monotonic() - t0:4.1f}s stop={stop} "
              + ("; ".join(fails) if fails else
                 " ".join(f"{s}={d.split(' ')[0]}" for s, _, d in results[1:])))
    return 1 if bad else 0


def _mem_one(args, tools, name, workers, preload, logdir):
    port = free_port()
    tag = f"-w {workers}" + (" --preload" if preload else "")
    rec = dict(type="memory", server=name, config=tag, ok=False)
    nkids = expected_children(name, workers)
    with Server(tools.argv(name, port, workers, preload), port,
                args.server_cpu, os.path.join(
                    logdir, f"mem-{name}-w{workers}{'-preload' if preload else ''}.log")) as srv:
        ok, detail = srv.wait_ready("hello", args.ready_timeout, workers=nkids)
        if not ok:
            rec["error"] = detail
            rec["stop"] = srv.stop()
            return rec
        # Workers that import the app after forking may still be at it.
        time.sleep(1.0)
        # Fresh connections give the kernel a chance to spread the requests
        # over the workers.
        failures = sum(not check_request(port, "hello-close")[0] for _ in range(100))
        time.sleep(0.3)
        procs = srv.tree()
        kids = srv.workers()
        uss = []
        for k in kids:
            try:
                uss.append(k.memory_full_info().uss / 2**20)
            except psutil.Error:
                pass
        master = [p for p in procs if p.pid == srv.pid]
        rec.update(ok=failures == 0, failed_requests=failures, nprocs=len(procs),
                   pss_tree_mib=pss_kib(procs) / 1024,
                   pss_master_mib=pss_kib(master) / 1024, worker_uss_mib=uss)
        if failures:
            rec["error"] = f"{failures}/100 requests failed"
        rec["stop"] = srv.stop()
    return rec


def memory(args, tools, servers, skips):
    """PSS after 100 requests: each server with 1 worker; forkserve and
    gunicorn (sync, and ASGI) also with 4, with and without --preload."""
    jsonl = _jsonl_path(args)
    logdir = _logdir(jsonl)
    plan = [(n, 1, False) for n in servers]
    for n in ("forkserve-sync", "gunicorn-sync", "forkserve-asgi", "gunicorn-uvicorn"):
        if n in servers:
            plan += [(n, 4, False), (n, 4, True)]
    records = [_meta(args, tools, "memory"), *skips]
    for name, w, pre in plan:
        rec = _mem_one(args, tools, name, w, pre, logdir)
        records.append(rec)
        log(f"{name:18} {rec['config']:14} "
            + (f"PSS {rec['pss_tree_mib']:.1f} MiB" if "pss_tree_mib" in rec
               else f"FAILED: {rec.get('error')}"))
    _write_jsonl(jsonl, records)
    out = ["| server | config | procs | PSS tree MiB | PSS master MiB | "
           "USS per worker MiB (median, range) | notes |",
           "|---|---|---:|---:|---:|---|---|"]
    for r in records:
        if r.get("type") != "memory":
            continue
        u = r.get("worker_uss_mib") or []
        uss = (f"{statistics.median(u):.1f} ({min(u):.1f}-{max(u):.1f})"
               if u else "- (single process)" if r.get("ok") else "-")
        notes = [r.get("error", "")] if not r["ok"] else []
        if "SIGTERM" != r.get("stop"):
            notes.append(f"stop: {r.get('stop')}")
        out.append(f"| {r['server']} | {r['config']} | {r.get('nprocs', '-')} | "
                   f"{_f(r.get('pss_tree_mib'), 1)} | "
                   f"{_f(r.get('pss_master_mib'), 1)} | {uss} | "
                   f"{'; '.join(n for n in notes if n)} |")
    out += _skipped_lines(skips)
    print("\n".join(out))
    print(f"\nraw results: {jsonl}")
    return 0 if all(r["ok"] for r in records if r.get("type") == "memory") else 1


class LightClient(threading.Thread):
    """A slow keep-alive client counting ok, failed and retried requests.

    The one retry allowed is RFC 9112 section 9.3.1's: a request on a reused
    connection that the server closed before any response byte (draining
    workers close idle keep-alive connections) is sent again on a new one.
    """

    def __init__(self, port, interval=0.005):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.ok = self.failed = self.retried = 0
        self.errors = []
        self.stopping = threading.Event()

    def run(self):
        """Request / until stopped, pausing `interval` between requests."""
        conn, reused = None, False
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                reused = False
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                conn.close()
                conn = None
                if reused:
                    self.retried += 1
                else:
                    self._fail(exc)
                continue
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                self._fail(exc)
                continue
            try:
                body = r.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                self._fail(exc)
                continue
            if r.status == 200 and body == HELLO:
                self.ok += 1
            else:
                self._fail(f"status {r.status} body {body[:30]!r}")
            if r.will_close:
                conn.close()
                conn = None
            else:
                reused = True
            time.sleep(self.interval)
        if conn is not None:
            conn.close()

    def _fail(self, what):
        self.failed += 1
        self.errors.append(f"{time.monotonic():.3f} {what!r}"[:160])
        time.sleep(0.01)


def hup(args, tools, servers, skips):
    """Time SIGHUP reloads of forkserve -w 4 under a light client."""
    jsonl = _jsonl_path(args)
    logdir = _logdir(jsonl)
    nworkers = 4
    records = [_meta(args, tools, "hup"), *skips]
    for name in [n for n in ("forkserve-sync", "forkserve-asgi") if n in servers]:
        port = free_port()
        rec = dict(type="hup", server=name, workers=nworkers, ok=False, reloads=[])
        records.append(rec)
        with Server(tools.argv(name, port, nworkers), port, args.server_cpu,
                    os.path.join(logdir, f"hup-{name}.log")) as srv:
            ok, detail = srv.wait_ready("hello", args.ready_timeout, workers=nworkers)
            if not ok:
                rec["error"] = detail
                rec["stop"] = srv.stop()
                continue
            client = LightClient(port)
            client.start()
            time.sleep(0.5)
            for i in range(args.hup_count):
                old = {p.pid for p in srv.workers()}
                t0 = time.monotonic()
                os.kill(srv.pid, signal.SIGHUP)
                took = None
                while time.monotonic() - t0 < 60:
                    kids = {p.pid for p in srv.workers()}
                    # Zombies stay children until reaped, so "disjoint from
                    # the old set" also means the old ones are gone.
                    if (len(kids) == nworkers and not kids & old
                            and check_request(port, "hello", timeout=5)[0]):
                        took = time.monotonic() - t0
                        break
                    time.sleep(0.01)
                rec["reloads"].append(took)
                log(f"{name} HUP {i + 1}: "
                    + (f"{took:.3f}s" if took is not None else "NOT DONE in 60s"))
                time.sleep(0.5)
            client.stopping.set()
            client.join(15)
            rec.update(requests_ok=client.ok, requests_failed=client.failed,
                       requests_retried=client.retried, errors=client.errors[:20])
            done = [t for t in rec["reloads"] if t is not None]
            rec["ok"] = (len(done) == args.hup_count and client.failed == 0)
            rec["stop"] = srv.stop()
    _write_jsonl(jsonl, records)
    out = ["| server | workers | reloads done | median s | max s | requests ok | "
           "failed | retried (idle keep-alive closed) | notes |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        if r.get("type") != "hup":
            continue
        done = [t for t in r["reloads"] if t is not None]
        notes = [r.get("error", "")] + r.get("errors", [])[:3]
        if r.get("stop") != "SIGTERM":
            notes.append(f"stop: {r.get('stop')}")
        out.append(f"| {r['server']} | {r['workers']} | {len(done)}/{len(r['reloads'])} | "
                   f"{_f(_med(done), 3)} | {_f(max(done) if done else None, 3)} | "
                   f"{r.get('requests_ok', '-')} | {r.get('requests_failed', '-')} | "
                   f"{r.get('requests_retried', '-')} | "
                   f"{'; '.join(n for n in notes if n).replace('|', '/')} |")
    out += _skipped_lines(skips)
    print("\n".join(out))
    print(f"\nraw results: {jsonl}")
    return 0 if all(r["ok"] for r in records if r.get("type") == "hup") else 1


# ------------------------------------------------------------- main ----

def main(argv=None):
    """Parse the flags and run the chosen mode."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list servers and availability")
    mode.add_argument("--smoke", action="store_true",
                      help="start each server once, check its answers, stop it")
    mode.add_argument("--memory", action="store_true",
                      help="PSS/USS without load (1 worker; sync servers also -w 4 [--preload])")
    mode.add_argument("--hup", action="store_true",
                      help="time SIGHUP reloads of forkserve -w 4 under a light client")
    mode.add_argument("--report", metavar="JSONL",
                      help="print the tables of an earlier run")
    ap.add_argument("--servers", help="comma-separated subset (default: all; "
                    "--hup: forkserve-sync,forkserve-asgi)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, of {', '.join(SCENARIOS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run")
    ap.add_argument("--conns", type=int, default=64, help="client connections")
    ap.add_argument("--server-cpu", default="1", help="taskset cpu list for servers")
    ap.add_argument("--client-cpu", default="0", help="taskset cpu list for the client")
    ap.add_argument("--forkserve", help="forkserve executable "
                    "(default: next to sys.executable)")
    ap.add_argument("--peers-python", help="interpreter with gunicorn/uvicorn "
                    "(default: sys.executable)")
    ap.add_argument("--wrk", default=shutil.which("wrk"),
                    help="wrk executable (default: from PATH)")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                    help="auto: wrk if found, else the built-in Python one")
    ap.add_argument("--ready-timeout", type=float, default=20.0)
    ap.add_argument("--hup-count", type=int, default=5, help="reloads per server in --hup")
    ap.add_argument("--out", help=f"JSON lines output (default: {OUT_DIR}/<timestamp>.jsonl)")
    args = ap.parse_args(argv)

    if args.report:
        with open(args.report) as f:
            records = [json.loads(line) for line in f if line.strip()]
        print(report(records))
        return 0
    if args.loadgen == "auto":
        args.loadgen = "wrk" if args.wrk and os.access(args.wrk, os.X_OK) else "python"
    elif args.loadgen == "wrk" and not args.wrk:
        sys.exit("--loadgen wrk: wrk not found (give --wrk PATH)")

    tools = Toolchain(args)
    if args.servers is None:
        args.servers = ("forkserve-sync,forkserve-asgi" if args.hup
                        else ",".join(SERVERS))
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in SERVERS:
            sys.exit(f"unknown server {n!r}; have {', '.join(SERVERS)}")
    servers, skips = [], []
    for n in names:
        ok, why = tools.available(n)
        if ok:
            servers.append(n)
        else:
            skips.append(dict(type="skip", server=n, reason=why))

    if args.list:
        for n in SERVERS:
            ok, why = tools.available(n)
            print(f"{n:18} {SERVERS[n]['kind']:4} {'available' if ok else 'SKIPPED  '} "
                  + (shlex.join(tools.argv(n, 'PORT')) if ok else why))
        print(f"load generator: {args.loadgen}"
              + (f" ({args.wrk})" if args.loadgen == "wrk" else " (client-bound)"))
        return 0

    have = os.sched_getaffinity(0)
    for flag, spec in (("--server-cpu", args.server_cpu), ("--client-cpu", args.client_cpu)):
        if not _cpus(spec) <= have:
            sys.exit(f"{flag} {spec}: this process may only use cpus {sorted(have)}")
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is needed for pinning")
    # SIGTERM unwinds like Ctrl-C, so the running server is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The harness itself stays off the server's cpu.
    os.sched_setaffinity(0, _cpus(args.client_cpu))
    for s in skips:
        log(f"skipped {s['server']}: {s['reason']}")
    if not servers:
        sys.exit("no server available")
    if args.smoke:
        return smoke(args, tools, servers)
    if args.memory:
        return memory(args, tools, servers, skips)
    if args.hup:
        return hup(args, tools, servers, skips)
    return bench(args, tools, servers, skips)


if __name__ == "__main__":
    sys.exit(main())
