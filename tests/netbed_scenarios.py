"""The changes the multi-host test bed makes under load (tests/netbed.py),
one function each, and :func:`run`, which makes one behind a balancer and
measures it.  tests/e2e/test_netbed.py asserts on what :func:`run` returns;
bench/netbed.py runs the same by hand and prints the numbers.

HAProxy checks forkserve's ``/readyz`` on its control port (the shipped
conf/haproxy.cfg); a :class:`Scenario` with ``check_path`` "/" checks the
app port instead, as without forkserve's control listener.  ``drain_delay``
is forkserve's: how long a TERMed host goes on serving after its
``/readyz`` turned 503.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conftest import wait_for
from loadgen import LoadResult
from netbed import NetBed

@dataclass(frozen=True)
class Scenario:
    """A change made under load; see the module docstring."""

    title: str
    action: Callable[[NetBed], dict]
    zero_failures: bool = True
    deploys: bool = True  # ends with every remaining host on the new code (v2)
    check_path: str = "/readyz"
    drain_delay: float = 0.0
    balancer_retries: bool = True  # False: the balancer never resends a request
    #: the client: keep-alive connections, new-connection clients, every Nth a POST
    load: tuple[int, int, int] = (4, 2, 2)


@dataclass
class Outcome:
    """One scenario's numbers: ``record`` (JSON-able) and the raw result."""

    record: dict
    result: LoadResult
    bed_logs: str = ""
    extra: dict = field(default_factory=dict)


def wait_balancer_sees(bed: NetBed, names: set[str], up: bool = True,
                       timeout: float = 20) -> None:
    """HAProxy: until the named servers are UP (or not UP).  nginx has no
    view to ask: wait out its failed-attempt window (fail_timeout)."""
    if bed.balancer_kind != "haproxy":
        time.sleep(2.5)  # fail_timeout=2s in conf/nginx.conf
        return
    wait_for(lambda: all((bed.haproxy_states().get(n) == "UP") == up for n in names), timeout,
             interval=0.1, what=f"haproxy to see {names} {'UP' if up else 'down'}")


def rolling_hup(bed: NetBed) -> dict:
    for app in bed.apps:
        bed.deploy(app, "v2")
        bed.hup(app)
    return {}


def hup_storm(bed: NetBed) -> dict:
    """Ten rolling HUPs in a row: thirty drains, each meeting the balancer's
    idle upstream connections (a drain that closed them at once loses a few
    requests to the keep-alive race here; a single rolling HUP rarely hits it)."""
    for app in bed.apps:
        bed.deploy(app, "v2")
    for _ in range(10):
        for app in bed.apps:
            bed.hup(app)
    return {}


def rolling_usr2(bed: NetBed) -> dict:
    for app in bed.apps:
        bed.deploy(app, "v2")
        bed.usr2(app)
    return {}


def rolling_restart(bed: NetBed) -> dict:
    for app in bed.apps:
        bed.deploy(app, "v2")
        bed.restart(app)
        wait_balancer_sees(bed, {app.name})
    return {}


def rolling_restart_drained(bed: NetBed) -> dict:
    """A full restart host by host, each host out of the rotation first:
    HAProxy sees its /readyz turn 503 on TERM and moves away during
    drain_delay; open-source nginx has no active check, so the host leaves
    its upstream block (a reload) before the TERM and comes back after."""
    for app in bed.apps:
        bed.deploy(app, "v2")
        if bed.balancer_kind == "nginx":
            bed.reload_balancer([a for a in bed.apps if a is not app])
            time.sleep(2.0)  # nginx's old workers finish what they had sent there
        bed.restart(app)
        if bed.balancer_kind == "nginx":
            bed.reload_balancer(bed.apps)
        wait_balancer_sees(bed, {app.name})
    return {}


def ttin_ttou(bed: NetBed) -> dict:
    for app in bed.apps:
        os.kill(app.master, signal.SIGTTIN)
        wait_for(lambda: len(app.workers()) == bed.workers + 1, 20, what="one worker more")
        time.sleep(0.3)
        os.kill(app.master, signal.SIGTTOU)
        wait_for(lambda: len(app.workers()) == bed.workers, 20, what="one worker fewer")
    return {}


def scale_out_in(bed: NetBed) -> dict:
    """A 4th host joins (balancer reload), then the 1st leaves (reload,
    then TERM once the balancer no longer sends it anything)."""
    new = bed.new_app_host()
    bed.deploy(new, "v2")
    bed.start_app(new)
    bed.wait_ready(new)
    bed.reload_balancer(bed.apps)
    wait_balancer_sees(bed, {new.name})
    time.sleep(1.0)
    gone, *rest = bed.apps
    bed.reload_balancer(rest)
    time.sleep(3.0)  # the balancer's old processes finish their requests to it
    bed.stop_app(gone)
    for app in rest:
        bed.deploy(app, "v2")
        bed.hup(app)
    return {"gone": gone.name}


def _host_dies(how: str) -> Callable[[NetBed], dict]:
    def action(bed: NetBed) -> dict:
        victim = bed.apps[0]
        killed_at = time.time()
        t0 = time.monotonic()
        if how == "kill -9":
            bed.kill9(victim)
        else:
            bed.link_down(victim)
        detect = None
        if bed.balancer_kind == "haproxy":
            wait_balancer_sees(bed, {victim.name}, up=False, timeout=30)
            detect = round(time.monotonic() - t0, 2)
        time.sleep(4.0)
        for app in bed.apps[1:]:
            bed.deploy(app, "v2")
            bed.hup(app)
        return {"gone": victim.name, "killed_at": killed_at, "detect_s": detect}
    return action


def slow_host(bed: NetBed) -> dict:
    """One host's workers get 10 % of the CPU time (SIGSTOP 90 ms, SIGCONT
    10 ms) for 5 s; the others' p99 then is compared with the 3 s before."""
    victim = bed.apps[0]
    t0 = time.time()
    time.sleep(3.0)
    t1 = time.time()
    workers = victim.workers()
    try:
        while time.time() < t1 + 5.0:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            time.sleep(0.09)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return {"slow": victim.name, "baseline": (t0, t1), "throttled": (t1, time.time())}


SCENARIOS = {
    "rolling-hup": Scenario("rolling HUP after a code change", rolling_hup),
    "rolling-hup-no-retries": Scenario("rolling HUP, the balancer resending nothing",
                                       rolling_hup, balancer_retries=False),
    "hup-storm-no-retries": Scenario("10 rolling HUPs, the balancer resending nothing",
                                     hup_storm, balancer_retries=False, load=(8, 0, 2)),
    "rolling-usr2": Scenario("rolling USR2 upgrade + TERM of the old master", rolling_usr2),
    "rolling-restart": Scenario("rolling TERM + start, no readiness (HAProxy checks the app "
                                "port)", rolling_restart, check_path="/"),
    "rolling-restart-drained": Scenario("rolling TERM + start, each host drained first "
                                        "(HAProxy: /readyz + drain_delay 3 s; nginx: upstream "
                                        "reload)", rolling_restart_drained, drain_delay=3.0),
    "ttin-ttou": Scenario("TTIN then TTOU on each host", ttin_ttou, deploys=False),
    "scale-out-in": Scenario("a 4th host added, the 1st removed", scale_out_in),
    "kill-9": Scenario("a host dies (kill -9 of master and workers)", _host_dies("kill -9"),
                       zero_failures=False),
    "link-down": Scenario("a host's link goes down", _host_dies("link down"),
                          zero_failures=False),
    "slow-host": Scenario("one host's workers throttled to 10 % CPU", slow_host, deploys=False),
}


def run(workdir: Path, key: str, balancer: str, kind: str) -> Outcome:
    """Three hosts of ``kind`` workers behind ``balancer``, steady load,
    the scenario's change; the numbers of the load during it."""
    scenario = SCENARIOS[key]
    with NetBed(workdir, kind=kind) as bed:
        bed.retries = scenario.balancer_retries
        bed.drain_delay = scenario.drain_delay
        bed.start_apps(3)
        if balancer == "haproxy":
            bed.start_haproxy(scenario.check_path)
        else:
            bed.start_nginx()
        with bed.load(*scenario.load) as change:
            extra = scenario.action(bed)
        result = change.result
        record = {"scenario": key, "balancer": balancer, "kind": kind,
                  "requests": result.requests, "posts": result.posts, "failed": result.failed,
                  "retried": result.retried, "p99_ms": round(change.p99_ms, 1),
                  "change_s": round(change.ended - change.started, 1),
                  "errors": dict(result.errors)}
        if "killed_at" in extra:
            fails = [float(f[0]) for f in result.failures]
            record["detect_s"] = extra["detect_s"]
            record["last_failure_after_s"] = (round(max(fails) - extra["killed_at"], 2)
                                              if fails else None)
        if "slow" in extra:
            others = {a.name for a in bed.apps} - {extra["slow"]}
            record["others_p99_before_ms"] = round(
                1000 * result.percentile(0.99, *extra["baseline"], tags=others), 1)
            record["others_p99_throttled_ms"] = round(
                1000 * result.percentile(0.99, *extra["throttled"], tags=others), 1)
            record["slow_p99_throttled_ms"] = round(
                1000 * result.percentile(0.99, *extra["throttled"], tags={extra["slow"]}), 1)
        logs = "\n".join(f"--- {a.name}\n{a.log_text()[-1500:]}" for a in bed.apps)
        logs += f"\n--- {balancer}\n{bed.balancer_log()[-2000:]}"
        names = [a.name for a in bed.apps]
    return Outcome(record, result, logs, {**extra, "hosts": names})
