"""Metrics exposition, sans-I/O: metric families in, response bytes out.

Two formats from one description of the metrics:

* Prometheus text format 0.0.4 (``text/plain; version=0.0.4``): a counter's
  ``# TYPE`` names the sample (``forkserve_requests_total``); an info metric
  is a gauge of value 1 named ``..._info``.
* OpenMetrics 1.0 (``application/openmetrics-text``), when the scraper's
  ``Accept`` asks for it: ``# TYPE`` names the family (without
  ``_total``), ``# UNIT`` for families whose name ends in their unit, the
  ``info`` type, and ``# EOF`` at the end.

Names and labels are the caller's (see ``master/metrics.py``); label values
are escaped here, so any text is safe in them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Family", "render", "wants_openmetrics", "PROMETHEUS_TYPE", "OPENMETRICS_TYPE"]

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family.

    ``name`` is the family name, with its unit and without a type suffix
    (``forkserve_request_duration_seconds``, ``forkserve_requests`` for a
    counter, ``forkserve_build`` for an info metric).  ``kind`` is
    ``counter``, ``gauge``, ``histogram`` or ``info``.  Samples are
    ``(labels, value)`` for counters, gauges and info metrics; a histogram
    gives its samples with :meth:`observe_histogram`.
    """

    name: str
    kind: str
    help: str
    unit: str = ""
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels = ()) -> None:
        """A sample of a counter, gauge or info family."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.kind, "")
        self.samples.append((suffix, labels, value))

    def add_histogram(self, labels: Labels, bounds: tuple[float, ...], counts: list[int],
                      total: float) -> None:
        """A histogram's series for ``labels``: ``counts`` per bucket (not
        cumulative; one more than ``bounds``, the last is +Inf) and the sum."""
        running = 0
        for bound, n in zip((*bounds, math.inf), counts):
            running += n
            self.samples.append(("_bucket", (*labels, ("le", _number(bound))), running))
        self.samples.append(("_count", labels, running))
        self.samples.append(("_sum", labels, total))


def wants_openmetrics(accept: bytes | None) -> bool:
    """Whether an ``Accept`` header value asks for OpenMetrics (any q above
    zero: a scraper that lists it at all prefers it, as Prometheus does)."""
    if not accept:
        return False
    for part in accept.split(b","):
        params = part.split(b";")
        if params[0].strip().lower() != b"application/openmetrics-text":
            continue
        for p in params[1:]:
            key, _, value = p.strip().partition(b"=")
            if key.strip().lower() == b"q" and value.strip() in (b"0", b"0.0", b"0.00", b"0.000"):
                break
        else:
            return True
    return False


def render(families: list[Family], openmetrics: bool) -> bytes:
    """The exposition of ``families`` in the chosen format."""
    out: list[str] = []
    for fam in families:
        if openmetrics:
            out.append(f"# TYPE {fam.name} {fam.kind}\n")
            if fam.unit:
                out.append(f"# UNIT {fam.name} {fam.unit}\n")
            out.append(f"# HELP {fam.name} {_escape_help(fam.help, True)}\n")
        else:
            name = {"counter": fam.name + "_total", "info": fam.name + "_info"}.get(
                fam.kind, fam.name)
            kind = "gauge" if fam.kind == "info" else fam.kind
            out.append(f"# HELP {name} {_escape_help(fam.help, False)}\n")
            out.append(f"# TYPE {name} {kind}\n")
        for suffix, labels, value in fam.samples:
            if labels:
                pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                out.append(f"{fam.name}{suffix}{{{pairs}}} {_number(value)}\n")
            else:
                out.append(f"{fam.name}{suffix} {_number(value)}\n")
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def _number(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}.0"
    return repr(v)


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str, openmetrics: bool) -> str:
    v = v.replace("\\", "\\\\").replace("\n", "\\n")
    return v.replace('"', '\\"') if openmetrics else v
