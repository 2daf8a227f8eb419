"""Prometheus metrics of one OCS process (or of all the workers of ``ocs serve --workers N``).

The registry is private (not prometheus_client's global one) so that several apps in one
process, as in the tests, each count their own requests. ``observe`` is on the hot path of every
charging request, so counts and latencies are plain integers in dicts (no locks, no label
validation: one event loop owns them), turned into Prometheus metric families only when
``/metrics`` is scraped. prometheus_client's own Counter and Histogram, with cached label
children, cost 2.8x as much per request (1.73 against 0.61 us of CPU), and 7x in its
multiprocess mode, which ``--workers N`` would need (``python -m bench.metrics``,
bench/RESULTS.md); the library still does the exposition and the process collectors.

Every family is declared once in :data:`FAMILIES` (name, type, help, labels, scope):

* ``ocs_requests`` / ``ocs_request_seconds``: charging requests (native, Diameter, CAMEL) by
  ``protocol``, ``verb``, ``outcome``;
* ``ocs_http_requests`` / ``ocs_http_request_seconds``: the HTTP API by ``method``, ``route``
  (the template, never the raw path) and ``code``;
* ``ocs_client_requests`` / ``ocs_client_request_seconds``: calls the OCS makes (the HLR) by
  ``service``, ``action``, ``outcome``;
* operator counters and gauges (money, sessions and the credit they hold, provisioning,
  outbox, peers, connections).

Workers: with ``state_dir`` set (the supervisor of ``ocs serve --workers N`` gives every worker
the same directory), each process writes its counts to ``<state_dir>/<pid>.json`` every second
and whichever worker a scrape reaches serves the sum over all files. Counters of workers that
died stay in the sum (so ``rate()`` never sees a counter go down); process gauges count only
live workers; ``cluster`` gauges (read from Redis at scrape time) come from the scraping worker.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "FAMILIES", "LATENCY_BUCKETS", "Family", "Metrics", "family_names"]

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
_NBUCKETS: Final = len(LATENCY_BUCKETS) + 1

Kind = Literal["counter", "gauge", "histogram"]
#: ``process``: each worker counts its own and a scrape serves the sum; ``cluster``: one value
#: for the whole OCS (read from Redis), served as the scraping worker read it.
Scope = Literal["process", "cluster"]


@dataclass(frozen=True, slots=True)
class Family:
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    scope: Scope = "process"


#: Every metric family the OCS exports (without the ``_total`` a counter gets on the wire).
FAMILIES: Final[dict[str, Family]] = {
    "ocs_requests": Family(
        "counter",
        "Charging requests answered, by protocol (native, diameter, camel), verb and outcome "
        "(the charging outcome, in every protocol: a Diameter Result-Code by its meaning).",
        ("protocol", "verb", "outcome"),
    ),
    "ocs_request_seconds": Family(
        "histogram",
        "Time from a charging request's arrival to its answer, by protocol and verb.",
        ("protocol", "verb"),
    ),
    "ocs_http_requests": Family(
        "counter",
        "HTTP API requests answered, by method, route template and status code.",
        ("method", "route", "code"),
    ),
    "ocs_http_request_seconds": Family(
        "histogram",
        "Time from an HTTP API request's arrival to its answer, by method and route template.",
        ("method", "route"),
    ),
    "ocs_client_requests": Family(
        "counter",
        "Calls the OCS made to other systems (service hlr: bar/unbar commands), by outcome.",
        ("service", "action", "outcome"),
    ),
    "ocs_client_request_seconds": Family(
        "histogram",
        "Time the OCS waited for another system's answer, by service and action.",
        ("service", "action"),
    ),
    "ocs_gc_pause_seconds": Family(
        "histogram",
        "Pauses of Python's garbage collector, by generation: the event loop stops for each, "
        "so every request in flight waits as long (docs/architecture.md, Performance 20).",
        ("generation",),
    ),
    "ocs_redis_errors": Family("counter", "Requests that failed because Redis could not answer."),
    "ocs_auth_failures": Family(
        "counter",
        "Requests refused for their credential (missing, wrong, expired, revoked), their "
        "role (forbidden) or too many failures (limited), by interface.",
        ("interface", "reason"),
    ),
    "ocs_charged_micros": Family(
        "counter",
        "Money charged (micro-units of the currency) by the charging verbs, replays excluded.",
    ),
    "ocs_credited_micros": Family(
        "counter",
        "Money credited (micro-units) through the API: top-ups, adjustments, refunds.",
        ("kind",),
    ),
    "ocs_holds_expired": Family(
        "counter", "Reservations released by the expiry sweeper (their holder never came back)."
    ),
    "ocs_provisioning_retries": Family(
        "counter",
        "Outbox entries tried again after a failed attempt, by consumer group (hlr, webhooks).",
        ("group",),
    ),
    "ocs_provisioning_dead_letters_added": Family(
        "counter",
        "Outbox entries given up on after their last attempt (dead-lettered), by consumer group.",
        ("group",),
    ),
    "ocs_mediation_files": Family(
        "counter",
        "CDR files mediated, by result (done; rejected: some records set aside; duplicate).",
        ("result",),
    ),
    "ocs_mediation_records": Family(
        "counter", "CDR records mediated, by result (charged, rejected).", ("result",)
    ),
    "ocs_open_connections": Family(
        "gauge",
        "Client connections open now, by listener (native, diameter, http, camel).",
        ("protocol",),
    ),
    "ocs_open_sessions": Family(
        "gauge",
        "Charging sessions holding a reservation made or renewed by this OCS (not yet "
        "released or expired), by protocol.",
        ("protocol",),
    ),
    "ocs_held_credit_micros": Family(
        "gauge",
        "Money (micro-units) held now by the reservations of those sessions, by protocol.",
        ("protocol",),
    ),
    "ocs_diameter_peers": Family(
        "gauge", "Diameter peer connections, by state of the RFC 6733 machine.", ("state",)
    ),
    "ocs_mediation_lag_seconds": Family(
        "gauge", "Seconds from the newest mediated file's close (mtime) to its mediation."
    ),
    "ocs_outbox_length": Family(
        "gauge", "Events in each bucket's outbox stream.", ("bucket",), "cluster"
    ),
    "ocs_provisioning_backlog": Family(
        "gauge",
        "Barring changes not yet applied at the HLR (pending in its consumer group).",
        (),
        "cluster",
    ),
    "ocs_provisioning_dead_letters": Family(
        "gauge", "HLR commands in the dead-letter stream now.", (), "cluster"
    ),
    "ocs_workers": Family("gauge", "OCS worker processes whose counts this scrape serves."),
}


def family_names() -> set[str]:
    """Every sample name a scrape can carry (``_total``, ``_bucket``... included)."""
    names: set[str] = {"ocs_build_info"}
    for name, fam in FAMILIES.items():
        if fam.kind == "counter":
            names |= {name, f"{name}_total"}
        elif fam.kind == "histogram":
            names |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


Labels = tuple[str, ...]


class Hist:
    """One histogram series: the count per bucket of :data:`LATENCY_BUCKETS` (and +Inf) and
    the sum. Updated in place: an observation builds nothing (``buckets, total = hist``
    reads it)."""

    __slots__ = ("buckets", "total")

    def __init__(self, buckets: list[int] | None = None, total: float = 0.0) -> None:
        self.buckets = buckets if buckets is not None else [0] * _NBUCKETS
        self.total = total

    def __iter__(self) -> Iterator[Any]:
        return iter((self.buckets, self.total))


Probe = Callable[["Metrics"], Awaitable[None] | None]


def _version() -> str:
    for dist in ("ocs-charging", "ocs"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "unknown"


class _Collector(Collector):
    """Exports what :class:`Metrics` keeps (or the sum over all workers)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        counters, hists, gauges = m.merged()
        info = GaugeMetricFamily(
            "ocs_build_info", "The OCS's version and Python, as labels (the value is 1).",
            labels=("version", "python"),
        )  # fmt: skip
        info.add_metric((m.version, platform.python_version()), 1)
        yield info
        for name, fam in FAMILIES.items():
            if fam.kind == "counter":
                c = CounterMetricFamily(name, fam.help, labels=fam.labels)
                for labels, n in sorted(counters.get(name, {}).items()):
                    c.add_metric(labels, n)
                yield c
            elif fam.kind == "gauge":
                g = GaugeMetricFamily(name, fam.help, labels=fam.labels)
                for labels, v in sorted(gauges.get(name, {}).items()):
                    g.add_metric(labels, v)
                yield g
            else:
                h = HistogramMetricFamily(name, fam.help, labels=fam.labels)
                for labels, (buckets, total) in sorted(hists.get(name, {}).items()):
                    cumulative, running = [], 0
                    for bound, n in zip((*LATENCY_BUCKETS, None), buckets, strict=True):
                        running += n
                        cumulative.append((str(bound) if bound is not None else "+Inf", running))
                    h.add_metric(labels, cumulative, total)
                yield h


class Metrics:
    """Counters, latency histograms and gauges of one process, declared in :data:`FAMILIES`.

    ``state_dir``: the directory the workers of one ``ocs serve --workers N`` share (see the
    module's docstring); None for a single process. ``worker``: the name of this process's
    file there (default its pid).
    """

    def __init__(
        self, state_dir: str | os.PathLike[str] | None = None, *, worker: str = ""
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.version = _version()
        self.state_dir = Path(state_dir) if state_dir else None
        #: The name of this worker's file in ``state_dir`` (its pid unless told).
        self.worker = worker or str(os.getpid())
        #: A counter without labels starts at 0 (it is there before its first event).
        self.counters: dict[str, dict[Labels, int]] = {
            n: ({} if f.labels else {(): 0}) for n, f in FAMILIES.items() if f.kind == "counter"
        }
        self.hists: dict[str, dict[Labels, Hist]] = {
            n: {} for n, f in FAMILIES.items() if f.kind == "histogram"
        }
        self.gauges: dict[str, dict[Labels, float]] = {
            n: {} for n, f in FAMILIES.items() if f.kind == "gauge"
        }
        #: The hot families, by reference (``observe`` must not look them up by name).
        self.counts = self.counters["ocs_requests"]
        self.latency = self.hists["ocs_request_seconds"]
        self._http_counts = self.counters["ocs_http_requests"]
        self._http_latency = self.hists["ocs_http_request_seconds"]
        #: Run before every scrape to set the gauges (listeners, sessions, Redis lengths).
        self.probes: list[Probe] = []
        #: Probes of cluster-wide gauges (Redis reads): at scrapes only, not at worker flushes.
        self.cluster_probes: list[Probe] = []
        self.registry.register(_Collector(self))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    # -- counting (the hot path) ------------------------------------------------------------

    def observe(self, protocol: str, verb: str, outcome: str, seconds: float) -> None:
        """Count one answered charging request and record how long it took."""
        key = (protocol, verb, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        _time(self.latency, (protocol, verb), seconds)

    def observe_http(self, method: str, route: str, code: int, seconds: float) -> None:
        """Count one answered HTTP API request (``route``: its template)."""
        key = (method, route, str(code))
        self._http_counts[key] = self._http_counts.get(key, 0) + 1
        _time(self._http_latency, (method, route), seconds)

    def observe_client(self, service: str, action: str, outcome: str, seconds: float) -> None:
        """Count one call the OCS made to another system (the HLR) and its wait."""
        self.inc("ocs_client_requests", (service, action, outcome))
        _time(self.hists["ocs_client_request_seconds"], (service, action), seconds)

    def inc(self, name: str, labels: Labels = (), n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (declared in :data:`FAMILIES`)."""
        family = self.counters[name]
        family[labels] = family.get(labels, 0) + n

    def set(self, name: str, labels: Labels, value: float) -> None:
        """Set the gauge ``name`` (declared in :data:`FAMILIES`)."""
        self.gauges[name][labels] = value

    def watch_gc(self) -> Callable[[], None]:
        """Time every collection of the garbage collector into ``ocs_gc_pause_seconds`` (a
        ``gc.callbacks`` hook: work per collection, none per request); returns what stops it."""
        family = self.hists["ocs_gc_pause_seconds"]
        keys = [(str(g),) for g in range(3)]
        started = [0.0]
        clock = time.perf_counter

        def hook(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = clock()
            else:
                _time(family, keys[info["generation"]], clock() - started[0])

        gc.callbacks.append(hook)
        return lambda: gc.callbacks.remove(hook) if hook in gc.callbacks else None

    def redis_error(self) -> None:
        """Count one request that failed because Redis was unavailable."""
        self.inc("ocs_redis_errors")

    def auth_failure(self, interface: str, reason: str) -> None:
        """Count one refused credential (ocs.auth)."""
        self.inc("ocs_auth_failures", (interface, reason))

    def charged(self, micros: int) -> None:
        """Count money charged by a charging verb (micro-units; ChargingEngine.on_charged)."""
        self.inc("ocs_charged_micros", (), micros)

    # -- scraping ---------------------------------------------------------------------------

    async def refresh(self, *, cluster: bool = True) -> None:
        """Run the probes (each sets its gauges), with ``cluster`` the Redis ones too; a probe
        that fails leaves its gauges as they were (Redis down must not fail a scrape)."""
        for probe in (*self.probes, *(self.cluster_probes if cluster else ())):
            try:
                result = probe(self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                continue

    async def render_now(self) -> bytes:
        """Run the probes, then :meth:`render` (what ``/metrics`` serves)."""
        await self.refresh()
        return self.render()

    def render(self) -> bytes:
        """Everything in the Prometheus text format (serve it with :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # -- workers ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's counts as JSON-able data (what :meth:`flush` writes)."""
        return {
            "pid": os.getpid(),
            "counters": {n: [[list(k), v] for k, v in f.items()] for n, f in self.counters.items()},
            "hists": {
                n: [[list(k), b, s] for k, (b, s) in f.items()] for n, f in self.hists.items()
            },
            "gauges": {
                n: [[list(k), v] for k, v in f.items()]
                for n, f in self.gauges.items()
                if FAMILIES[n].scope == "process"
            },
        }

    def flush(self) -> None:
        """Write :meth:`snapshot` to ``<state_dir>/<pid>.json`` (atomically); no-op without."""
        if self.state_dir is None:
            return
        data = json.dumps(self.snapshot(), separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, self.state_dir / f"{self.worker}.json")

    def merged(
        self,
    ) -> tuple[dict[str, dict[Labels, int]], dict[str, dict[Labels, Hist]],
               dict[str, dict[Labels, float]]]:  # fmt: skip
        """Counters, histograms and gauges to serve: this process's, or the workers' sum."""
        cluster = {n: g for n, g in self.gauges.items() if FAMILIES[n].scope == "cluster"}
        if self.state_dir is None:
            own: dict[str, dict[Labels, float]] = {**self.gauges, "ocs_workers": {(): 1.0}}
            return self.counters, self.hists, own
        self.flush()
        counters: dict[str, dict[Labels, int]] = {n: {} for n in self.counters}
        hists: dict[str, dict[Labels, Hist]] = {n: {} for n in self.hists}
        gauges: dict[str, dict[Labels, float]] = {n: {} for n in self.gauges}
        live = 0
        for snap in self._snapshots():
            _add_rows(counters, snap.get("counters", {}))
            for name, rows in snap.get("hists", {}).items():
                if name in hists:
                    hfam = hists[name]
                    for labels, buckets, total in rows:
                        key = tuple(labels)
                        old_b, old_s = hfam.get(key) or Hist()
                        hfam[key] = Hist([a + b for a, b in zip(old_b, buckets, strict=True)],
                                         old_s + total)  # fmt: skip
            if not _alive(int(snap.get("pid", 0))):
                continue
            live += 1
            _add_rows(gauges, snap.get("gauges", {}))
        gauges.update(cluster)
        gauges["ocs_workers"] = {(): float(live)}
        return counters, hists, gauges

    def _snapshots(self, *, skip: str | None = None) -> Iterator[dict[str, Any]]:
        """The workers' files in ``state_dir`` (but ``skip``'s), read now."""
        assert self.state_dir is not None
        for path in sorted(self.state_dir.glob("*.json")):
            if path.stem == skip:
                continue
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a worker's file being replaced right now: it is in the next read

    def counter_sum(self, name: str) -> dict[Labels, int]:
        """The counter ``name`` over every worker: this process's counts now plus the others'
        as they last wrote them (at most :data:`ocs.telemetry.FLUSH_INTERVAL` behind, never
        ahead, so the sum never goes down); this process's alone without ``state_dir``. For
        figures that must not depend on which worker is asked (the dashboard's requests/s)."""
        own = self.counters[name]
        if self.state_dir is None:
            return dict(own)
        total: dict[str, dict[Labels, int]] = {name: dict(own)}
        for snap in self._snapshots(skip=self.worker):
            _add_rows(total, {name: snap.get("counters", {}).get(name, [])})
        return total[name]


def _add_rows(into: dict[str, dict[Labels, Any]], rows_by_name: dict[str, list[Any]]) -> None:
    """Add a snapshot's (labels, value) rows to the families of ``into`` it knows."""
    for name, rows in rows_by_name.items():
        family = into.get(name)
        if family is not None:
            for labels, v in rows:
                key = tuple(labels)
                family[key] = family.get(key, 0) + v


def _time(family: dict[Labels, Hist], key: Labels, seconds: float) -> None:
    entry = family.get(key)
    if entry is None:
        entry = family[key] = Hist()
    entry.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    entry.total += seconds


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return sys.platform != "win32"
