"""A config module for ``-c python:compat_settings`` (gunicorn's form for
settings kept in an importable module); the port comes from the test."""

import os

bind = [f"127.0.0.1:{os.environ['COMPAT_PORT']}"]
workers = 2
timeout = 60
worker_class = "sync"
app_environment = os.environ.get("APP_ENV", "test")
raw_env = [f"COMPAT_GREETING=from {app_environment} settings"]
