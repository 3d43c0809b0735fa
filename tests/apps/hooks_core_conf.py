"""Config file for the end-of-exchange tests: request hooks that record
what they see in $FS_HOOK_LOG, and fail on demand."""

import os

_LOG = os.environ["FS_HOOK_LOG"]


def pre_request(worker, req):
    if req.path == "/pre-fails":
        raise RuntimeError("pre_request failed on purpose")


def post_request(worker, req, environ, resp):
    with open(_LOG, "a") as f:
        f.write(f"{req.method} {req.path} {req.query} {req.version} {resp.status!r} "
                f"{resp.status_code} {resp.sent} {environ['PATH_INFO']}\n")
    if req.path == "/post-fails":
        raise RuntimeError("post_request failed on purpose")
