"""Prometheus metrics of one OCS process, kept in a registry of its own.

The registry is private (not prometheus_client's global one) so that several apps in one
process, as in the tests, each count their own requests. ``observe`` is on the hot path of every
charging request, so request counts and latencies are plain integers in dicts (no locks, no
label validation: one event loop owns them), turned into Prometheus metric families only when
``/metrics`` is scraped. prometheus_client's own Counter and Histogram cost ~6 us a request
here (bench/RESULTS.md); this costs under 1 us.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

#: The Prometheus text exposition format (0.0.4) that ``generate_latest`` writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: 0.1 ms (a pipelined Redis round trip on the same host) up to 1 s (a request that
#: waited on a failing Redis for its connect timeout).
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class _RequestCollector(Collector):
    """Exports the request counters and latency histograms kept by :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        counts = CounterMetricFamily(
            "ocs_requests",
            "Requests answered, by protocol, verb and result.",
            labels=("protocol", "verb", "result"),
        )
        for labels, n in sorted(m.counts.items()):
            counts.add_metric(labels, n)
        yield counts
        hist = HistogramMetricFamily(
            "ocs_request_seconds",
            "Time from a request's arrival to its answer, by protocol and verb.",
            labels=("protocol", "verb"),
        )
        for hlabels, (buckets, total) in sorted(m.latency.items()):
            cumulative, running = [], 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                running += n
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
            hist.add_metric(hlabels, cumulative, total)
        yield hist


class Metrics:
    """Request counts and latencies, Redis errors and open connections, per protocol.

    ``protocol`` is the front door ("http", "native", "diameter"), ``verb`` what was asked
    (a charging verb, or for HTTP the route), ``result`` how it ended (an outcome or status).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: (protocol, verb, result) -> requests answered.
        self.counts: dict[tuple[str, str, str], int] = {}
        #: (protocol, verb) -> (count per latency bucket, the last one +Inf; sum of seconds).
        self.latency: dict[tuple[str, str], tuple[list[int], float]] = {}
        self.registry.register(_RequestCollector(self))
        self._redis_errors = Counter(
            "ocs_redis_errors",
            "Requests that failed because Redis could not answer.",
            registry=self.registry,
        )
        self._connections = Gauge(
            "ocs_open_connections",
            "Client connections open now, by protocol.",
            ("protocol",),
            registry=self.registry,
        )
        self._gauges: dict[str, Gauge] = {}
        self._auth_failures = Counter(
            "ocs_auth_failures",
            "Requests refused for their credential (missing, wrong, expired, revoked), their "
            "role (forbidden) or too many failures (limited), by interface.",
            ("interface", "reason"),
            registry=self.registry,
        )

    def observe(self, protocol: str, verb: str, result: str, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        key = (protocol, verb, result)
        self.counts[key] = self.counts.get(key, 0) + 1
        hkey = (protocol, verb)
        entry = self.latency.get(hkey)
        if entry is None:
            entry = ([0] * (len(LATENCY_BUCKETS) + 1), 0.0)
        buckets, total = entry
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency[hkey] = (buckets, total + seconds)

    def redis_error(self) -> None:
        """Count one request that failed because Redis was unavailable."""
        self._redis_errors.inc()

    def auth_failure(self, interface: str, reason: str) -> None:
        """Count one refused credential (ocs.auth)."""
        self._auth_failures.labels(interface, reason).inc()

    def _gauge(self, protocol: str) -> Gauge:
        gauge = self._gauges.get(protocol)
        if gauge is None:
            gauge = self._gauges[protocol] = self._connections.labels(protocol)
        return gauge

    def connection_opened(self, protocol: str) -> None:
        """A client connection of ``protocol`` was accepted."""
        self._gauge(protocol).inc()

    def connection_closed(self, protocol: str) -> None:
        """A client connection of ``protocol`` was closed."""
        self._gauge(protocol).dec()

    def render(self) -> bytes:
        """Everything in the Prometheus text format (serve it with :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
