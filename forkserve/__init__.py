"""forkserve: a pre-fork application server for WSGI and ASGI apps."""

__version__ = "0.1.0"
