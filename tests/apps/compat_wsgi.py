"""WSGI app for the gunicorn compatibility suite: the same answers under
forkserve and gunicorn, so a test can ask both and compare."""

import os
import sys


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"compat ok"
    elif path == "/scheme":
        body = environ["wsgi.url_scheme"].encode()
    elif path == "/remote":
        # proxy_protocol: the client a PROXY header named (the port only then).
        port = environ.get("REMOTE_PORT", "")
        body = environ["REMOTE_ADDR"].encode()
        if environ["REMOTE_ADDR"] != "127.0.0.1":
            body += b" " + port.encode()
    elif path == "/mounted":
        # forwarder_headers: a trusted proxy's SCRIPT_NAME header mounts the app.
        body = (environ["SCRIPT_NAME"] + " " + environ.get("HTTP_REMOTE_USER", "-")).encode()
    elif path == "/env":
        # The environment a config file or -e gave the app.
        body = os.environ.get("COMPAT_GREETING", "unset").encode()
    elif path == "/print":
        # For capture_output: what the app writes to its stdout and stderr.
        print("compat: printed to stdout", flush=True)
        print("compat: printed to stderr", file=sys.stderr, flush=True)
        body = b"printed"
    elif path == "/line":
        body = str(len(environ.get("QUERY_STRING", ""))).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def create_app(greeting="factory"):
    """An app factory, as Flask projects write them (module:create_app())."""
    def app(environ, start_response):
        body = greeting.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app
