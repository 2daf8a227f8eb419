"""The gauges of a running OCS (listeners, peers, sessions, Redis streams) and the per-worker
flush of ``ocs serve --workers N``: the probes :class:`ocs.metrics.Metrics` runs at each scrape.

Kept out of ocs/service.py (which only calls :func:`watch`) so that the service stays the list
of what runs, and out of ocs/metrics.py, which knows no server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from aiohttp import web

from ocs.metrics import CONTENT_TYPE, Metrics
from ocs.tasks import cancel_and_wait

if TYPE_CHECKING:
    from ocs.charging.engine import ChargingEngine
    from ocs.charging.sweeper import ExpirySweeper
    from ocs.mediation.pipeline import FileReport
    from ocs.store.notify import NotifyStore
    from protocols.diameter.server import DiameterServer
    from protocols.native import NativeServer
    from protocols.sigtran.server import CapServer

__all__ = [
    "FLUSH_INTERVAL",
    "METRICS_DIR_ENV",
    "count_file",
    "flushing",
    "metrics_for_process",
    "serving",
    "watch",
]

log = logging.getLogger(__name__)

#: Set by the supervisor of ``ocs serve --workers N`` for its workers: the directory where each
#: writes its counts for the others to sum (ocs/metrics.py).
METRICS_DIR_ENV: Final = "OCS_METRICS_DIR"
#: Seconds between a worker's writes of its counts (a scrape may be this much behind for the
#: other workers' requests, never ahead, so counters never go down).
FLUSH_INTERVAL: Final = 1.0
_HLR_GROUP: Final = "hlr"


def metrics_for_process() -> Metrics:
    """This process's Metrics: shared with the other workers when the supervisor says so."""
    return Metrics(state_dir=os.environ.get(METRICS_DIR_ENV) or None)


def watch(
    metrics: Metrics,
    *,
    native: NativeServer,
    diameter: DiameterServer,
    runner: web.AppRunner,
    engine: ChargingEngine,
    sweeper: ExpirySweeper,
    notify: NotifyStore,
    camel: CapServer | None = None,
) -> None:
    """Register the probes that set the gauges of this process and of the whole OCS."""

    def listeners(m: Metrics) -> None:
        server = runner.server
        m.set("ocs_open_connections", ("native",), native.open_connections)
        m.set("ocs_open_connections", ("diameter",), diameter.open_connections)
        m.set("ocs_open_connections", ("http",), len(server.connections) if server else 0)
        if camel is not None:
            m.set("ocs_open_connections", ("camel",), len(camel.associations))
        peers = m.gauges["ocs_diameter_peers"]
        peers.clear()
        for state, n in diameter.peer_states.items():
            peers[(state,)] = n
        sessions, held = m.gauges["ocs_open_sessions"], m.gauges["ocs_held_credit_micros"]
        sessions.clear()
        held.clear()
        for protocol in ("native", "diameter", *(("camel",) if camel is not None else ())):
            sessions[(protocol,)] = held[(protocol,)] = 0
        for protocol, (n, money) in engine.holds().items():
            sessions[(protocol or "other",)] = n
            held[(protocol or "other",)] = money
        m.counters["ocs_holds_expired"][()] = sweeper.released

    async def streams(m: Metrics) -> None:
        outbox = m.gauges["ocs_outbox_length"]
        for bucket, n in enumerate(await notify.outbox_lengths()):
            outbox[(str(bucket),)] = n
        backlog = await notify.pending_count(_HLR_GROUP) + await notify.lag(_HLR_GROUP)
        m.set("ocs_provisioning_backlog", (), backlog)
        m.set("ocs_provisioning_dead_letters", (), await notify.dead_letter_count())

    metrics.probes.append(listeners)
    metrics.cluster_probes.append(streams)


@contextlib.asynccontextmanager
async def flushing(metrics: Metrics) -> AsyncIterator[None]:
    """While open, write this worker's counts every :data:`FLUSH_INTERVAL` (and at the end)."""
    if metrics.state_dir is None:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await metrics.refresh(cluster=False)
            try:
                metrics.flush()
            except OSError as exc:
                log.warning("metrics: cannot write %s: %s", metrics.state_dir, exc)

    task = asyncio.create_task(loop(), name="metrics-flush")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        await metrics.refresh(cluster=False)
        with contextlib.suppress(OSError):
            metrics.flush()


def count_file(metrics: Metrics, report: FileReport) -> None:
    """Count one mediated file (``Mediation(on_file=...)``): files, records, lag from close."""
    if report.duplicate:
        metrics.inc("ocs_mediation_files", ("duplicate",))
        return
    metrics.inc("ocs_mediation_files", ("rejected" if report.rejected else "done",))
    metrics.inc("ocs_mediation_records", ("charged",), report.charged)
    metrics.inc("ocs_mediation_records", ("rejected",), report.rejected)
    if report.closed_at and report.done_at:
        lag = max(0, report.done_at - report.closed_at) / 1000
        metrics.set("ocs_mediation_lag_seconds", (), lag)


@contextlib.asynccontextmanager
async def serving(metrics: Metrics, bind: str, port: int) -> AsyncIterator[int]:
    """``GET /metrics`` on ``bind:port`` for a process without the HTTP API (``ocs mediation
    run --metrics-port``); yields the bound port."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=await metrics.render_now(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        yield sockets[0].getsockname()[1] if sockets else port
    finally:
        await runner.cleanup()
