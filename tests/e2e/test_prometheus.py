"""A real Prometheus server scrapes forkserve's control listener and its
query API gives back the number of requests sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from conftest import free_port, stop_tree, wait_for  # noqa: E402

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"


def _query(port: int, expr: str):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.load(resp)
    assert data["status"] == "success", data
    return data["data"]["result"]


@pytest.mark.skipif(not os.path.exists(PROMETHEUS), reason="prometheus not installed")
@pytest.mark.parametrize("app", ["wsgi_basic:application", "asgi_basic:app"])
def test_prometheus_scrapes_the_request_count(forkserve, tmp_path, app):
    metrics_port = free_port()
    server = forkserve(app, "-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: forkserve
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        n = 37
        for _ in range(n):
            assert server.get("/")[0] == 200

        def counted():
            try:
                result = _query(prom_port, 'sum(forkserve_requests_total{job="forkserve"})')
            except OSError:  # not listening yet
                return None
            return result and float(result[0]["value"][1]) == n

        try:
            wait_for(counted, 30, interval=0.5, what=f"Prometheus to see {n} requests")
        except AssertionError:
            raise AssertionError((tmp_path / "prometheus.log").read_text()[-3000:]) from None
        # The scrape itself was healthy, and the histogram is usable.
        up = _query(prom_port, 'up{job="forkserve"}')
        assert float(up[0]["value"][1]) == 1
        count = _query(prom_port, "sum(forkserve_request_duration_seconds_count)")
        assert float(count[0]["value"][1]) == n
        ready = _query(prom_port, 'forkserve_workers{state="ready"}')
        assert float(ready[0]["value"][1]) == 2
    finally:
        stop_tree(proc)
        log.close()
