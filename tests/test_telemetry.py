"""The mediation's metrics (files, records, lag from file close) and the /metrics listener of a
process without the HTTP API (``ocs mediation run --metrics-port``)."""

from __future__ import annotations

import gc
import re

import aiohttp

from ocs.mediation.pipeline import FileReport
from ocs.metrics import Metrics
from ocs.telemetry import count_file, serving


async def test_mediated_files_are_counted_and_served() -> None:
    m = Metrics()
    count_file(m, FileReport("a.ber", "msc1", records=5, charged=4, rejected=1,
                             closed_at=1_000_000, done_at=1_042_500))  # fmt: skip
    count_file(m, FileReport("b.ber", "msc1", records=3, charged=3, closed_at=2_000_000,
                             done_at=2_001_000))  # fmt: skip
    count_file(m, FileReport("c.ber", "msc1", duplicate=True))
    async with (
        serving(m, "127.0.0.1", 0) as port,
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    for line in [
        'ocs_mediation_files_total{result="rejected"} 1.0',
        'ocs_mediation_files_total{result="done"} 1.0',
        'ocs_mediation_files_total{result="duplicate"} 1.0',
        'ocs_mediation_records_total{result="charged"} 7.0',
        'ocs_mediation_records_total{result="rejected"} 1.0',
        "ocs_mediation_lag_seconds 1.0",  # the newest file's
    ]:
        assert line in text, line


def test_garbage_collector_pauses_are_timed_by_generation() -> None:
    m = Metrics()
    stop = m.watch_gc()
    try:
        gc.collect(1)
    finally:
        stop()
    text = m.render().decode()
    count = re.search(r'ocs_gc_pause_seconds_count\{generation="1"\} (\S+)', text)
    assert count is not None and float(count.group(1)) >= 1
    n = float(count.group(1))
    gc.collect(1)  # stopped: not counted any more
    again = re.search(r'ocs_gc_pause_seconds_count\{generation="1"\} (\S+)', m.render().decode())
    assert again is not None and float(again.group(1)) == n
    stop()  # twice is harmless
