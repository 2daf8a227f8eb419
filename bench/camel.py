"""CAMEL through the whole stack, beside the native protocol in the same run.

One process: an embedded redis-server, ``run_ocs`` with the gsmSCF on SCTP over UDP
(libusrsctp, 127.0.0.1), the MSC simulator on its own association, and a native client. A
CAMEL call is InitialDP, EventReportBCSM (answer), ApplyChargingReport (60 s), then the
final ApplyChargingReport with EventReportBCSM (disconnect) at 100 s: four TCAP messages from
the MSC, three answers (seven CAP messages, eight operations in). The native equivalent is
reserve, commit 60, release 40 (three requests). N calls in flight each.

The OCS and the simulator share the process (and the machine's two cores with Redis), so
"CPU per message" here is the whole process's CPU time (OCS + simulator + native client)
over the TCAP messages the OCS received and sent: an upper bound on the OCS's share.

    .venv/bin/python -m bench.camel [--calls N] [--inflight N] [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time

from bench.charging import RESULTS
from ocs.config import Settings
from ocs.redis_server import EmbeddedRedis
from ocs.service import run_ocs
from ocs.sims.msc import CallSpec, connect_msc, run_calls
from protocols.native import NativeClient


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _bench(url: str, calls: int, inflight: int) -> dict[str, float]:
    udp = _free_udp_port()
    settings = Settings(
        redis_url=url,
        native_port=0,
        http_port=0,
        diameter_port=0,
        camel_transport="sctp-udp",
        camel_port=2905,
        camel_udp_port=udp,
    )
    async with run_ocs(settings) as ocs:
        subs = [f"4917{i:08d}" for i in range(1000)]
        for s in subs:
            await ocs.store.create_subscriber(s, plan="prepaid-basic", balance=10**12,
                                              credit_limit=0, state="active", now=0)  # fmt: skip
        assert ocs.camel is not None
        out: dict[str, float] = {}
        async with connect_msc("127.0.0.1", 2905, udp_port=udp, remote_udp_port=udp) as msc:
            specs = [CallSpec(subs[i % len(subs)], "4930123456", 100) for i in range(calls)]
            c0, t0, m0 = time.process_time(), time.perf_counter(), ocs.camel.counters
            before = m0.messages_in + m0.messages_out
            outcomes = await run_calls(msc, specs, inflight)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            msgs = ocs.camel.counters.messages_in + ocs.camel.counters.messages_out - before
            bad = [o for o in outcomes if o.result != "ended"]
            assert not bad, bad[:3]
            out.update(camel_calls_s=calls / wall, camel_msgs_s=msgs / wall,
                       camel_cpu_us_msg=cpu / msgs * 1e6)  # fmt: skip
        async with NativeClient("127.0.0.1", ocs.native.port) as client:
            sem = asyncio.Semaphore(inflight)

            async def one(i: int) -> None:
                async with sem:
                    sid, sub = f"n{i}", subs[i % len(subs)]
                    await client.reserve(sid, sub, "voice", 0, destination="4930123456",
                                         location="26201")  # fmt: skip
                    await client.commit(sid, 1, 60, subscriber=sub)
                    await client.release(sid, 2, 40, subscriber=sub)

            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(calls)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out.update(native_calls_s=calls / wall, native_cpu_us_req=cpu / (3 * calls) * 1e6)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--no-append", action="store_true", help="do not add to bench/RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        redis = EmbeddedRedis(d)
        redis.start()
        try:
            r = asyncio.run(_bench(redis.url, args.calls, args.inflight))
        finally:
            redis.stop()
    text = (
        f"\n## bench.camel ({time.strftime('%Y-%m-%d')}, {args.calls} calls, {args.inflight} in"
        f" flight, one process: OCS + MSC simulator + native client)\n\n"
        f"- CAMEL over SCTP-over-UDP: {r['camel_calls_s']:.0f} calls/s, "
        f"{r['camel_msgs_s']:.0f} TCAP messages/s, {r['camel_cpu_us_msg']:.0f} us process CPU "
        f"per message (OCS and simulator together)\n"
        f"- native, same calls (reserve, commit, release): {r['native_calls_s']:.0f} calls/s, "
        f"{r['native_cpu_us_req']:.0f} us per request\n"
        f"- ratio CAMEL/native calls/s: {r['camel_calls_s'] / r['native_calls_s']:.2f}; the "
        f"target is 1,500 calls/s\n"
    )
    print(text)
    if not args.no_append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
