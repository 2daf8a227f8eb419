"""Prometheus metrics of one OCS process, kept in a registry of its own.

The registry is private (not prometheus_client's global one) so that several apps in one
process, as in the tests, each count their own requests. ``observe`` is on the hot path of every
charging request: the labelled children are looked up once per label tuple and then cached, so
a request costs one dict lookup, one counter increment and one histogram observation.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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


class Metrics:
    """Request counts and latencies, Redis errors and open connections, per protocol.

    ``protocol`` is the front door ("http", "native", "diameter"), ``verb`` what was asked
    (a charging verb, or for HTTP the route), ``result`` how it ended (an outcome or status).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "ocs_requests",
            "Requests answered, by protocol, verb and result.",
            ("protocol", "verb", "result"),
            registry=self.registry,
        )
        self._seconds = Histogram(
            "ocs_request_seconds",
            "Time from a request's arrival to its answer, by protocol and verb.",
            ("protocol", "verb"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        # Cached label children: the labels() lookup validates and locks; a dict hit does not.
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._gauges: dict[str, Gauge] = {}

    def observe(self, protocol: str, verb: str, result: str, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        key = (protocol, verb, result)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(protocol, verb, result),
                self._seconds.labels(protocol, verb),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def redis_error(self) -> None:
        """Count one request that failed because Redis was unavailable."""
        self._redis_errors.inc()

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
