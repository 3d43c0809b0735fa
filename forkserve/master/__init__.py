"""The master's parts, composed by ``forkserve/arbiter.py``: the worker
table (``pool``), generations and HUP (``reload``), USR2 (``reexec``), its
signals (``signals``) and when to replace a crashed worker (``respawn``)."""
