"""Metrics exposition, sans-I/O: the two text formats and content negotiation."""

from forkserve.exposition import Family, render, wants_openmetrics


def _families():
    c = Family("app_requests", "counter", "Requests.")
    c.add(3, (("kind", "sync"),))
    h = Family("app_duration_seconds", "histogram", "Duration.", "seconds")
    h.add_histogram((("kind", "sync"),), (0.1, 1.0), [2, 1, 1], 2.5)
    g = Family("app_start_time_seconds", "gauge", "Start.", "seconds")
    g.add(1700000000.25)
    i = Family("app_build", "info", "Build.")
    i.add(1, (("version", 'a"b\\c\nd'),))
    return [c, h, g, i]


def test_prometheus_text_format():
    text = render(_families(), openmetrics=False).decode()
    assert text == (
        "# HELP app_requests_total Requests.\n"
        "# TYPE app_requests_total counter\n"
        'app_requests_total{kind="sync"} 3\n'
        "# HELP app_duration_seconds Duration.\n"
        "# TYPE app_duration_seconds histogram\n"
        'app_duration_seconds_bucket{kind="sync",le="0.1"} 2\n'
        'app_duration_seconds_bucket{kind="sync",le="1.0"} 3\n'
        'app_duration_seconds_bucket{kind="sync",le="+Inf"} 4\n'
        'app_duration_seconds_count{kind="sync"} 4\n'
        'app_duration_seconds_sum{kind="sync"} 2.5\n'
        "# HELP app_start_time_seconds Start.\n"
        "# TYPE app_start_time_seconds gauge\n"
        "app_start_time_seconds 1700000000.25\n"
        "# HELP app_build_info Build.\n"
        "# TYPE app_build_info gauge\n"
        'app_build_info{version="a\\"b\\\\c\\nd"} 1\n')


def test_openmetrics_format():
    text = render(_families(), openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE app_requests counter\n" in text
    assert 'app_requests_total{kind="sync"} 3\n' in text
    assert "# TYPE app_duration_seconds histogram\n# UNIT app_duration_seconds seconds\n" in text
    assert "# TYPE app_build info\n" in text
    assert 'app_build_info{version="a\\"b\\\\c\\nd"} 1\n' in text
    # Prometheus-only spellings do not leak in.
    assert "TYPE app_requests_total" not in text


def test_help_escaping():
    f = Family("x", "gauge", 'line\nbreak \\ "q"')
    f.add(1)
    assert "# HELP x line\\nbreak \\\\ \"q\"\n" in render([f], False).decode()
    assert '# HELP x line\\nbreak \\\\ \\"q\\"\n' in render([f], True).decode()


def test_negotiation():
    prom = (b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert wants_openmetrics(prom)
    assert wants_openmetrics(b"Application/OpenMetrics-Text")
    assert not wants_openmetrics(b"text/plain;version=0.0.4")
    assert not wants_openmetrics(b"application/openmetrics-text;q=0")
    assert not wants_openmetrics(None)
    assert not wants_openmetrics(b"")
    assert not wants_openmetrics(b"application/openmetrics-textual")
