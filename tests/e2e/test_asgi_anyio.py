"""anyio-based frameworks on the ASGI worker, on every Python the suite
runs on: on 3.12+ each request's task starts eagerly (inside the read that
completed the request), and anyio's cancel scopes and task groups must see
that task as the current one (issue 11, "what to build" item 5)."""

from __future__ import annotations

import sys

import httpx
import pytest

pytest.importorskip("sse_starlette")

pytestmark = pytest.mark.e2e


def test_cancel_scopes_task_groups_middleware_and_background_tasks(forkserve):
    server = forkserve("anyio_app:app", "-w", "1")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):  # on one keep-alive connection
            r = client.get("/scopes")
            assert r.text == "cancelled=True children=[0, 1, 2]"
            assert r.headers["x-middleware"] == "False"
            r = client.post("/upload", content=b"z" * 300_000)
            assert r.text == "300000"
        r = client.get("/events")
        assert [ln for ln in r.text.splitlines() if ln.startswith("data:")] == [
            "data: event0", "data: event1", "data: event2"]
        import time
        time.sleep(0.5)
        assert client.get("/background").text == "3"
    assert "Traceback" not in server.log, server.log
    assert "(asgi" in server.log
    print(f"eager task start: {sys.version_info >= (3, 12)}")
