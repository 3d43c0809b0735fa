"""A first end-to-end check: serve GET and POST through two workers."""

import pytest

pytestmark = pytest.mark.e2e


def test_get_and_post_through_two_workers(forkserve):
    server = forkserve("wsgi_basic:application", "-w", "2")
    assert len(server.wait_workers(2)) == 2
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"hello")
    status, _, body = server.request("POST", "/echo", body=b"x" * 100_000)
    assert (status, body) == (200, b"x" * 100_000)
