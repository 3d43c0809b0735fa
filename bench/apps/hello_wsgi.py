"""WSGI app for bench/run.py.

Any POST (any path) reads the whole request body and answers its length as
text; anything else answers 200 text/plain "Hello, world!" (13 bytes, with
Content-Length).
"""

HELLO = b"Hello, world!"
_HELLO_BODY = [HELLO]
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
_CHUNK = 65536


def _body_length(environ):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    n = 0
    if length:
        remaining = int(length)
        while remaining > 0:
            chunk = stream.read(min(remaining, _CHUNK))
            if not chunk:
                break
            n += len(chunk)
            remaining -= len(chunk)
        return n
    # No Content-Length means a chunked body: the server ends the stream.
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return n
        n += len(chunk)


def application(environ, start_response):
    """The benchmark WSGI callable."""
    if environ["REQUEST_METHOD"] == "POST":
        body = str(_body_length(environ)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    # A copy, because a server is free to modify the list it is handed and the
    # module-level one must stay intact for the next request.
    start_response("200 OK", list(_HELLO_HEADERS))
    return _HELLO_BODY
