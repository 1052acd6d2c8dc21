"""A process-local metrics registry in the Prometheus text format (0.0.4), standard library only.

Written rather than taken from prometheus-client: the exposition format is a page of text and
a registry is ~150 lines, which is cheaper than one more dependency to pin, audit and ship in
every image. `stationflow.metrics` declares the names stationflow uses on one `Metrics`;
`serve()` starts the HTTP endpoint when asked (nothing does I/O at import time).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: seconds; covers a pipelined Redis write (sub-ms) up to a slow algorithm run
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: records per poll
SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class MetricError(ValueError):
    """A metric declared or used inconsistently (bad name, wrong labels, negative increment)."""


def _fmt(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    if math.isnan(v):
        return "NaN"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    """A metric name with a fixed set of label names and one series per label-value tuple."""

    type_name = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME_RE.match(name):
            raise MetricError(f"invalid metric name {name!r}")
        for ln in labelnames:
            if not _LABEL_RE.match(ln) or ln.startswith("__") or ln == "le":
                raise MetricError(f"metric {name}: invalid label name {ln!r}")
        if len(set(labelnames)) != len(labelnames):
            raise MetricError(f"metric {name}: duplicate label names {labelnames}")
        self.name = name
        self.help = help
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self._series: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()
        if not self.labelnames:  # an unlabelled metric exists from the start, at zero
            self._series[()] = self._new_state()

    # ---- label handling -----------------------------------------------------------------
    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise MetricError(
                f"metric {self.name}: labels {sorted(labels)} do not match {list(self.labelnames)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _new_state(self) -> object:
        raise NotImplementedError

    def _state(self, labels: Mapping[str, object]) -> object:
        key = self._key(labels)
        st = self._series.get(key)
        if st is None:
            with self._lock:
                st = self._series.setdefault(key, self._new_state())
        return st

    def remove(self, **labels: object) -> int:
        """Drop every series whose labels include all of `labels`; returns how many went."""
        unknown = set(labels) - set(self.labelnames)
        if unknown:
            raise MetricError(f"metric {self.name}: unknown labels {sorted(unknown)}")
        want = {self.labelnames.index(k): str(v) for k, v in labels.items()}
        with self._lock:
            gone = [k for k in self._series if all(k[i] == v for i, v in want.items())]
            for k in gone:
                del self._series[k]
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()
            if not self.labelnames:
                self._series[()] = self._new_state()

    def series(self) -> list[tuple[dict[str, str], object]]:
        with self._lock:
            items = sorted(self._series.items())
        return [(dict(zip(self.labelnames, k, strict=True)), st) for k, st in items]

    # ---- exposition ---------------------------------------------------------------------
    def render_lines(self) -> list[str]:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type_name}"]
        with self._lock:
            items = sorted((k, self._snapshot(st)) for k, st in self._series.items())
        for key, snap in items:
            lines.extend(self._sample_lines(key, snap))
        return lines

    def _snapshot(self, st: object) -> object:
        raise NotImplementedError

    def _sample_lines(self, key: tuple[str, ...], snap: object) -> list[str]:
        raise NotImplementedError


class _Value:
    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = 0.0


class Counter(_Family):
    """Monotonic total; the name should end in `_total`."""

    type_name = "counter"

    def _new_state(self) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise MetricError(f"counter {self.name} cannot decrease (inc by {amount})")
        st = self._state(labels)
        with self._lock:
            st.v += amount  # type: ignore[attr-defined]

    def value(self, **labels: object) -> float:
        st = self._series.get(self._key(labels))
        return 0.0 if st is None else st.v  # type: ignore[attr-defined]

    def _snapshot(self, st: object) -> float:
        return st.v  # type: ignore[attr-defined]

    def _sample_lines(self, key: tuple[str, ...], snap: object) -> list[str]:
        return [f"{self.name}{_labels_text(self.labelnames, key)} {_fmt(snap)}"]  # type: ignore[arg-type]


class Gauge(Counter):
    """A value that goes up and down (lag, queue depth, paused partitions)."""

    type_name = "gauge"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        st = self._state(labels)
        with self._lock:
            st.v += amount  # type: ignore[attr-defined]

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: object) -> None:
        st = self._state(labels)
        with self._lock:
            st.v = float(value)  # type: ignore[attr-defined]


class _HistState:
    __slots__ = ("counts", "sum", "count")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.sum = 0.0
        self.count = 0


class Histogram(_Family):
    """Distribution over fixed buckets (upper bounds, `+Inf` added), rendered cumulatively."""

    type_name = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        b = [float(x) for x in buckets]
        if not b or b != sorted(b) or len(set(b)) != len(b):
            raise MetricError(f"histogram {name}: buckets must be strictly increasing, got {buckets}")
        if b[-1] != math.inf:
            b.append(math.inf)
        self.buckets: tuple[float, ...] = tuple(b)
        super().__init__(name, help, labelnames)

    def _new_state(self) -> _HistState:
        return _HistState(len(self.buckets))

    def observe(self, value: float, **labels: object) -> None:
        st: _HistState = self._state(labels)  # type: ignore[assignment]
        i = 0
        while value > self.buckets[i]:
            i += 1
        with self._lock:
            st.counts[i] += 1
            st.sum += value
            st.count += 1

    @contextmanager
    def time(self, **labels: object) -> Iterator[None]:
        """Observe the wall time of the block (also when it raises: failures are slow too)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - t0, **labels)

    def count(self, **labels: object) -> int:
        st = self._series.get(self._key(labels))
        return 0 if st is None else st.count  # type: ignore[attr-defined]

    def sum(self, **labels: object) -> float:
        st = self._series.get(self._key(labels))
        return 0.0 if st is None else st.sum  # type: ignore[attr-defined]

    def _snapshot(self, st: object) -> tuple[list[int], float, int]:
        return list(st.counts), st.sum, st.count  # type: ignore[attr-defined]

    def _sample_lines(self, key: tuple[str, ...], snap: object) -> list[str]:
        counts, total, n = cast("tuple[list[int], float, int]", snap)
        out = []
        acc = 0
        for ub, c in zip(self.buckets, counts, strict=True):
            acc += c
            le = 'le="' + _fmt(ub) + '"'
            out.append(f"{self.name}_bucket{_labels_text(self.labelnames, key, le)} {acc}")
        lt = _labels_text(self.labelnames, key)
        out.append(f"{self.name}_sum{lt} {_fmt(total)}")
        out.append(f"{self.name}_count{lt} {n}")
        return out


class Metrics:
    """A registry: declares families once, renders them all, drops series by label."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add_collector(self, fn: Callable[[], None]) -> None:
        """Run `fn` before every render: for values read when scraped (a queue's depth), not
        counted as they happen. `fn` must not raise for an expected outage (drop the series)."""
        with self._lock:
            self._collectors.append(fn)

    def _add(self, fam: _Family) -> _Family:
        with self._lock:
            old = self._families.get(fam.name)
            if old is not None:
                if type(old) is not type(fam) or old.labelnames != fam.labelnames:
                    raise MetricError(
                        f"metric {fam.name} already registered as {old.type_name} {list(old.labelnames)}"
                    )
                return old
            self._families[fam.name] = fam
            return fam

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, labelnames, buckets))  # type: ignore[return-value]

    def get(self, name: str) -> _Family:
        return self._families[name]

    def families(self) -> list[_Family]:
        with self._lock:
            return list(self._families.values())

    def remove(self, labels: Mapping[str, object]) -> int:
        """Drop, in every family that has all these label names, the series matching them.

        Call it when a partition is revoked so its lag and per-partition series stop being
        exported by this process (the new owner exports them)."""
        n = 0
        for fam in self.families():
            if set(labels) <= set(fam.labelnames):
                n += fam.remove(**labels)
        return n

    def render(self) -> str:
        with self._lock:
            collectors = list(self._collectors)
        for fn in collectors:
            fn()
        lines: list[str] = []
        for fam in self.families():
            lines.extend(fam.render_lines())
        return "\n".join(lines) + "\n"


class MetricsServer:
    """The running /metrics endpoint; `stop()` shuts it down and frees the port."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(port: int, registry: Metrics, host: str | None = None) -> MetricsServer:
    """Answer GET /metrics on host:port from a daemon thread (port 0 picks a free one).

    Loopback by default: exposing it on all interfaces ("0.0.0.0", e.g. in a container) is a
    deployment choice, made with `--metrics-host` / STATIONFLOW_METRICS_HOST."""
    if host is None:
        import os

        host = os.environ.get("STATIONFLOW_METRICS_HOST") or "127.0.0.1"
    reg = registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            body = reg.render().encode() if path == "/metrics" else b'<a href="/metrics">/metrics</a>\n'
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE if path == "/metrics" else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name=f"metrics-{port}", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
