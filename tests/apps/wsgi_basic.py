"""WSGI test app: small routes the e2e tests drive."""

import os
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    if path == "/":
        body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [body]
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/sleep":
        time.sleep(float(qs or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(3))
    if path == "/big":
        size = int(qs or "1048576")
        block = b"0123456789abcdef" * 4096
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return (block[:min(len(block), size - i)] for i in range(0, size, len(block)))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    if path == "/error":
        raise RuntimeError("boom from the test app")
    if path == "/environ":
        keys = sorted(k for k, v in environ.items() if isinstance(v, str))
        body = "\n".join(f"{k}={environ[k]}" for k in keys).encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/stderr":
        errors = environ["wsgi.errors"]
        print("to wsgi.errors", file=errors)
        errors.write("a partial line, ")
        errors.write("then its end\n")
        errors.writelines(["one\n", "two\n"])
        errors.flush()
        start_response("204 No Content", [])
        return []
    if path == "/stderr-big":
        environ["wsgi.errors"].write("x" * 8000 + "\n")
        start_response("204 No Content", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
