"""A Flask app with what people use Flask for: send_file, a streamed upload
read from ``request.stream``, a streamed response, sessions and cookies.

The file it serves is ``payload.bin`` in ``FS_FRAMEWORKS_STATE``, written
by the test fixture before any server starts (both servers then see the
same file, mtime and all)."""

import hashlib
import os
from pathlib import Path

from flask import Flask, Response, jsonify, redirect, request, send_file, session, stream_with_context

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
