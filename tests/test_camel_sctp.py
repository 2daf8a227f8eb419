"""CAMEL through real SCTP associations: ``ocs serve``'s gsmSCF (run_ocs with
OCS_CAMEL_TRANSPORT=sctp-udp) and the MSC simulator, each on SCTP over UDP (RFC 6951) through
libusrsctp, bound to 127.0.0.1; Wireshark's dissectors judge the captured wire; mutated
messages get their protocol's answer while calls go on. Skipped where libusrsctp2 (or, for
the capture, tshark/dumpcap) is missing."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ocs.config import Settings
from ocs.service import Running, run_ocs
from ocs.sims.msc import CallSpec, SsfStack, connect_msc, place_call, run_calls
from protocols.sigtran import cap, m3ua, tcap
from protocols.sigtran.constants import DATA, Op, Phase, Tag
from protocols.sigtran.m3ua import M3uaMessage, ProtocolData
from protocols.sigtran.tcap import MessageType, TcapMessage
from tests.plans import flat_voice

MICRO = 1_000_000
#: A flat per-second rate (0.06 a minute), whatever the time of day: the figures below are
#: the tariff's, computed by hand.
FLAT = flat_voice("flat-voice")
PER_SECOND = 1_000  # micro-units
#: Where calls the credit cannot start go (OCS_CAMEL_REDIRECT): a top-up announcement.
REDIRECT = "4980012345"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def udp_port() -> int:
    """The process's libusrsctp UDP port (one per process: every test here shares it)."""
    try:
        from protocols.sigtran import usrsctp

        port = _free_udp_port()
        usrsctp._Library.get(port)
    except Exception as exc:  # SctpUnavailable, or no ctypes binding
        pytest.skip(f"libusrsctp2 is not available: {exc}")
    return port


@pytest.fixture
async def ocs(redis_url: str, udp_port: int) -> AsyncIterator[Running]:
    settings = Settings(
        redis_url=redis_url, native_port=0, http_port=0, diameter_port=0, sweep_interval=0.2,
        camel_transport="sctp-udp", camel_port=2905, camel_udp_port=udp_port,
        camel_dialogue_timeout=30, camel_peers="*", camel_redirect=REDIRECT,
    )  # fmt: skip
    async with run_ocs(settings, plans=[FLAT]) as running:
        assert running.camel is not None
        yield running


@pytest.fixture
async def msc(ocs: Running, udp_port: int) -> AsyncIterator[SsfStack]:
    async with connect_msc("127.0.0.1", 2905, udp_port=udp_port,
                           remote_udp_port=udp_port) as stack:  # fmt: skip
        yield stack


async def add(ocs: Running, msisdn: str, balance: int, state: str = "active") -> None:
    ans = await ocs.store.create_subscriber(msisdn, plan="flat-voice", balance=balance,
                                            credit_limit=0, state=state, now=0)  # fmt: skip
    assert ans.status == "OK"


async def money(ocs: Running, msisdn: str) -> tuple[int, int]:
    acct = await ocs.store.get_account(msisdn)
    assert acct is not None
    return acct.balance, acct.reserved


async def test_calls_over_sctp_are_charged_cut_off_and_refused_as_the_tariff_says(
    ocs: Running, msc: SsfStack
) -> None:
    await add(ocs, "491700000101", 10 * MICRO)
    await add(ocs, "491700000102", 100_000)  # 100 s at 0.06 a minute
    await add(ocs, "491700000103", 10 * MICRO, state="barred-outgoing")
    ended, cut, barred = await run_calls(msc, [
        CallSpec("491700000101", "4930123456", 125, phase=Phase.V2),
        CallSpec("491700000102", "4930123456", 3600, phase=Phase.V4),
        CallSpec("491700000103", "4930123456", 60, phase=Phase.V3),
    ])  # fmt: skip
    assert (ended.result, ended.talked, ended.grants) == ("ended", 125, [60, 60, 60])
    assert await money(ocs, "491700000101") == (10 * MICRO - 125 * PER_SECOND, 0)
    assert (cut.result, cut.talked, cut.grants) == ("cut-off", 100, [60, 40])
    assert cut.warning_tone
    assert await money(ocs, "491700000102") == (0, 0)
    assert (barred.result, barred.cause) == ("released", 21)
    assert await money(ocs, "491700000103") == (10 * MICRO, 0)


async def test_a_lost_association_leaves_holds_to_the_tc_timer(ocs: Running, udp_port: int) -> None:
    await add(ocs, "491700000104", 10 * MICRO)
    async with connect_msc("127.0.0.1", 2905, udp_port=udp_port,
                           remote_udp_port=udp_port) as stack:  # fmt: skip
        tid = stack.new_tid()
        idp = cap.initial_dp(service_key=100, calling="491700000104", called="4930123456")
        stack.send(TcapMessage(MessageType.BEGIN, otid=tid, dialogue=tcap.request(Phase.V2),
                               components=(cap.invoke(Op.INITIAL_DP, 1, idp),)))  # fmt: skip
        await stack.answer(tid)
    assert (await money(ocs, "491700000104"))[1] == 60 * PER_SECOND
    assert ocs.camel is not None
    ocs.camel.clock = lambda: 1e12  # the TC timer runs out
    assert await ocs.camel.expire() == 1
    assert await money(ocs, "491700000104") == (10 * MICRO, 0)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        pos = rng.randrange(len(b))
        what = rng.random()
        if what < 0.5:
            b[pos] = rng.randrange(256)
        elif what < 0.75:
            del b[pos : pos + rng.randrange(1, 6)]
        else:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(b)


async def test_2000_mutated_messages_are_answered_while_calls_go_on(
    ocs: Running, msc: SsfStack
) -> None:
    """1,000 mutated TCAP messages (in good SCCP and M3UA), then 1,000 mutated M3UA messages:
    they get P-Aborts, Rejects, UDTSs, ERRs or ordinary answers, the server stays up, and
    calls work in between and after. (Not every mutation can be answered: one that turns
    into an ERR or NTFY of our peer's, or a TC-END, is taken note of, as the RFCs say.)"""
    await add(ocs, "491700000105", 100 * MICRO)
    rng = random.Random(2000)
    idp = cap.initial_dp(service_key=100, calling="491700000105", called="4930123456")
    seeds = [tcap.encode(TcapMessage(MessageType.BEGIN, otid=bytes([0, 0, 0x10, i]),
                                     dialogue=tcap.request(p),
                                     components=(cap.invoke(Op.INITIAL_DP, 1, idp),)))
             for i, p in enumerate(Phase)]  # fmt: skip
    assert ocs.camel is not None
    counters = ocs.camel.counters

    async def answered(start: int, sent: int, share: float) -> int:
        async def wait() -> None:
            while counters.answers() - start < sent * share:  # noqa: ASYNC110 (counters polled)
                await asyncio.sleep(0.02)

        try:
            await asyncio.wait_for(wait(), 30)
        except TimeoutError:
            raise AssertionError(
                f"{counters.answers() - start} answers to {sent}: {counters}"
            ) from None
        return counters.answers() - start

    for _ in range(4):
        start = counters.answers()
        for i in range(250):
            msc.send_sccp(msc.sccp_bytes(_mutate(rng, rng.choice(seeds))), sls=i % 8)
        got = await answered(start, 250, 0.95)
        ok = await place_call(msc, CallSpec("491700000105", "4930123456", 30))
        assert ok.result == "ended", (ok, got)
    pd = ProtocolData(2, 1, msc.sccp_bytes(seeds[0])).encode()
    good = m3ua.encode(M3uaMessage(*DATA, ((Tag.PROTOCOL_DATA, pd),)))
    start, errors = counters.answers(), counters.m3ua_errors
    for _ in range(1000):
        msc.send_raw(_mutate(rng, good), stream=1)
    await answered(start, 1000, 0.9)
    assert counters.m3ua_errors - errors > 500
    await msc.up()  # (a mutation may have been an ASP Down or Inactive: bring it back)
    ok = await place_call(msc, CallSpec("491700000105", "4930123456", 90))
    assert (ok.result, ok.talked) == ("ended", 90)
    assert counters.p_aborts > 100 and counters.rejects > 10


# -- Wireshark --------------------------------------------------------------------------------


def _tshark() -> tuple[str, str]:
    tshark, dumpcap = shutil.which("tshark"), shutil.which("dumpcap")
    if not tshark or not dumpcap:
        pytest.skip("tshark/dumpcap not installed (apt-get install tshark)")
    return tshark, dumpcap


def _size(path: Path) -> int:
    return path.stat().st_size  # (a stat of a local file: no need to leave the loop for it)


async def _probed(pcap: Path, port: int, within: float = 15.0) -> None:
    """Send probe datagrams (to a port nobody listens on) until the capture file has grown by
    one: dumpcap writes in order, so everything sent before it is in the file then."""
    size = _size(pcap)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        async with asyncio.timeout(within):
            while _size(pcap) == size:
                probe.sendto(b"probe", ("127.0.0.1", port))
                await asyncio.sleep(0.1)


async def test_wireshark_reads_a_camel_session_on_the_wire_without_complaint(
    ocs: Running, udp_port: int, tmp_path: Path
) -> None:
    tshark, dumpcap = _tshark()
    await add(ocs, "491700000106", 10 * MICRO)
    await add(ocs, "491700000107", 100_000)
    await add(ocs, "491700000108", MICRO, state="barred-outgoing")
    await add(ocs, "491700000109", 0)
    pcap = tmp_path / "camel.pcapng"
    probe_port = _free_udp_port()
    cap_proc = subprocess.Popen(  # noqa: ASYNC220 (started once, waited for off the loop)
        [dumpcap, "-q", "-i", "lo", "-f", f"udp port {udp_port} or udp port {probe_port}",
         "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # dumpcap says "Capturing" before its filter is in place: wait until a probe datagram
        # (to a port nobody listens on) is in the file, so that nothing of the call is lost.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not pcap.exists() or pcap.stat().st_size < 200:
            if loop.time() > deadline or cap_proc.poll() is not None:
                pytest.skip("dumpcap cannot capture on the loopback interface")
            await asyncio.sleep(0.1)
        await _probed(pcap, probe_port)
        async with connect_msc("127.0.0.1", 2905, udp_port=udp_port,
                               remote_udp_port=udp_port) as stack:  # fmt: skip
            outs = await run_calls(stack, [
                CallSpec("491700000106", "4930123456", 70, phase=Phase.V2),
                CallSpec("491700000107", "4930123456", 3600, phase=Phase.V3),
                CallSpec("491700000106", "4930123456", 30, phase=Phase.V4),
                CallSpec("491700000108", "4930123456", 30, phase=Phase.V4),
                CallSpec("491700000109", "4930123456", 30, phase=Phase.V2),
            ], concurrency=1)  # fmt: skip
        assert [o.result for o in outs] == ["ended", "cut-off", "ended", "released",
                                            "redirected"]  # fmt: skip
        assert outs[-1].detail == REDIRECT
        # What was sent before a probe that is in the file is in the file too (not a sleep).
        await _probed(pcap, probe_port)
    finally:
        cap_proc.send_signal(signal.SIGINT)
        cap_proc.wait(10)
    decode = ["-d", f"udp.port=={udp_port},sctp"]
    bad = (await asyncio.to_thread(subprocess.run,
        [tshark, "-r", str(pcap), *decode, "-Y",
         f'udp.port == {udp_port} && (_ws.malformed || _ws.expert.severity >= "Warning")',
         "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.message"],
        capture_output=True, text=True, check=True,
    )).stdout.strip()  # fmt: skip
    assert bad == "", bad
    fields = (await asyncio.to_thread(subprocess.run,
        [tshark, "-r", str(pcap), *decode, "-Y", "camel", "-T", "fields", "-E", "separator=|",
         "-e", "m3ua.protocol_data_si", "-e", "sccp.called.ssn", "-e", "tcap.tid",
         "-e", "camel.local", "-e", "camel.maxCallPeriodDuration", "-e", "camel.serviceKey",
         "-e", "_ws.col.Protocol"],
        capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"},
    )).stdout.splitlines()  # fmt: skip
    rows = [r.split("|") for r in fields]
    ops = [int(x) for r in rows for x in r[3].split(",") if x]
    assert ops.count(0) == 5  # five InitialDPs
    assert {23, 35, 31, 36, 24, 22, 20} <= set(ops)  # ... and a Connect
    durations = {int(x) for r in rows for x in r[4].split(",") if x}
    assert 600 in durations  # 60 s grants, in 100 ms
    assert {r[1] for r in rows} >= {"146"} and {r[0] for r in rows} == {"3"}
    connect = (await asyncio.to_thread(subprocess.run,
        [tshark, "-r", str(pcap), *decode, "-Y", "camel.local == 20", "-T", "fields",
         "-e", "isup.called"],
        capture_output=True, text=True, check=True,
    )).stdout.split()  # fmt: skip
    assert connect == [REDIRECT]  # Wireshark reads the Connect's destinationRoutingAddress
    assert {r[6] for r in rows} >= {"CAMEL-v2", "CAMEL-v3", "CAMEL-v4"} or any(
        "CAMEL" in r[6].upper() for r in rows)  # fmt: skip
