"""CAMEL through the whole stack, beside the native protocol in the same run.

An embedded redis-server, ``run_ocs`` with the gsmSCF on SCTP over UDP (libusrsctp,
127.0.0.1) in this process, and the MSC simulator in a **child process** on its own
association, so this process's CPU time is the OCS's alone. A CAMEL call is InitialDP,
EventReportBCSM (answer), ApplyChargingReport (60 s), then the final ApplyChargingReport with
EventReportBCSM (disconnect) at 100 s: four TCAP messages from the MSC, three answers. The
native equivalent is reserve, commit 60, release 40 (three requests). N calls in flight each.

The CAMEL run is done three times in the same run, in the OCS and in the simulator alike:
with pycrate alone (``fastber.enabled`` off) on the transport as it was first built (a Python
ctypes upcall, one packet a message); with the BER fast path (protocols/sigtran/fastber.py) on
that transport; and with the fast path on the transport as it is (libc's ``fputc`` as the C
upcall, the sends of a loop turn bundled: protocols/sigtran/usrsctp.py). Then a codec-only
measure of the seven messages of a call, both ways, medians of rounds. Both processes run
uvloop, as ``ocs serve`` does (``--loop asyncio`` for the standard loop).

The OCS's garbage collector is tuned as ``ocs serve`` tunes it (``ocs.clikit.tune_gc``:
start-up's objects frozen, gen-0 collections every 20,000 allocations); ``--gc default``
leaves Python's thresholds as they are.

``--compare TREE [TREE...]`` runs the fast variant of each source tree (its own code in
both processes) in alternating rounds on this machine and prints each run's OCS CPU per
message and the medians' ratios to the first tree: the same-run comparison of two versions
on a shared machine (nothing is appended).

    .venv/bin/python -m bench.camel [--calls N] [--inflight N] [--loop L] [--gc G]
        [--no-append] [--compare TREE...] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.charging import RESULTS
from bench.credentials import NATIVE_KEY, ocs_env
from ocs.clikit import tune_gc, use_uvloop
from ocs.config import Settings
from ocs.redis_server import EmbeddedRedis
from ocs.service import run_ocs
from ocs.sims.msc import CallOutcome, CallSpec, connect_msc, place_call, run_calls
from protocols.native import NativeClient
from protocols.sigtran import cap, fastber, tcap, usrsctp
from protocols.sigtran.constants import O_EVENTS, Op, Phase
from protocols.sigtran.tcap import Invoke, MessageType, TcapMessage

#: The event loop of both processes (main() sets it), and the embedded Redis's pid.
RUN: dict[str, Any] = {"loop": "uvloop", "redis_pid": 0}


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp: the machine's, every process's)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))


def run_queue_wait(pid: int = 0) -> float:
    """Seconds the threads of process ``pid`` (0: this one) have waited for a CPU while
    runnable (/proc/PID/task/*/schedstat, second field, nanoseconds): the machine's share of
    the latency, which no code of ours can cut."""
    total = 0
    base = f"/proc/{pid or 'self'}/task"
    try:
        for t in os.listdir(base):
            with contextlib.suppress(OSError), open(f"{base}/{t}/schedstat") as f:
                total += int(f.read().split()[1])
    except OSError:
        return 0.0
    return total / 1e9


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _bench(
    url: str, calls: int, inflight: int, rate: float = 0.0,
    variants: tuple[tuple[str, bool, bool], ...] | None = None, hops: bool = False,
) -> dict[str, float]:  # fmt: skip
    """Each of ``variants`` (``VARIANTS``), then the native calls: closed loop (``inflight``
    calls at once), or open loop at ``rate`` calls/s (Poisson arrivals; the native calls
    closed loop)."""
    udp = _free_udp_port()
    settings = Settings(
        redis_url=url,
        native_port=0,
        http_port=0,
        diameter_port=0,
        camel_transport="sctp-udp",
        camel_port=2905,
        camel_udp_port=udp,
        camel_peers="*",
        native_keys=ocs_env()["OCS_NATIVE_KEYS"],
        secret_key=ocs_env()["OCS_SECRET_KEY"],
    )
    async with run_ocs(settings) as ocs:
        subs = [f"4917{i:08d}" for i in range(1000)]
        for s in subs:
            await ocs.store.create_subscriber(s, plan="prepaid-basic", balance=10**12,
                                              credit_limit=0, state="active", now=0)  # fmt: skip
        assert ocs.camel is not None
        out: dict[str, float] = {}
        lib = usrsctp._Library.get(udp)
        for name, enabled, c_upcall in variants or VARIANTS:
            fastber.enabled = enabled
            # (the association the simulator opens is accepted with these)
            lib.python_upcall = not c_upcall
            usrsctp.SctpAssociation.bundle = c_upcall
            m0 = ocs.camel.counters
            before = m0.messages_in + m0.messages_out
            c0 = time.process_time()
            q0, rq0 = run_queue_wait(), run_queue_wait(RUN["redis_pid"])
            udp0 = udp_counters()
            h = Hops(ocs.camel) if hops else None
            sim = await _simulate(udp, calls, inflight, enabled, c_upcall, rate)
            cpu = time.process_time() - c0
            if h is not None:
                out.update({f"{name}_{k}": v for k, v in h.close().items()})
            q1, rq1 = run_queue_wait(), run_queue_wait(RUN["redis_pid"])
            udp1 = udp_counters()
            msgs = ocs.camel.counters.messages_in + ocs.camel.counters.messages_out - before
            # Waiting for a CPU, per message, of each process (ms).
            out[f"{name}_runq_ocs_ms"] = (q1 - q0) / msgs * 1e3
            out[f"{name}_runq_redis_ms"] = (rq1 - rq0) / msgs * 1e3
            out[f"{name}_runq_sim_ms"] = sim["runq"] / msgs * 1e3
            # UDP datagrams per CAP message, both ways, and datagrams the kernel dropped.
            out[f"{name}_udp_per_msg"] = (udp1["OutDatagrams"] - udp0["OutDatagrams"]) / msgs
            out[f"{name}_udp_dropped"] = sum(udp1[k] - udp0[k] for k in ("RcvbufErrors",
                                             "SndbufErrors", "InErrors"))  # fmt: skip
            out.update(
                {f"{name}_sim_{k}": sim[k] for k in ("gc_n", "gc_max_ms", "gc_ms", "gc_gens")}
            )
            wall = sim["wall"]
            out.update({f"{name}_calls_s": calls / wall, f"{name}_msgs_s": msgs / wall,
                        f"{name}_cpu_us_msg": cpu / msgs * 1e6, f"{name}_p99_ms": sim["p99_ms"],
                        f"{name}_p50_ms": sim["p50_ms"], f"{name}_p999_ms": sim["p999_ms"],
                        f"{name}_max_ms": sim["max_ms"], f"{name}_lag_p99_ms": sim["lag_p99_ms"],
                        f"{name}_sim_cpu_us_msg": sim["cpu"] / msgs * 1e6})  # fmt: skip
        fastber.enabled = True
        lib.python_upcall, usrsctp.SctpAssociation.bundle = False, True
        async with NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as client:
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


class GcPauses:
    """The collector's pauses in this process while open (seconds each)."""

    def __init__(self) -> None:
        import gc

        self.pauses: list[float] = []
        #: Collections of each generation.
        self.generations = [0, 0, 0]
        self._t = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._t)
            self.generations[info["generation"]] += 1

    def close(self) -> list[float]:
        import gc

        gc.callbacks.remove(self._on_gc)
        return sorted(self.pauses)


class Hops:
    """Where a message's time goes inside the OCS (``--hops``): wrappers, in this process
    only, around what every tree has -- the association's read, the server's task per
    message, the engine's two verbs, the association's send and flush -- and the collector's
    pauses. Seconds, one value per event; wrapping costs CPU, so a run with it measures
    latency, not CPU."""

    def __init__(self, server: Any) -> None:
        self.wait: list[float] = []  # read -> the message's task starts
        self.task: list[float] = []  # the task: decode, agent, engine, encode, queue
        self.engine: list[float] = []  # an engine verb (the Redis round trip and more)
        self.queued: list[float] = []  # an answer queued -> handed to usrsctp
        self.gc: list[float] = []  # a collection
        self.turn: list[int] = []  # messages per flush
        perf = time.perf_counter
        hops = self
        tcap = server._tcap

        async def run(t_in: float, a: Any, pd: Any, u: Any) -> None:
            t1 = perf()
            hops.wait.append(t1 - t_in)
            await tcap(a, pd, u)
            hops.task.append(perf() - t1)

        server._tcap = lambda a, pd, u: run(perf(), a, pd, u)
        engine = server.user.engine
        for verb in ("reserve_units", "settle"):
            orig = getattr(engine, verb)

            async def timed(*args: Any, _orig: Any = orig, **kw: Any) -> Any:
                t0 = perf()
                try:
                    return await _orig(*args, **kw)
                finally:
                    hops.engine.append(perf() - t0)

            setattr(engine, verb, timed)
        cls = usrsctp.SctpAssociation
        self._cls, self._send, self._flush = cls, cls.send, cls._flush
        sent: list[float] = []
        send, flush = cls.send, cls._flush

        def send_(a: Any, stream: int, data: bytes) -> None:
            sent.append(perf())
            send(a, stream, data)

        def flush_(a: Any) -> None:
            t = perf()
            hops.queued.extend(t - x for x in sent)
            hops.turn.append(len(sent))
            sent.clear()
            flush(a)

        cls.send, cls._flush = send_, flush_  # type: ignore[method-assign,assignment]
        self._gc = GcPauses()

    def close(self) -> dict[str, float]:
        self.gc = self._gc.close()
        self._cls.send, self._cls._flush = self._send, self._flush  # type: ignore[method-assign]
        out: dict[str, float] = {}
        for name in ("wait", "task", "engine", "queued", "gc"):
            xs = sorted(getattr(self, name))
            for q, tag in ((0.5, "p50"), (0.99, "p99")):
                out[f"hop_{name}_{tag}_ms"] = _quantile(xs, q) * 1e3
            out[f"hop_{name}_max_ms"] = xs[-1] * 1e3 if xs else 0.0
        out["hop_gc_n"] = len(self.gc)
        out["hop_gc_gens"] = "/".join(map(str, self._gc.generations))  # type: ignore[assignment]
        out["hop_msgs_per_flush"] = statistics.mean(self.turn) if self.turn else 0.0
        return out


#: (name, BER fast path, the transport as it is: C upcall and bundled sends).
VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("pycrate", False, False),
    ("fast-pyupcall", True, False),
    ("fast", True, True),
)


#: This file, run by path in the simulator's process and by ``--compare`` in each tree's (the
#: tree's code measured by this harness: an older tree's own bench.camel has no open loop).
HARNESS = os.path.abspath(__file__)
#: ``python -c`` of this: loads HARNESS as a module (the tree's packages on sys.path) and
#: runs its ``main()`` with the arguments that follow.
_LOAD = (
    "import sys, importlib.util as u; s = u.spec_from_file_location('camel_harness', {!r}); "
    "m = u.module_from_spec(s); sys.modules['camel_harness'] = m; s.loader.exec_module(m); "
)


async def _simulate(
    remote_udp: int, calls: int, inflight: int, enabled: bool, c_upcall: bool, rate: float
) -> dict[str, Any]:
    """The MSC simulator's run in a child process (its CPU is not the OCS's)."""
    # CAMEL_SIM_PREFIX: a command the simulator runs under, e.g. "valgrind --tool=callgrind
    # --callgrind-out-file=F" for its instructions per message (noise-free, bench/RESULTS.md).
    prefix = os.environ.get("CAMEL_SIM_PREFIX", "").split()
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-c", _LOAD.format(HARNESS) + "m.main()", "--sim", str(remote_udp),
        str(_free_udp_port()), str(calls), str(inflight), "1" if enabled else "0",
        "1" if c_upcall else "0", "--rate", str(rate), "--loop", RUN["loop"],
        stdout=subprocess.PIPE)  # fmt: skip
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the simulator failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.decode().splitlines()[-1])
    return result


async def open_loop(
    msc: Any, specs: list[CallSpec], rate: float, seed: int = 14
) -> tuple[list[CallOutcome], list[float]]:
    """Open loop: each call starts at its Poisson arrival (``rate`` calls/s on average),
    whatever the answers to the others; also how late each started (the simulator's own lag:
    a start later than its arrival is time the per-message latencies do not see)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    tasks: list[asyncio.Task[CallOutcome]] = []
    lags: list[float] = []
    due = loop.time()
    for spec in specs:
        due += rng.expovariate(rate)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, loop.time() - due))
        tasks.append(loop.create_task(place_call(msc, spec)))
    return list(await asyncio.gather(*tasks)), lags


def _quantile(xs: list[float], q: float) -> float:
    """The q-quantile of sorted ``xs`` (nearest rank)."""
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


async def _sim_main(
    remote_udp: int, udp: int, calls: int, inflight: int, c_upcall: bool, rate: float = 0.0
) -> dict[str, Any]:
    subs = [f"4917{i:08d}" for i in range(1000)]
    usrsctp._Library.get(udp).python_upcall = not c_upcall
    usrsctp.SctpAssociation.bundle = c_upcall
    lags: list[float] = []
    async with connect_msc("127.0.0.1", 2905, udp_port=udp, remote_udp_port=remote_udp) as msc:
        specs = [CallSpec(subs[i % len(subs)], "4930123456", 100) for i in range(calls)]
        c0, t0, q0 = time.process_time(), time.perf_counter(), run_queue_wait()
        gcs = GcPauses()
        if rate > 0:
            outcomes, lags = await open_loop(msc, specs, rate)
        else:
            outcomes = await run_calls(msc, specs, inflight)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runq = run_queue_wait() - q0
        pauses = gcs.close()
    bad = [o for o in outcomes if o.result != "ended"]
    assert not bad, bad[:3]
    lat = sorted(x for o in outcomes for x in o.latencies)
    lags.sort()
    return {"wall": wall, "cpu": cpu, "runq": runq, "p50_ms": _quantile(lat, 0.5) * 1e3,
            "p99_ms": _quantile(lat, 0.99) * 1e3, "p999_ms": _quantile(lat, 0.999) * 1e3,
            "max_ms": lat[-1] * 1e3, "lag_p99_ms": _quantile(lags, 0.99) * 1e3,
            "gc_n": len(pauses), "gc_max_ms": pauses[-1] * 1e3 if pauses else 0.0,
            "gc_ms": sum(pauses) * 1e3, "gc_gens": "/".join(map(str, gcs.generations))}  # fmt: skip


def _call_messages(phase: Phase) -> list[TcapMessage]:
    """The seven TCAP messages of a call (as bench and simulator send them)."""
    idp = cap.initial_dp(service_key=100, calling="491700000001", called="4930123456",
                         imsi="262011234567890", location=("262", "01"), msc="491720000000",
                         call_reference=b"\1\2\3\4")  # fmt: skip
    ac = cap.apply_charging(phase, 600, tariff_switch=30)
    return [
        TcapMessage(MessageType.BEGIN, otid=b"\0\0\0\1", dialogue=tcap.request(phase),
                    components=(Invoke(1, Op.INITIAL_DP, idp),)),
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\2", dtid=b"\0\0\0\1",
                    dialogue=tcap.accepted(phase), components=(
                        Invoke(1, Op.REQUEST_REPORT_BCSM_EVENT, cap.request_report(O_EVENTS)),
                        Invoke(2, Op.APPLY_CHARGING, ac), Invoke(3, Op.CONTINUE))),
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\1", dtid=b"\0\0\0\2", components=(
            Invoke(2, Op.EVENT_REPORT_BCSM, cap.event_report("oAnswer", 2)),)),
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\1", dtid=b"\0\0\0\2", components=(
            Invoke(3, Op.APPLY_CHARGING_REPORT, cap.call_result(600)),)),
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\2", dtid=b"\0\0\0\1",
                    components=(Invoke(4, Op.APPLY_CHARGING, ac),)),
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\1", dtid=b"\0\0\0\2", components=(
            Invoke(4, Op.APPLY_CHARGING_REPORT, cap.call_result(1000, leg_active=False)),
            Invoke(5, Op.EVENT_REPORT_BCSM, cap.event_report("oDisconnect", 1)))),
        TcapMessage(MessageType.END, dtid=b"\0\0\0\1"),
    ]  # fmt: skip


def _codec(rounds: int = 7, n: int = 100) -> dict[str, float]:
    """Microseconds to encode and decode one message of a call (median of rounds), by each
    codec, with the payload codecs (ApplyCharging, CAMEL-CallResult) as the agent uses them."""
    msgs = [m for p in Phase for m in _call_messages(p)]
    out = {}
    for name, enabled in (("pycrate", False), ("fast", True)):
        fastber.enabled = enabled
        times = []
        for _ in range(rounds):
            t0 = time.process_time()
            for _ in range(n):
                for m in msgs:
                    tcap.decode(tcap.encode(m))
                cap.read_call_result(Invoke(1, 36, cap.call_result(600)))
                cap.read_apply_charging(Phase.V2, Invoke(1, 35, cap.apply_charging(Phase.V2, 600)))
            times.append((time.process_time() - t0) / (n * len(msgs)) * 1e6)
        out[f"{name}_codec_us"] = statistics.median(times)
    fastber.enabled = True
    return out


#: What --compare runs in each tree, after ``_LOAD`` (this file as ``m``; the tree's ocs and
#: protocols packages): this harness's ``_bench`` on the tree's code.
_TREE_RUN = """
import asyncio, json
bc = m
from ocs.clikit import tune_gc, use_uvloop
from ocs.redis_server import EmbeddedRedis
calls, inflight, loop, gc_mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rate = float(sys.argv[5])
bc.RUN["loop"] = loop
if loop == "uvloop":
    use_uvloop()
if gc_mode == "serve":
    tune_gc()
# The codec's first use (a tree may import pycrate's grammar then) is outside the window.
for p in bc.Phase:
    for msg in bc._call_messages(p):
        bc.tcap.decode(bc.tcap.encode(msg))
bc.VARIANTS = (("fast", True, True),)
with bc.tempfile.TemporaryDirectory() as d:
    redis = EmbeddedRedis(d)
    redis.start()
    bc.RUN["redis_pid"] = redis.pid
    try:
        print(json.dumps(asyncio.run(bc._bench(redis.url, calls, inflight, rate))))
    finally:
        redis.stop()
"""


def _compare(
    trees: list[str], rounds: int, calls: int, inflight: int, loop: str, gc_mode: str,
    rate: float = 0.0,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Each tree's fast variant, in turns (the order alternating by round); each tree's
    figures by name, a value per round."""
    paths = [os.path.abspath(t) for t in trees]
    names = ("fast_cpu_us_msg", "native_cpu_us_req", "fast_p50_ms", "fast_p99_ms",
             "fast_p999_ms", "fast_sim_cpu_us_msg", "fast_calls_s")  # fmt: skip
    runs: dict[str, dict[str, list[float]]] = {t: {n: [] for n in names} for t in paths}
    for r in range(rounds):
        for t in paths if r % 2 == 0 else paths[::-1]:
            env = {**os.environ, "PYTHONPATH": t}
            out = subprocess.run(
                [sys.executable, "-c", _LOAD.format(HARNESS) + _TREE_RUN, str(calls),
                 str(inflight), loop, gc_mode, str(rate)],
                cwd=t, env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            res = json.loads(out.stdout.splitlines()[-1])
            for n in names:
                runs[t][n].append(res[n])
            print(f"round {r + 1} {t}: OCS CPU {res['fast_cpu_us_msg']:.1f} us/msg, "
                  f"{res['fast_calls_s']:.0f} calls/s, p50/p99/p99.9 {res['fast_p50_ms']:.1f} / "
                  f"{res['fast_p99_ms']:.1f} / {res['fast_p999_ms']:.1f} ms, call start lag p99 "
                  f"{res['fast_lag_p99_ms']:.1f} ms; simulator {res['fast_sim_cpu_us_msg']:.1f} "
                  f"us/msg; native {res['native_cpu_us_req']:.1f} us/req; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    med = statistics.median
    base = med(runs[paths[0]]["fast_cpu_us_msg"])
    for t in paths:
        f = runs[t]
        m = med(f["fast_cpu_us_msg"])
        print(
            f"{t}: median OCS CPU {m:.1f} us/msg ({m / base:.3f} of the first), p50 / p99 "
            f"{med(f['fast_p50_ms']):.1f} / {med(f['fast_p99_ms']):.1f} ms (p99 runs "
            f"{[round(x, 1) for x in f['fast_p99_ms']]}), native "
            f"{med(f['native_cpu_us_req']):.1f} us/req, CPU runs "
            f"{[round(x, 1) for x in f['fast_cpu_us_msg']]}"
        )
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument(
        "--gc",
        choices=("serve", "default"),
        default="serve",
        help="the OCS's collector tuned as ocs serve tunes it, or Python's default",
    )
    ap.add_argument("--no-append", action="store_true", help="do not add to bench/RESULTS.md")
    ap.add_argument("--compare", nargs="+", metavar="TREE", help="compare source trees")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --compare")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: calls/s offered, Poisson arrivals (0: closed loop, --inflight at once)",
    )
    ap.add_argument("--aof", choices=("everysec", "no"), default="everysec",
                    help="the embedded Redis append-only file (no: without it)")  # fmt: skip
    ap.add_argument("--hops", action="store_true",
                    help="time the hops inside the OCS (latency only: costs CPU)")  # fmt: skip
    ap.add_argument("--sim", nargs=6, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    RUN["loop"] = args.loop
    if args.loop == "uvloop":
        use_uvloop()
    if args.sim:  # the child: REMOTE_UDP UDP CALLS INFLIGHT FAST C_UPCALL
        remote, udp, calls, inflight, fast, c_upcall = args.sim
        fastber.enabled = bool(fast)
        # The simulator's collector as the OCS's (its full collections of every call's
        # objects took 30-100 ms at 750-1,000 calls/s, counted in the latencies it measures).
        tune_gc()
        print(json.dumps(asyncio.run(_sim_main(remote, udp, calls, inflight, bool(c_upcall),
                                               args.rate))))  # fmt: skip
        return
    if args.compare:
        _compare(args.compare, args.rounds, args.calls, args.inflight, args.loop, args.gc,
                 args.rate)  # fmt: skip
        return
    if args.gc == "serve":
        tune_gc()
    # Open loop: the fast variant alone (pycrate's ~3x the CPU cannot take 1,500 calls/s: an
    # offered rate above what a variant serves only grows its queue).
    variants = VARIANTS if args.rate <= 0 else VARIANTS[-1:]
    with tempfile.TemporaryDirectory() as d:
        redis = EmbeddedRedis(d, appendonly=args.aof == "everysec")
        redis.start()
        RUN["redis_pid"] = redis.pid
        try:
            r = asyncio.run(_bench(redis.url, args.calls, args.inflight, args.rate, variants,
                                   args.hops))  # fmt: skip
        finally:
            redis.stop()
    r.update(_codec())
    per_core = 1e6 / r["fast_cpu_us_msg"] / 7
    r["fast-pyupcall_codec_us"] = r["fast_codec_us"]
    load = (f"open loop at {args.rate:g} calls/s offered (Poisson arrivals)" if args.rate > 0
            else f"{args.inflight} in flight")  # fmt: skip
    text = (
        f"\n## bench.camel ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.calls} "
        f"calls, {load}, {args.loop}, collector {args.gc}; OCS in this "
        f"process, MSC simulator in a child process, 2 shared cores, load average "
        f"{os.getloadavg()[0]:.1f})\n\n"
        f"| variant | calls/s | CAP msgs/s | OCS CPU us/msg | simulator CPU us/msg "
        f"| p50 / p99 / p99.9 ms per message | codec us/msg (enc+dec) |\n"
        f"|---|---:|---:|---:|---:|---:|---:|\n"
        + "".join(
            f"| {n} | {r[n + '_calls_s']:.0f} | {r[n + '_msgs_s']:.0f} | "
            f"{r[n + '_cpu_us_msg']:.0f} | {r[n + '_sim_cpu_us_msg']:.0f} | "
            f"{r[n + '_p50_ms']:.1f} / {r[n + '_p99_ms']:.1f} / {r[n + '_p999_ms']:.1f} | "
            f"{r[n + '_codec_us']:.0f} |\n"
            for n, _, _ in variants
        )
        + "\n(pycrate and fast-pyupcall: a Python ctypes upcall, one packet a message; fast: "
        "libc's fputc as the upcall, a loop turn's sends bundled)\n"
        f"\n- native, same calls (reserve, commit, release): {r['native_calls_s']:.0f} calls/s, "
        f"{r['native_cpu_us_req']:.0f} us OCS CPU per request\n"
        + (
            f"- same-run ratios: OCS CPU per message pycrate/fast "
            f"{r['pycrate_cpu_us_msg'] / r['fast_cpu_us_msg']:.2f}, fast-pyupcall/fast "
            f"{r['fast-pyupcall_cpu_us_msg'] / r['fast_cpu_us_msg']:.2f}; codec pycrate/fast "
            f"{r['pycrate_codec_us'] / r['fast_codec_us']:.1f}\n"
            if len(variants) == len(VARIANTS)
            else f"- the fast variant's call start lag (simulator) p99 "
            f"{r['fast_lag_p99_ms']:.1f} ms, per message p99.9 {r['fast_p999_ms']:.1f} ms, "
            f"max {r['fast_max_ms']:.1f} ms\n"
        )
        + f"- CAMEL (fast) per call / native per call, OCS CPU "
        f"{r['fast_cpu_us_msg'] * 7 / (r['native_cpu_us_req'] * 3):.2f}\n"
        f"- one core at the fast variant's OCS CPU per message: ~{per_core:.0f} calls/s "
        f"(7 messages a call); the target is 1,500 calls/s\n"
    )
    text += "".join(
        f"- UDP datagrams per CAP message ({v}, both ways; the machine's count): "
        f"{r[f'{v}_udp_per_msg']:.2f}, dropped {r[f'{v}_udp_dropped']:.0f}\n"
        for v, _, _ in variants
    )
    text += "".join(
        f"- waiting for a CPU while runnable, per message ({v}): OCS {r[f'{v}_runq_ocs_ms']:.2f}"
        f" ms, simulator {r[f'{v}_runq_sim_ms']:.2f} ms, Redis {r[f'{v}_runq_redis_ms']:.2f} ms\n"
        for v, _, _ in variants
    )
    text += "".join(
        f"- the simulator's collector ({v}): {r[f'{v}_sim_gc_n']:.0f} collections (gen 0/1/2: "
        f"{r[f'{v}_sim_gc_gens']}), "
        f"{r[f'{v}_sim_gc_ms']:.0f} ms in all, the longest {r[f'{v}_sim_gc_max_ms']:.1f} ms\n"
        for v, _, _ in variants
    )
    if args.hops:
        text += "".join(
            f"- inside the OCS, {n}: p50 / p99 / max {r[f'{v}_hop_{n}_p50_ms']:.2f} / "
            f"{r[f'{v}_hop_{n}_p99_ms']:.2f} / {r[f'{v}_hop_{n}_max_ms']:.2f} ms ({v})\n"
            for v, _, _ in variants
            for n in ("wait", "task", "engine", "queued", "gc")
        ) + "".join(f"- {v}: {r[f'{v}_hop_gc_n']:.0f} collections (gen 0/1/2: "
                    f"{r[f'{v}_hop_gc_gens']}), "
                    f"{r[f'{v}_hop_msgs_per_flush']:.2f} messages per flush\n"
                    for v, _, _ in variants)  # fmt: skip
    print(text)
    if not args.no_append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
