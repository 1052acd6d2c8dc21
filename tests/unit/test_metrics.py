"""The metrics registry renders valid Prometheus text and the endpoint answers real scrapes."""

from __future__ import annotations

import math
import re
import threading
import urllib.error
import urllib.request

import pytest

from stationflow import metrics as m
from stationflow import runtime
from stationflow.metrics import MetricError, Metrics
from workers import events

pytestmark = pytest.mark.unit

# one sample line of text format 0.0.4: name, optional {labels}, value
_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def _parse(text: str) -> dict[str, float]:
    """Sample lines -> {'name{labels}': value}; asserts every line is well formed."""
    out: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert _SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        out[key] = float(value.replace("+Inf", "inf"))
    return out


def test_counter_labels_render_with_help_and_type() -> None:
    reg = Metrics()
    c = reg.counter("sf_records_total", "Records fanned out.", ["topic"])
    c.inc(topic="SCHEDULE-CAR-ORDER")
    c.inc(4, topic="SCHEDULE-CAR-ORDER")
    c.inc(2, topic="SCHEDULE-DEVICE-GUN")
    text = reg.render()
    lines = text.splitlines()
    assert lines[0] == "# HELP sf_records_total Records fanned out."
    assert lines[1] == "# TYPE sf_records_total counter"
    assert _parse(text) == {
        'sf_records_total{topic="SCHEDULE-CAR-ORDER"}': 5.0,
        'sf_records_total{topic="SCHEDULE-DEVICE-GUN"}': 2.0,
    }
    assert c.value(topic="SCHEDULE-CAR-ORDER") == 5.0
    assert c.value(topic="never") == 0.0


def test_counter_refuses_to_decrease_and_wrong_labels() -> None:
    reg = Metrics()
    c = reg.counter("x_total", "x", ["a"])
    with pytest.raises(MetricError, match="cannot decrease"):
        c.inc(-1, a="1")
    with pytest.raises(MetricError, match="do not match"):
        c.inc(1, b="1")
    with pytest.raises(MetricError, match="do not match"):
        c.inc(1)


def test_invalid_names_are_rejected() -> None:
    reg = Metrics()
    with pytest.raises(MetricError):
        reg.counter("bad-name", "x")
    with pytest.raises(MetricError):
        reg.counter("ok_total", "x", ["bad-label"])
    with pytest.raises(MetricError):
        reg.histogram("h", "x", ["le"])
    with pytest.raises(MetricError):
        reg.histogram("h2", "x", buckets=[1, 0.5])


def test_reregistering_returns_same_family_or_conflicts() -> None:
    reg = Metrics()
    a = reg.counter("a_total", "a", ["x"])
    assert reg.counter("a_total", "a", ["x"]) is a
    with pytest.raises(MetricError, match="already registered"):
        reg.gauge("a_total", "a", ["x"])
    with pytest.raises(MetricError, match="already registered"):
        reg.counter("a_total", "a", ["y"])


def test_escaping_of_help_and_label_values() -> None:
    reg = Metrics()
    c = reg.counter("esc_total", "Line one\nback\\slash", ["v"])
    c.inc(v='say "hi"\\ now\nnext')
    text = reg.render()
    assert "# HELP esc_total Line one\\nback\\\\slash\n" in text
    assert 'esc_total{v="say \\"hi\\"\\\\ now\\nnext"} 1\n' in text
    _parse(text)


def test_gauge_set_inc_dec_and_special_values() -> None:
    reg = Metrics()
    g = reg.gauge("lag", "lag", ["topic", "partition"])
    g.set(10, topic="T", partition=0)
    g.inc(5, topic="T", partition=0)
    g.dec(3, topic="T", partition=0)
    g.set(math.inf, topic="T", partition=1)
    g.set(2.5, topic="T", partition=2)
    vals = _parse(reg.render())
    assert vals['lag{topic="T",partition="0"}'] == 12.0
    assert vals['lag{topic="T",partition="1"}'] == math.inf
    assert vals['lag{topic="T",partition="2"}'] == 2.5
    assert '# TYPE lag gauge' in reg.render()


def test_unlabelled_metrics_start_at_zero() -> None:
    reg = Metrics()
    reg.counter("pauses_total", "p")
    reg.histogram("poll", "p", buckets=[1, 10])
    vals = _parse(reg.render())
    assert vals == {
        "pauses_total": 0.0,
        'poll_bucket{le="1"}': 0.0,
        'poll_bucket{le="10"}': 0.0,
        'poll_bucket{le="+Inf"}': 0.0,
        "poll_sum": 0.0,
        "poll_count": 0.0,
    }


def test_histogram_buckets_are_cumulative() -> None:
    reg = Metrics()
    h = reg.histogram("algo_seconds", "a", ["module"], buckets=[0.1, 1, 10])
    for v in (0.05, 0.1, 0.5, 3, 100):
        h.observe(v, module="SOH_model")
    vals = _parse(reg.render())
    assert vals['algo_seconds_bucket{module="SOH_model",le="0.1"}'] == 2  # 0.1 is <= 0.1
    assert vals['algo_seconds_bucket{module="SOH_model",le="1"}'] == 3
    assert vals['algo_seconds_bucket{module="SOH_model",le="10"}'] == 4
    assert vals['algo_seconds_bucket{module="SOH_model",le="+Inf"}'] == 5
    assert vals['algo_seconds_count{module="SOH_model"}'] == 5
    assert vals['algo_seconds_sum{module="SOH_model"}'] == pytest.approx(103.65)
    assert h.count(module="SOH_model") == 5


def test_histogram_time_observes_even_on_error() -> None:
    reg = Metrics()
    h = reg.histogram("t", "t", buckets=[1000])
    with h.time():
        pass
    with pytest.raises(RuntimeError), h.time():
        raise RuntimeError("boom")
    assert h.count() == 2
    assert 0 <= h.sum() < 1000


def test_remove_drops_series_of_revoked_partition_everywhere() -> None:
    reg = Metrics()
    lag = reg.gauge("lag", "l", ["topic", "partition"])
    paused = reg.gauge("paused_part", "p", ["topic", "partition"])
    recs = reg.counter("recs_total", "r", ["topic"])
    for p in range(3):
        lag.set(p * 10, topic="T", partition=p)
        paused.set(1, topic="T", partition=p)
    lag.set(7, topic="U", partition=1)
    recs.inc(topic="T")
    assert reg.remove({"topic": "T", "partition": 1}) == 2
    vals = _parse(reg.render())
    assert 'lag{topic="T",partition="1"}' not in vals
    assert 'paused_part{topic="T",partition="1"}' not in vals
    assert vals['lag{topic="T",partition="0"}'] == 0
    assert vals['lag{topic="T",partition="2"}'] == 20
    assert vals['lag{topic="U",partition="1"}'] == 7
    assert vals['recs_total{topic="T"}'] == 1  # no partition label: untouched
    assert lag.remove(topic="U") == 1
    with pytest.raises(MetricError, match="unknown labels"):
        recs.remove(partition=1)


def test_concurrent_increments_are_not_lost() -> None:
    reg = Metrics()
    c = reg.counter("c_total", "c", ["k"])
    h = reg.histogram("h", "h", buckets=[1])

    def work() -> None:
        for _ in range(5000):
            c.inc(k="a")
            h.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value(k="a") == 20000
    assert h.count() == 20000


def test_system_metric_names_are_declared_once_and_valid() -> None:
    names = [f.name for f in m.REGISTRY.families()]
    assert len(names) == len(set(names))
    for n in names:
        assert n.startswith("stationflow_")
    for f in m.REGISTRY.families():
        if f.type_name == "counter":
            assert f.name.endswith("_total"), f.name
    # the per-partition series the ingester must drop on revoke
    assert m.CONSUMER_LAG.labelnames == ("topic", "partition")
    assert m.DEAD_LETTERS.labelnames == ("topic", "reason")
    _parse(m.REGISTRY.render())


def test_http_scrape_of_metrics_endpoint() -> None:
    reg = Metrics()
    c = reg.counter("scraped_total", "s", ["topic"])
    c.inc(3, topic="SCHEDULE-DEVICE-METER")
    srv = m.serve(0, reg)
    try:
        assert srv.port > 0
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == m.CONTENT_TYPE
            body = resp.read().decode()
        assert _parse(body) == {'scraped_total{topic="SCHEDULE-DEVICE-METER"}': 3.0}
        c.inc(topic="SCHEDULE-DEVICE-METER")
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert _parse(resp.read().decode())['scraped_total{topic="SCHEDULE-DEVICE-METER"}'] == 4.0
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{srv.host}:{srv.port}/nope", timeout=5)
        assert err.value.code == 404
    finally:
        srv.stop()


def test_the_registry_and_the_documentation_list_the_same_metrics() -> None:
    from documented_metrics import documented_metrics

    docs = {d.name: (d.type, d.labels) for d in documented_metrics().values()}
    registered = {f.name: (f.type_name, frozenset(f.labelnames)) for f in m.REGISTRY.families()}
    assert registered == docs


def test_result_fixups_start_at_zero_and_count_each_kind() -> None:
    m.start_worker_series(["mod_fix"])
    assert all(m.RESULT_FIXUPS.value(module="mod_fix", kind=k) == 0 for k in m.FIXUP_KINDS)
    assert 'stationflow_upload_errors_total{module="mod_fix"} 0' in m.REGISTRY.render()
    runtime.export_worker_metrics()  # the worker's events reach the registry as in a worker process
    events.count_fixups("mod_fix", 3, True, False)
    assert m.RESULT_FIXUPS.value(module="mod_fix", kind="non_finite") == 3
    assert m.RESULT_FIXUPS.value(module="mod_fix", kind="station_id_mismatch") == 1
    assert m.RESULT_FIXUPS.value(module="mod_fix", kind="wrapped") == 0
