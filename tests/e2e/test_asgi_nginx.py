"""Issue 11 "done when", ASGI side: 20 HUPs behind nginx under mixed
GET/POST keep-alive load end with no failed request.  The load and the
nginx setup are the sync worker's test (tests/e2e/test_sync_core.py), run
here against the ASGI worker."""

from __future__ import annotations

import pytest

from test_sync_core import nginx_keepalive  # noqa: F401  (the fixture)
from test_sync_core import twenty_hups_behind_nginx

pytestmark = pytest.mark.e2e


def test_twenty_hups_behind_nginx_lose_nothing_asgi(forkserve, nginx_keepalive):  # noqa: F811
    twenty_hups_behind_nginx(forkserve, nginx_keepalive, "asgi_cycle:app")
