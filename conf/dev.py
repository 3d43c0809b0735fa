"""forkserve development config: one worker, verbose logs, on localhost.

    forkserve -c conf/dev.py examples.hello_wsgi:application
"""

bind = "127.0.0.1:8000"
workers = 1
loglevel = "debug"
accesslog = "-"
# A debugger session must not be killed as a stuck worker.
timeout = 0
graceful_timeout = 2
keepalive = 5
