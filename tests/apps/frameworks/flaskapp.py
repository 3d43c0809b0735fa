"""A Flask app with what people use Flask for: send_file, a streamed upload
read from ``request.stream``, a streamed response, sessions and cookies.

The file it serves is ``payload.bin`` in ``FS_FRAMEWORKS_STATE``, written
by the test fixture before any server starts (both servers then see the
same file, mtime and all)."""

import hashlib
import os
from pathlib import Path

from flask import (Flask, Response, jsonify, redirect, request, send_file, session,
                   stream_with_context)

app = Flask(__name__)
app.secret_key = "forkserve-tests-only-not-a-secret"


def _payload() -> Path:
    return Path(os.environ["FS_FRAMEWORKS_STATE"]) / "payload.bin"


@app.get("/ping")
def ping():
    return "pong"


@app.get("/file")
def file():
    return send_file(_payload(), mimetype="application/octet-stream")


@app.get("/download")
def download():
    return send_file(_payload(), as_attachment=True, download_name="rapport été.bin")


@app.post("/upload")
def upload():
    """Read the body as a stream, as an app handling big uploads does."""
    digest = hashlib.sha256()
    size = 0
    while chunk := request.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(size=size, sha256=digest.hexdigest(),
                   chunked="chunked" in request.headers.get("Transfer-Encoding", ""))


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "100"))

    def lines():
        for i in range(count):
            yield f"{request.path} line {i:04d}\n"
    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.post("/login")
def login():
    session["user"] = request.form["user"]
    return redirect("/me")


@app.get("/me")
def me():
    return jsonify(user=session.get("user"))


@app.post("/logout")
def logout():
    session.clear()
    return redirect("/me")


@app.get("/cookie")
def cookie():
    resp = jsonify(ok=True)
    resp.set_cookie("theme", "dark", max_age=3600, httponly=True, samesite="Lax")
    resp.set_cookie("lang", "fr", path="/docs", secure=True)
    resp.delete_cookie("old")
    return resp


@app.route("/environ", defaults={"rest": ""}, methods=["GET", "POST"])
@app.route("/environ/<path:rest>", methods=["GET", "POST"])
def environ(rest):
    """What the server put in the WSGI environ (the values that are the
    same for any server on any port)."""
    env = request.environ
    keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
            "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR", "wsgi.url_scheme",
            "wsgi.version", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
            "wsgi.input_terminated"]
    seen = {k: env.get(k) for k in keys}
    seen["headers"] = {k: v for k, v in env.items() if k.startswith("HTTP_")}
    seen["flask"] = {"path": request.path, "rest": rest, "args": request.args.to_dict(flat=False),
                     "body": request.get_data(as_text=True)}
    return jsonify(seen)


@app.get("/stream-fails")
def stream_fails():
    """A streamed response whose generator raises half-way."""
    def lines():
        for i in range(3):
            yield f"line {i}\n"
        raise RuntimeError("the generator fails on purpose")
    return Response(lines(), mimetype="text/plain")
