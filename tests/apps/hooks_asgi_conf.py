"""Config file for the ASGI request hooks test: pre_request and
post_request record what they see in $FS_HOOK_LOG, and fail on demand."""

import os
import time

_LOG = os.environ["FS_HOOK_LOG"]


def _write(line):
    with open(_LOG, "a") as f:
        f.write(line + "\n")


def pre_request(worker, req):
    _write(f"pre {req.method} {req.path}")
    if req.path == "/pre-fails":
        raise RuntimeError("pre_request failed on purpose")


def post_request(worker, req, environ, resp):
    _write(f"post {req.method} {req.path} {resp.status!r} {resp.sent} {environ['type']} "
           f"{environ['path']} {time.monotonic():.3f}")
    if req.path == "/post-fails":
        raise RuntimeError("post_request failed on purpose")
