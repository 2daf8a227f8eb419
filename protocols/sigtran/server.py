"""The gsmSCF's side of the stack, over any association that carries M3UA messages: M3UA
(an :class:`~protocols.sigtran.m3ua.Asp` per association), SCCP routing to our subsystem, TCAP
dialogues and their TC timers; CAP operations go to a :class:`TcUser` (the CAMEL agent).

What cannot be read is answered in its own layer's terms and changes nothing: an M3UA ERR, an
SCCP UDTS (for a message to a subsystem we are not, or that TCAP cannot even find the
transaction of, when the caller asked for its return), a TCAP P-Abort (unreadable message,
unknown transaction), a U-Abort with an AARE refusing an application context we do not
speak, a Reject for each component that cannot be carried out.

The transport calls :meth:`CapServer.connection_made` with an object that has
``send(stream, data)``, then ``data_received``/``connection_lost`` on what that returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocols.sigtran import m3ua, sccp, tcap
from protocols.sigtran.constants import (
    RC_UNEQUIPPED_USER,
    RC_UNQUALIFIED,
    SSN_GSMSCF,
    ErrorCode,
    PAbortCause,
    SccpType,
)
from protocols.sigtran.errors import ComponentError, M3uaError, SccpError, TcapError
from protocols.sigtran.m3ua import Asp, ProtocolData
from protocols.sigtran.sccp import SccpAddress, Unitdata
from protocols.sigtran.tcap import (
    Component,
    Dialogue,
    DialogueKind,
    DialoguePortion,
    DialogueTable,
    Invoke,
    MessageType,
    Reject,
    TcapMessage,
)

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, stream: int, data: bytes) -> None: ...


@dataclass(slots=True)
class TcReply:
    """What the TC user answers a message with: components, and whether the dialogue ends
    (TC-END) or goes on (TC-CONTINUE; nothing is sent when there are no components)."""

    components: list[Component] = field(default_factory=list)
    end: bool = False


class TcUser(Protocol):
    """The application on top of TCAP (the CAMEL agent)."""

    async def on_components(
        self, dialogue: Dialogue, invokes: Sequence[Invoke], *, ended: bool
    ) -> TcReply: ...

    async def on_abort(self, dialogue: Dialogue, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ScfConfig:
    """Our place in the signalling network."""

    point_code: int = 1
    global_title: str = ""
    ssn: int = SSN_GSMSCF
    routing_context: int | None = None
    network_appearance: int | None = None
    #: The TC timer: a dialogue with no message for this long is aborted (seconds).
    dialogue_timeout: float = 60.0
    max_dialogues: int = 1_000_000


@dataclass(slots=True)
class Counters:
    messages_in: int = 0
    messages_out: int = 0
    m3ua_errors: int = 0
    udts: int = 0
    p_aborts: int = 0
    u_aborts: int = 0
    rejects: int = 0
    timeouts: int = 0
    #: TC-BEGINs from peers the admission hook refused (each also a u-abort).
    refused: int = 0
    #: M3UA management answers (ASP Up/Active acks, heartbeat acks, NTFY, DAVA).
    management_out: int = 0

    def answers(self) -> int:
        """Every answer of any layer sent so far."""
        return (self.messages_out + self.m3ua_errors + self.management_out + self.u_aborts
                + self.rejects)  # fmt: skip


class Association:
    """One association's M3UA end and what flows through it."""

    def __init__(self, server: CapServer, sender: Sender) -> None:
        self.server = server
        self.sender = sender
        cfg = server.config
        self.asp = Asp(server=True, routing_context=cfg.routing_context,
                       network_appearance=cfg.network_appearance)  # fmt: skip
        self.open = True

    def data_received(self, stream: int, data: bytes) -> None:
        self.asp.receive_data(data, stream)
        for ev in self.asp.events():
            if isinstance(ev, m3ua.Transfer):
                self.server.counters.messages_in += 1
                self.server.unitdata(self, ev.data, ev.stream)
            elif isinstance(ev, m3ua.Rejected):
                self.server.counters.m3ua_errors += 1
                log.info("M3UA ERR sent: %s", ev.error)
        self.flush()

    def flush(self) -> None:
        for stream, data in self.asp.data_to_send():
            if data[2:4] not in (b"\x01\x01", b"\x00\x00"):  # neither DATA nor ERR
                self.server.counters.management_out += 1
            if self.open:
                self.sender.send(stream, data)

    def connection_lost(self) -> None:
        self.open = False
        self.server.association_lost(self)


class CapServer:
    """TCAP dialogues for a :class:`TcUser`, over any number of associations."""

    def __init__(
        self, user: TcUser, config: ScfConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        admit: Callable[[SccpAddress, int], bool] | None = None,
    ) -> None:  # fmt: skip
        """``admit(calling address, originating point code)``: the hook for an allow-list
        or other policy on network elements; a dialogue it refuses is aborted with an AARE
        (reject-permanent, no reason given) before the TC user hears of it."""
        self.user = user
        self.admit = admit
        self.config = config or ScfConfig()
        self.clock = clock
        self.dialogues = DialogueTable(self.config.max_dialogues)
        self.counters = Counters()
        #: Dialogues with a message in hand, each with the messages waiting behind it.
        self._busy: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        #: The messages in hand, a task each (lifecycle.py's InlineCalls, measured here, cost
        #: more: a Python step per wake-up against the C task's; docs/camel.md, Speed).
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Task[None] | None = None
        self.associations: set[Association] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> CapServer:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.create_task(self._tc_timer(), name="tc-timer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the timer, let the messages in hand finish, abort what is still open."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for d in self.dialogues.all():
            await self._abort(d, "shutdown")

    def connection_made(self, sender: Sender) -> Association:
        a = Association(self, sender)
        self.associations.add(a)
        return a

    def association_lost(self, a: Association) -> None:
        self.associations.discard(a)

    # -- SCCP ------------------------------------------------------------------------------------

    def _send_unitdata(self, a: Association, u: Unitdata, dpc: int, sls: int) -> None:
        if not a.open:
            return
        try:
            a.asp.send_data(ProtocolData(self.config.point_code, dpc, sccp.encode(u), sls=sls),
                            stream=1 + sls % 15)  # fmt: skip
        except (M3uaError, SccpError) as exc:
            log.warning("cannot send to pc %d: %s", dpc, exc)
            return
        self.counters.messages_out += 1
        a.flush()

    def unitdata(self, a: Association, pd: ProtocolData, stream: int) -> None:
        try:
            u = sccp.decode(pd.data)
        except SccpError as exc:
            # Not even the calling address can be read: nobody to return it to. M3UA's ERR is
            # the answer we can give (RFC 4666 §3.8.1, Protocol Error), naming the SI.
            self.counters.m3ua_errors += 1
            a.asp.reject(M3uaError(ErrorCode.PROTOCOL_ERROR, str(exc), pd.data[:40]))
            a.flush()
            return
        if u.kind not in (SccpType.UDT, SccpType.XUDT):
            log.info("SCCP %s from pc %d: cause %d", u.kind.name, pd.opc, u.return_cause)
            return
        if u.called.ssn is not None and u.called.ssn != self.config.ssn:
            self._return(a, pd, u, RC_UNEQUIPPED_USER)
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._tcap(a, pd, u))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _return(self, a: Association, pd: ProtocolData, u: Unitdata, cause: int) -> None:
        if u.return_on_error:
            self.counters.udts += 1
            self._send_unitdata(a, u.service_message(cause), pd.opc, pd.sls)

    # -- TCAP ------------------------------------------------------------------------------------

    def _send(self, d: Dialogue, msg: TcapMessage) -> None:
        a = d.association
        assert isinstance(a, Association)
        data = tcap.encode(msg)
        self._send_unitdata(a, Unitdata(d.remote, d.local, data), d.dpc, d.opc & 0x0F)

    def _answer_to(self, a: Association, pd: ProtocolData, u: Unitdata, msg: TcapMessage) -> None:
        self._send_unitdata(a, Unitdata(u.calling, u.called, tcap.encode(msg)), pd.opc, pd.sls)

    def _p_abort(
        self, a: Association, pd: ProtocolData, u: Unitdata, otid: bytes, cause: PAbortCause
    ) -> None:
        self.counters.p_aborts += 1
        self._answer_to(a, pd, u, TcapMessage(MessageType.ABORT, dtid=otid, p_abort=cause))

    async def _tcap(self, a: Association, pd: ProtocolData, u: Unitdata) -> None:
        try:
            msg = tcap.decode(u.data)
        except TcapError as exc:
            log.info("TCAP message not read: %s", exc)
            if exc.otid is not None:
                self._p_abort(a, pd, u, exc.otid, exc.cause)
            else:
                self._return(a, pd, u, RC_UNQUALIFIED)
            return
        try:
            now = self.clock()
            kind = msg.type
            if kind is MessageType.BEGIN:
                await self._begin(a, pd, u, msg, now)
                return
            if kind is MessageType.UNIDIRECTIONAL:
                return  # nothing in CAP is sent that way to the gsmSCF
            d = self.dialogues.get(msg.dtid)
            if d is None:
                if kind is MessageType.CONTINUE and msg.otid is not None:
                    self._p_abort(a, pd, u, msg.otid, PAbortCause.UNRECOGNIZED_TRANSACTION_ID)
                elif kind is not MessageType.ABORT:
                    self._return(a, pd, u, RC_UNQUALIFIED)
                return
            d.last_activity = now
            if kind is MessageType.ABORT:
                self.dialogues.close(d)
                await self._locked(d, self.user.on_abort(d, "aborted by the peer"))
                return
            if kind is MessageType.CONTINUE and msg.otid is not None:
                d.remote_tid = msg.otid
            ended = kind is MessageType.END
            await self._locked(d, self._deliver(d, msg, ended))
        except Exception:  # the last line: a bug here must not take the server down
            log.exception("TCAP message from pc %d", pd.opc)

    async def _begin(
        self, a: Association, pd: ProtocolData, u: Unitdata, msg: TcapMessage, now: float
    ) -> None:
        if msg.otid is None:
            self._return(a, pd, u, RC_UNQUALIFIED)
            return
        phase = msg.dialogue.phase if msg.dialogue is not None else None
        refused = self.admit is not None and not self.admit(u.calling, pd.opc)
        if refused:
            self.counters.refused += 1
            log.info("TC-BEGIN from pc %d gt %r refused: not an admitted peer", pd.opc,
                     u.calling.gt)  # fmt: skip
        if (
            refused or phase is None or msg.dialogue is None
            or msg.dialogue.kind is not DialogueKind.REQUEST
        ):  # fmt: skip
            # Q.774 §3.2.2.2 / TS 29.078 §14: refuse the dialogue with the reason in an AARE
            # (diagnostic 2: application-context-name-not-supported; 1: no-reason-given).
            self.counters.u_aborts += 1
            refuse = DialoguePortion(DialogueKind.RESPONSE, msg.dialogue.application_context
                                     if msg.dialogue and msg.dialogue.application_context
                                     else (0, 4, 0, 0, 1, 22, 3, 4), 1,
                                     1 if refused and phase is not None else 2)  # fmt: skip
            self._answer_to(a, pd, u, TcapMessage(MessageType.ABORT, dtid=msg.otid,
                                                  dialogue=refuse))  # fmt: skip
            return
        local = u.called if self.config.global_title == "" else SccpAddress(
            self.config.ssn, None, self.config.global_title, u.called.route_on_gt)  # fmt: skip
        try:
            d = self.dialogues.open(msg.otid, phase, local, u.calling, pd.dpc, pd.opc, a, now)
        except TcapError as exc:
            self._p_abort(a, pd, u, msg.otid, exc.cause)
            return
        await self._locked(d, self._deliver(d, msg, False))

    async def _locked(self, d: Dialogue, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` when no other message of the dialogue is in hand (they are taken in
        the order they came). Lighter than an asyncio.Lock per dialogue: the common case, no
        other message in hand, makes no object at all."""
        tid = d.local_tid
        waiting = self._busy.get(tid)
        if waiting is None:
            self._busy[tid] = collections.deque()
        else:
            turn = (self._loop or asyncio.get_running_loop()).create_future()
            waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                work.close()
                if turn.done() and not turn.cancelled():
                    self._next(tid)  # our turn had come: hand it on
                raise
        try:
            await work
        finally:
            self._next(tid)

    def _next(self, tid: bytes) -> None:
        waiting = self._busy[tid]
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._busy[tid]

    async def _deliver(self, d: Dialogue, msg: TcapMessage, ended: bool) -> None:
        """Hand a message's components to the TC user and send its answer (run by
        :meth:`_locked`: one message of a dialogue at a time)."""
        rejects: list[Component] = [Reject(e.invoke_id, e.problem) for e in msg.bad_components]
        invokes = [c for c in msg.components if isinstance(c, Invoke)]
        self.counters.rejects += len(rejects)
        if ended:
            self.dialogues.close(d)
        try:
            reply = await self.user.on_components(d, invokes, ended=ended)
        except ComponentError as exc:
            self.counters.rejects += 1
            reply = TcReply([Reject(exc.invoke_id, exc.problem)], end=False)
        comps = rejects + reply.components
        if ended:
            return  # TC-END from the peer: the transaction is gone, nothing can answer it
        if reply.end:
            self.dialogues.close(d)
            self._send(
                d,
                TcapMessage(
                    MessageType.END,
                    dtid=d.remote_tid,
                    dialogue=d.dialogue_portion(),
                    components=tuple(comps),
                ),
            )
        elif comps or not d.answered:
            self._send(
                d,
                TcapMessage(
                    MessageType.CONTINUE,
                    otid=d.local_tid,
                    dtid=d.remote_tid,
                    dialogue=d.dialogue_portion(),
                    components=tuple(comps),
                ),
            )

    # -- TC timers -------------------------------------------------------------------------------

    async def _abort(self, d: Dialogue, reason: str) -> None:
        """U-Abort a dialogue of ours (the peer hears of it) and tell the TC user."""
        self.dialogues.close(d)
        self.counters.u_aborts += 1
        self._send(
            d,
            TcapMessage(
                MessageType.ABORT,
                dtid=d.remote_tid,
                dialogue=DialoguePortion(DialogueKind.ABORT, None, 0, 0),
            ),
        )
        await self._locked(d, self.user.on_abort(d, reason))

    async def expire(self) -> int:
        """Abort the dialogues whose TC timer ran out; how many."""
        idle = self.dialogues.idle(self.clock(), self.config.dialogue_timeout)
        for d in idle:
            self.counters.timeouts += 1
            log.info("dialogue %s idle for %.0f s: aborted", d.key, self.config.dialogue_timeout)
            await self._abort(d, "TC timer expired")
        return len(idle)

    async def _tc_timer(self) -> None:
        tick = min(1.0, self.config.dialogue_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.expire()
            except Exception:
                log.exception("TC timer")
