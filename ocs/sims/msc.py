"""An MSC simulator: the gsmSSF end of CAMEL, speaking CAP over TCAP / SCCP / M3UA to the
OCS's gsmSCF, the way a switch would, and saying what each call got.

A call: InitialDP; the SCF's RequestReportBCSMEvent, ApplyCharging and Continue (or a
ReleaseCall); answer (EventReportBCSM oAnswer); one ApplyChargingReport per granted period
while the call lasts (with the time since the tariff switch once one passes); at the end an
ApplyChargingReport with the leg no longer active and an EventReportBCSM oDisconnect. A final
grant with releaseIfdurationExceeded ends the call at its end, as an MSC does; a ReleaseCall
ends it too. Unanswered calls (no answer, busy, abandoned, route select failure) report just
that. Time is simulated: reports go out at once, carrying the durations a real call would have
had.

This is a tool around the system (DESIGN.md): no production code imports it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from protocols.sigtran import cap, m3ua, sccp, tcap
from protocols.sigtran.constants import ERR, SSN_GSMSCF, SSN_MSC, Op, Phase, SccpType
from protocols.sigtran.m3ua import Asp, AspState, ProtocolData
from protocols.sigtran.sccp import SccpAddress, Unitdata
from protocols.sigtran.tcap import Invoke, MessageType, TcapMessage

#: Seconds to wait for the gsmSCF's answer before the call counts as failed.
ANSWER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class SsfConfig:
    point_code: int = 2
    scf_point_code: int = 1
    #: Our global title (the MSC's E.164 address) and the gsmSCF's.
    msc_gt: str = "491720000000"
    scf_gt: str = "491720000146"
    routing_context: int | None = None
    service_key: int = 100


class _Answers:
    """What came for one of our transactions and was not yet taken, and the call waiting for
    the next (a future, not an asyncio.Queue under ``wait_for``: that was a task and a queue
    per answer, the simulator's CPU per message about the gsmSCF's, bench/camel.py)."""

    __slots__ = ("messages", "waiter")

    def __init__(self) -> None:
        self.messages: collections.deque[TcapMessage] = collections.deque()
        self.waiter: asyncio.Future[TcapMessage] | None = None

    def put(self, msg: TcapMessage) -> None:
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            w.set_result(msg)
        else:
            self.messages.append(msg)


def _expire(fut: asyncio.Future[TcapMessage]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class SsfStack:
    """One association's gsmSSF end: M3UA client, SCCP, TCAP transactions we originate."""

    def __init__(self, sender: Any, config: SsfConfig | None = None) -> None:
        self.sender = sender
        self.config = config or SsfConfig()
        self.asp = Asp(server=False, routing_context=self.config.routing_context)
        self._tids = itertools.count(1)
        self._waiting: dict[bytes, _Answers] = {}
        self._active = asyncio.Event()
        #: Everything received that is not for an open transaction (ERR, UDTS, stray aborts).
        self.unsolicited: list[object] = []
        c = self.config
        #: The called (gsmSCF) and calling (our) SCCP addresses of what we send.
        self._addresses = (SccpAddress(SSN_GSMSCF, None, c.scf_gt, True),
                           SccpAddress(SSN_MSC, None, c.msc_gt, True))  # fmt: skip

    # -- association ------------------------------------------------------------------------

    def data_received(self, stream: int, data: bytes) -> None:
        self.asp.receive_data(data, stream)
        for ev in self.asp.events():
            if isinstance(ev, m3ua.StateChanged) and ev.state is AspState.ACTIVE:
                self._active.set()
            elif isinstance(ev, m3ua.Transfer):
                self._unitdata(ev.data)
            elif isinstance(ev, m3ua.Notified) and ev.message.kind == ERR:
                self.unsolicited.append(ev.message)
        self.flush()

    def connection_lost(self) -> None:
        self._active.clear()

    def flush(self) -> None:
        for stream, data in self.asp.data_to_send():
            self.sender.send(stream, data)

    async def up(self, within: float = 5.0) -> None:
        """ASP Up, then ASP Active; returns when the OCS acknowledged both (again, after
        whatever state the ASP was left in)."""
        self.asp.state = AspState.DOWN
        self._active.clear()
        self.asp.start()
        self.flush()
        await asyncio.wait_for(self._active.wait(), within)

    def send_raw(self, data: bytes, stream: int = 1) -> None:
        """Bytes as they are (fuzzing)."""
        self.sender.send(stream, data)

    def _unitdata(self, pd: ProtocolData) -> None:
        try:
            u = sccp.decode(pd.data)
        except Exception as exc:
            self.unsolicited.append(exc)
            return
        if u.kind in (SccpType.UDTS, SccpType.XUDTS):
            self.unsolicited.append(u)
            return
        try:
            msg = tcap.decode(u.data)
        except Exception as exc:
            self.unsolicited.append(exc)
            return
        box = self._waiting.get(msg.dtid or b"")
        if box is not None:
            box.put(msg)
        else:
            self.unsolicited.append(msg)

    # -- TCAP -------------------------------------------------------------------------------

    def new_tid(self) -> bytes:
        tid = (next(self._tids) & 0xFFFFFFFF).to_bytes(4, "big")
        self._waiting[tid] = _Answers()
        return tid

    def forget(self, tid: bytes) -> None:
        self._waiting.pop(tid, None)

    def sccp_bytes(self, data: bytes) -> bytes:
        called, calling = self._addresses
        return sccp.encode(Unitdata(called, calling, data))

    def send_sccp(self, data: bytes, sls: int = 0) -> None:
        c = self.config
        self.asp.send_data(ProtocolData(c.point_code, c.scf_point_code, data, sls=sls),
                           stream=1 + sls % 15)  # fmt: skip
        self.flush()

    def send(self, msg: TcapMessage, sls: int = 0) -> None:
        self.send_sccp(self.sccp_bytes(tcap.encode(msg)), sls)

    async def answer(self, tid: bytes, within: float = ANSWER_TIMEOUT) -> TcapMessage:
        """The next message of transaction ``tid`` (TimeoutError after ``within`` s)."""
        box = self._waiting[tid]
        if box.messages:
            return box.messages.popleft()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TcapMessage] = loop.create_future()
        box.waiter = fut
        # (a timer on the future rather than asyncio.timeout: measured in the same run, that
        # cost the simulator ~1.5 us a message more and bench.camel ~7 % of its calls/s)
        timer = loop.call_later(within, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            box.waiter = None


# -- calls ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallSpec:
    calling: str
    called: str
    #: Seconds from answer to hang-up.
    duration: int
    #: "answer", or how an unanswered call ends (UNANSWERED_EVENTS): "no-answer", "busy",
    #: "abandon" (the caller hangs up first), "route-select-failure" (originating only).
    outcome: str = "answer"
    phase: Phase = Phase.V2
    location: tuple[str, str] = ("262", "01")
    terminating: bool = False
    #: The served subscriber's IMSI, sent in the InitialDP when given.
    imsi: str = ""


#: (outcome, terminating) -> the EventReportBCSM that ends an unanswered call, and its leg.
UNANSWERED_EVENTS: Final = {
    ("no-answer", False): ("oNoAnswer", 2), ("busy", False): ("oCalledPartyBusy", 2),
    ("abandon", False): ("oAbandon", 1), ("route-select-failure", False): ("routeSelectFailure", 2),
    ("no-answer", True): ("tNoAnswer", 2), ("busy", True): ("tBusy", 2),
    ("abandon", True): ("tAbandon", 1),
}  # fmt: skip


@dataclass
class CallOutcome:
    spec: CallSpec
    #: "ended", "cut-off" (credit ran out), "released" (at InitialDP), "redirected" (a
    #: Connect at InitialDP: ``detail`` the number), "continued" (not charged),
    #: "unanswered", "aborted", "failed".
    result: str = "failed"
    cause: int | None = None
    #: Seconds granted in each ApplyCharging, and seconds talked.
    grants: list[int] = field(default_factory=list)
    talked: int = 0
    tariff_switches: list[int] = field(default_factory=list)
    warning_tone: bool = False
    messages: int = 0
    detail: str = ""
    #: Seconds from each message sent to the gsmSCF's answer to it.
    latencies: list[float] = field(default_factory=list)


def _ops(msg: TcapMessage) -> dict[int, Invoke]:
    return {c.opcode: c for c in msg.components if isinstance(c, Invoke)}


def _cause(inv: Invoke) -> int | None:
    arg = inv.argument
    raw = arg[1] if isinstance(arg, tuple) else arg
    return raw[1] & 0x7F if isinstance(raw, bytes | bytearray) and len(raw) >= 2 else None


class _Call:
    def __init__(self, stack: SsfStack, spec: CallSpec, out: CallOutcome) -> None:
        self.stack = stack
        self.spec = spec
        self.out = out
        self.tid = stack.new_tid()
        self.remote: bytes | None = None
        self.ids = itertools.count(1)
        self.switch_at: int | None = None
        self.prev_switch = 0
        self.sent_at = 0.0

    def send(self, kind: MessageType, comps: Sequence[Invoke], *, first: bool = False) -> None:
        self.out.messages += 1
        self.sent_at = time.perf_counter()
        if kind is MessageType.BEGIN:
            msg = TcapMessage(kind, otid=self.tid, dialogue=tcap.request(self.spec.phase),
                              components=tuple(comps))  # fmt: skip
        else:
            msg = TcapMessage(kind, otid=self.tid if kind is MessageType.CONTINUE else None,
                              dtid=self.remote, components=tuple(comps))  # fmt: skip
        self.stack.send(msg)

    async def answer(self) -> TcapMessage:
        msg = await self.stack.answer(self.tid)
        self.out.latencies.append(time.perf_counter() - self.sent_at)
        self.out.messages += 1
        if msg.otid is not None:
            self.remote = msg.otid
        return msg

    def acr(self, total: int, *, active: bool) -> Invoke:
        if self.switch_at is not None and total > self.switch_at:
            arg = cap.call_result(
                total * 10,
                leg_active=active,
                since_switch=(total - self.switch_at) * 10,
                switch_interval=(self.switch_at - self.prev_switch) * 10,
            )
        else:
            arg = cap.call_result(total * 10, leg_active=active)
        return cap.invoke(Op.APPLY_CHARGING_REPORT, next(self.ids), arg)

    def granted(self, inv: Invoke, elapsed: int) -> cap.ApplyCharging:
        ac = cap.read_apply_charging(self.spec.phase, inv)
        self.out.grants.append(ac.max_duration // 10)
        self.out.warning_tone = self.out.warning_tone or ac.tone
        if ac.tariff_switch is not None:
            if self.switch_at is not None and elapsed >= self.switch_at:
                self.prev_switch = self.switch_at
            self.switch_at = elapsed + ac.tariff_switch
            self.out.tariff_switches.append(self.switch_at)
        return ac

    async def run(self) -> None:
        s, out = self.spec, self.out
        msc = self.stack.config.msc_gt
        idp = cap.initial_dp(service_key=self.stack.config.service_key, calling=s.calling,
                             called=s.called, imsi=s.imsi, location=s.location, msc=msc,
                             terminating=s.terminating,
                             call_reference=self.tid)  # fmt: skip
        self.send(MessageType.BEGIN, [cap.invoke(Op.INITIAL_DP, next(self.ids), idp)])
        msg = await self.answer()
        ops = _ops(msg)
        if msg.type is MessageType.ABORT:
            out.result = "aborted"
            return
        if Op.RELEASE_CALL in ops:
            out.result, out.cause = "released", _cause(ops[Op.RELEASE_CALL])
            return
        if Op.CONNECT in ops:
            out.result, out.detail = "redirected", cap.read_connect(ops[Op.CONNECT])
            return
        if Op.APPLY_CHARGING not in ops:
            out.result = "continued" if Op.CONTINUE in ops else "failed"
            return
        ac = self.granted(ops[Op.APPLY_CHARGING], 0)
        if s.outcome != "answer":
            event, leg = UNANSWERED_EVENTS[s.outcome, s.terminating]
            self.send(MessageType.CONTINUE, [cap.invoke(Op.EVENT_REPORT_BCSM, next(self.ids),
                                                        cap.event_report(event, leg))])  # fmt: skip
            await self.answer()
            out.result = "unanswered"
            return
        answer_event = "tAnswer" if s.terminating else "oAnswer"
        disconnect = "tDisconnect" if s.terminating else "oDisconnect"
        self.send(
            MessageType.CONTINUE,
            [cap.invoke(Op.EVENT_REPORT_BCSM, next(self.ids), cap.event_report(answer_event, 2))],
        )
        elapsed = 0
        while True:
            period_end = elapsed + ac.max_duration // 10
            if s.duration <= period_end or ac.release:
                # The call ends: hung up, or cut at the end of a final grant.
                total = min(s.duration, period_end)
                out.talked = total
                self.send(MessageType.CONTINUE, [
                    self.acr(total, active=False),
                    cap.invoke(Op.EVENT_REPORT_BCSM, next(self.ids),
                               cap.event_report(disconnect, 1)),
                ])  # fmt: skip
                await self.answer()
                out.result = "ended" if s.duration <= period_end else "cut-off"
                return
            elapsed = period_end
            self.send(MessageType.CONTINUE, [self.acr(elapsed, active=True)])
            msg = await self.answer()
            ops = _ops(msg)
            if Op.RELEASE_CALL in ops or msg.type is not MessageType.CONTINUE:
                out.talked = elapsed
                out.result = "cut-off"
                if Op.RELEASE_CALL in ops:
                    out.cause = _cause(ops[Op.RELEASE_CALL])
                return
            if Op.APPLY_CHARGING not in ops:
                out.result, out.detail = "failed", "no ApplyCharging after a report"
                return
            ac = self.granted(ops[Op.APPLY_CHARGING], elapsed)


async def place_call(stack: SsfStack, spec: CallSpec) -> CallOutcome:
    """One call through the gsmSCF, from InitialDP to the end of the dialogue."""
    out = CallOutcome(spec)
    call = _Call(stack, spec, out)
    try:
        await call.run()
    except TimeoutError:
        out.result, out.detail = "failed", "no answer from the gsmSCF"
    except Exception as exc:  # a simulator reports, it does not crash
        out.result, out.detail = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        stack.forget(call.tid)
    return out


# -- traffic ----------------------------------------------------------------------------------

#: Called numbers in international form, how often (national, mobile, abroad, free).
DESTINATIONS = (("4930123456", 40), ("4917112345678", 30), ("33123456789", 8),
                ("49800123456", 5), ("12125550100", 4))  # fmt: skip


def traffic(subscribers: Sequence[str], seed: int = 14) -> Callable[[], CallSpec]:
    """A realistic mix: mostly answered calls of a few minutes, some long ones that run out
    of credit, some unanswered or busy, all three phases."""
    rng = random.Random(seed)
    numbers = [n for n, _ in DESTINATIONS]
    weights = [w for _, w in DESTINATIONS]

    def one() -> CallSpec:
        r = rng.random()
        outcome = "no-answer" if r < 0.08 else "busy" if r < 0.14 else "answer"
        duration = rng.choice((rng.randrange(5, 180), rng.randrange(180, 900), 3600))
        return CallSpec(
            rng.choice(subscribers), rng.choices(numbers, weights)[0], duration, outcome,
            rng.choice((Phase.V2, Phase.V3, Phase.V4)),
        )  # fmt: skip

    return one


def describe(o: CallOutcome) -> str:
    s = o.spec
    what = f"camel {s.calling} -> {s.called} (CAP v{int(s.phase)})"
    if o.result in ("ended", "cut-off"):
        extra = f", tariff switch at {o.tariff_switches[0]} s" if o.tariff_switches else ""
        how = "ended" if o.result == "ended" else "cut off: out of credit"
        grants = f"{len(o.grants)} grants of up to {max(o.grants)} s" if o.grants else "no grant"
        return f"{what} {how} after {o.talked} s, {grants}{extra}"
    if o.result == "released":
        return f"{what} released at InitialDP (cause {o.cause})"
    if o.result == "redirected":
        return f"{what} redirected at InitialDP to {o.detail}"
    return f"{what} {o.result}{': ' + o.detail if o.detail else ''}"


async def run_calls(
    stack: SsfStack, specs: Sequence[CallSpec], concurrency: int = 16
) -> list[CallOutcome]:
    sem = asyncio.Semaphore(concurrency)

    async def one(spec: CallSpec) -> CallOutcome:
        async with sem:
            return await place_call(stack, spec)

    return list(await asyncio.gather(*(one(s) for s in specs)))


@contextlib.asynccontextmanager
async def loopback_msc(server: Any, config: SsfConfig | None = None) -> Any:
    """An SSF joined to a :class:`~protocols.sigtran.server.CapServer` in this process."""
    from protocols.sigtran.transport import LoopbackPair

    pair = LoopbackPair()
    a, b = pair.ends
    stack = SsfStack(a, config)
    a.receiver = stack
    b.receiver = server.connection_made(b)
    await stack.up()
    try:
        yield stack
    finally:
        pair.close()


@contextlib.asynccontextmanager
async def connect_msc(
    host: str,
    port: int,
    *,
    transport: str = "sctp-udp",
    udp_port: int = 9900,
    remote_udp_port: int = 9899,
    config: SsfConfig | None = None,
) -> Any:
    """An SSF on a real association to the gsmSCF at ``host:port``: SCTP over UDP (our UDP
    port ``udp_port``, the OCS's ``remote_udp_port``; in one process both are the process's
    libusrsctp port), or kernel SCTP."""
    stack = SsfStack(None, config)
    if transport == "sctp-udp":
        from protocols.sigtran import usrsctp

        a: Any = await usrsctp.connect(host, port, stack, udp_port=udp_port,
                                       remote_udp_port=remote_udp_port)  # fmt: skip
        stack.sender = a
        close = a.close
    else:
        import socket as _socket

        from protocols.sigtran.transport import _KernelAssociation

        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, _socket.IPPROTO_SCTP)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, port))
        tr, proto = await loop.create_connection(lambda: _KernelAssociation(lambda s: stack),
                                                 sock=sock)  # fmt: skip
        stack.sender = proto
        close = tr.close
    try:
        await stack.up()
        yield stack
    finally:
        close()


def _summary(outcomes: Sequence[CallOutcome]) -> str:
    by: dict[str, int] = {}
    for o in outcomes:
        by[o.result] = by.get(o.result, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items()))


async def _main(args: Any) -> int:
    subs = args.subscriber or [f"4917{i:08d}" for i in range(1, args.subscribers + 1)]
    make = traffic(subs, seed=args.seed)
    specs = [make() for _ in range(args.calls)]
    async with connect_msc(args.host, args.port, transport=args.transport,
                           udp_port=args.udp_port, remote_udp_port=args.remote_udp_port,
                           config=SsfConfig(msc_gt=args.msc_gt)) as stack:  # fmt: skip
        outcomes = await run_calls(stack, specs, args.concurrency)
    for o in outcomes:
        print(describe(o))
    print(f"--- {len(outcomes)} calls: {_summary(outcomes)}")
    return 0 if all(o.result != "failed" for o in outcomes) else 1


def cmd_msc_sim(args: Any) -> int:
    return asyncio.run(_main(args))


def register(sub: Any) -> None:
    p = sub.add_parser("msc-sim", help="run the MSC simulator: CAMEL calls to the gsmSCF")
    p.add_argument("--host", default="127.0.0.1", help="the OCS's CAMEL address")
    p.add_argument("--port", type=int, default=2905, help="its SCTP port (OCS_CAMEL_PORT)")
    p.add_argument("--transport", choices=("sctp-udp", "sctp"), default="sctp-udp")
    p.add_argument("--udp-port", type=int, default=9900,
                   help="our SCTP-over-UDP port (default 9900)")  # fmt: skip
    p.add_argument("--remote-udp-port", type=int, default=9899,
                   help="the OCS's (OCS_CAMEL_UDP_PORT, default 9899)")  # fmt: skip
    p.add_argument("--calls", type=int, default=20, help="how many calls (default 20)")
    p.add_argument("--concurrency", type=int, default=8, help="calls at once (default 8)")
    p.add_argument("--subscriber", action="append", help="calling MSISDN (repeatable)")
    p.add_argument("--subscribers", type=int, default=40,
                   help="else the demo's first N subscribers (default 40)")  # fmt: skip
    p.add_argument("--msc-gt", default="491720000000", help="the MSC's global title")
    p.add_argument("--seed", type=int, default=14)
    p.set_defaults(func=cmd_msc_sim)
