"""The CAMEL agent: the gsmSCF's prepaid voice service. CAP operations in (3GPP TS 29.078),
charging engine verbs, CAP operations out -- as the Diameter and native agents do.

How a call maps onto the engine (TS 23.078 §4.6 for the flow):

* **InitialDP** opens an engine session ``camel/<peer GT>/<peer's transaction id>`` and
  reserves the service's default quota (``reserve``, key ``<session>/idp``). The subscriber is
  the calling party of an originating call (collectedInfo) and the called party of a
  terminating one (termAttemptAuthorized), else, when the OCS knows no subscriber by that
  number, the InitialDP's IMSI (a subscriber provisioned by IMSI); the destination is the
  called number; the place is the MCC+MNC of the cell in LocationInformation. The service
  is the plan's service for moCallRecord / mtCallRecord (its ``cdr_record_types``). The
  answer, in one TC-CONTINUE: RequestReportBCSMEvent (answer, disconnect, no answer, busy,
  route select failure, abandon), ApplyCharging (maxCallPeriodDuration = the granted
  seconds; releaseIfdurationExceeded with a warning tone when the grant is final;
  tariffSwitchInterval at the plan's next band boundary inside the grant), Continue.
* **ApplyChargingReport** commits the seconds used since the last report (the report says the
  time since answer, or since the tariff switch we asked for) and reserves the next slice
  (``commit``, key ``<session>/acr<n>``, n the report's sequence number in the dialogue: a
  retransmitted report -- same invoke id, same content -- is the same n, gets the first
  answer and is charged once; a new report under a reused invoke id is the next n). A new
  ApplyCharging follows; when the credit affords nothing more, ReleaseCall (cause as
  configured) in a TC-END. The report that says the leg is no longer active carries the
  call's last seconds: it ends the session (``release`` of them, key ``<session>/acr<n>``).
* **EventReportBCSM** disconnect (or no answer, busy, abandon, route select failure) ends the
  session, if the last report did not (``release``, key ``<session>/end``), and the dialogue
  (TC-END).
* Barred subscribers get ReleaseCall at InitialDP; calls the plan rates free (emergency,
  toll-free) get Continue and no charging; unknown subscribers ReleaseCall or Continue as
  configured. An aborted dialogue (by the MSC, or by our TC timer) releases its hold with
  what was reported.

The call state lives in the TCAP dialogue (``Dialogue.user``), i.e. in this process, as the
dialogue does; the money lives in the store.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ocs.charging.engine import ChargingEngine, wall_clock_ms
from ocs.charging.types import (
    ChargeResult,
    Outcome,
)
from ocs.metrics import Metrics
from protocols.sigtran import cap
from protocols.sigtran.constants import (
    ANSWERS,
    CAUSE_CALL_REJECTED,
    CAUSE_NORMAL_UNSPECIFIED,
    DISCONNECTS,
    O_EVENTS,
    T_ATTEMPT_AUTHORIZED,
    T_EVENTS,
    UNANSWERED,
    InvokeProblem,
    Op,
)
from protocols.sigtran.errors import ComponentError
from protocols.sigtran.server import TcReply
from protocols.sigtran.tcap import Component, Dialogue, Invoke, Reject, ReturnError
from tariffs import PlanVersion, RatingError
from tariffs.interface import UsageContext

log = logging.getLogger(__name__)

PROTOCOL: Final = "camel"
#: CAP error unexpectedComponentSequence (TS 29.078 CAP-errorcodes).
UNEXPECTED_COMPONENT_SEQUENCE: Final = 14


#: The metrics' verb of each operation.
_VERBS: Final = {int(op): op.name.lower() for op in Op}


@dataclass(frozen=True, slots=True)
class CamelConfig:
    #: What to do with a subscriber the OCS does not know: "release" or "continue".
    unknown: str = "release"
    #: Q.850 cause of ReleaseCall when credit runs out, and for a barred subscriber.
    release_cause: int = CAUSE_NORMAL_UNSPECIFIED
    barred_cause: int = CAUSE_CALL_REJECTED
    #: Play a warning tone before a final grant ends (phase 2 and 4).
    warning_tone: bool = True
    #: E.164 digits a call whose credit cannot start it is sent to (Connect), such as a
    #: top-up announcement; empty: such a call gets ReleaseCall.
    redirect: str = ""


@dataclass(slots=True)
class _Call:
    session: str
    subscriber: str
    plan: str
    service: str
    started_at: int
    #: Seconds since answer already committed.
    committed: int = 0
    #: Seconds since answer where the tariff switch we asked for falls (None: none asked),
    #: and where the last one passed fell.
    pending_switch: int | None = None
    switch_base: int = 0
    final: bool = False
    ended: bool = False
    #: Each report taken, by what identifies it (invoke id and what it says): its sequence
    #: number in the dialogue and the seconds it committed. A retransmission is the same
    #: report again; an MSC reusing an invoke id for a new report is a new one.
    reports: dict[tuple[int, cap.CallResult], tuple[int, int]] = field(default_factory=dict)


class CamelAgent:
    """The :class:`protocols.sigtran.server.TcUser` of the gsmSCF."""

    def __init__(
        self,
        engine: ChargingEngine,
        plans: Callable[[str, int], PlanVersion],
        config: CamelConfig | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.engine = engine
        self.plans = plans
        self.config = config or CamelConfig()
        self.metrics = metrics
        self.clock = clock

    # -- the TC user ------------------------------------------------------------------------

    async def on_components(
        self, dialogue: Dialogue, invokes: Sequence[Invoke], *, ended: bool
    ) -> TcReply:
        reply = TcReply()
        for inv in invokes:
            t0 = time.perf_counter()
            verb = _VERBS.get(inv.opcode, "?")
            try:
                await self._operation(dialogue, inv, reply)
                result = Outcome.SUCCESS.value  # (the metrics speak the native agent's words)
            except ComponentError as exc:
                reply.components.append(Reject(exc.invoke_id, exc.problem))
                result = Outcome.INVALID_REQUEST.value
            if self.metrics is not None:
                self.metrics.observe(PROTOCOL, verb, result, time.perf_counter() - t0)
            if reply.end:
                break
        call = dialogue.user
        if ended and isinstance(call, _Call) and not call.ended:
            # TC-END from the MSC without a disconnect report: end the session there.
            await self._release(call, "end")
        return reply

    async def on_abort(self, dialogue: Dialogue, reason: str) -> None:
        call = dialogue.user
        if isinstance(call, _Call) and not call.ended:
            log.info("call %s: dialogue %s (%s); hold released", call.session, dialogue.key,
                     reason)  # fmt: skip
            await self._release(call, "abort")

    # -- operations -------------------------------------------------------------------------

    async def _operation(self, d: Dialogue, inv: Invoke, reply: TcReply) -> None:
        op = inv.opcode
        if op == Op.INITIAL_DP:
            if d.user is not None:
                raise ComponentError(InvokeProblem.DUPLICATE_INVOCATION, inv.invoke_id,
                                     "a second InitialDP in the dialogue")  # fmt: skip
            await self._initial_dp(d, inv, reply)
        elif op == Op.APPLY_CHARGING_REPORT:
            await self._report(d, inv, reply)
        elif op == Op.EVENT_REPORT_BCSM:
            await self._event(d, inv, reply)
        else:
            # gsmSCF operations (Connect, ReleaseCall...) are not the gsmSSF's to invoke.
            raise ComponentError(InvokeProblem.UNRECOGNIZED_OPERATION, inv.invoke_id,
                                 f"operation {op} is not invoked by a gsmSSF")  # fmt: skip

    def _release_call(self, d: Dialogue, reply: TcReply, cause: int) -> None:
        reply.components.append(cap.invoke(Op.RELEASE_CALL, d.invoke_id(),
                                           cap.release_call(cause)))  # fmt: skip
        reply.end = True

    def _continue(self, d: Dialogue, reply: TcReply) -> None:
        reply.components.append(cap.invoke(Op.CONTINUE, d.invoke_id()))
        reply.end = True

    async def _initial_dp(self, d: Dialogue, inv: Invoke, reply: TcReply) -> None:
        idp = cap.read_initial_dp(inv)
        terminating = idp.event_type == T_ATTEMPT_AUTHORIZED
        subscriber = idp.called if terminating else idp.calling
        destination = "" if terminating else idp.called
        now = self.clock()
        plan = await self.engine.plan_of(subscriber) if subscriber else None
        if plan is None and idp.imsi:
            # A subscriber provisioned by IMSI (the IMSI of an InitialDP is the served
            # subscriber's, calling or called), as Diameter's END_USER_IMSI.
            subscriber = idp.imsi
            plan = await self.engine.plan_of(subscriber)
        if plan is None:
            if self.config.unknown == "continue":
                self._continue(d, reply)
            else:
                self._release_call(d, reply, self.config.barred_cause)
            return
        try:
            version = self.plans(plan, now)
        except RatingError:
            self._release_call(d, reply, self.config.release_cause)
            return
        service = version.service_for(record_type="mtCallRecord" if terminating
                                      else "moCallRecord")  # fmt: skip
        if service is None:
            self._release_call(d, reply, self.config.release_cause)
            return
        ctx = UsageContext(plan=plan, service=service, subscriber=subscriber, started_at=now,
                           destination=destination, location=idp.location)  # fmt: skip
        rater = self.engine.rater
        try:
            free = rater.service(ctx).free
        except RatingError:
            self._release_call(d, reply, self.config.release_cause)
            return
        finally:
            rater.forget(ctx)  # (the engine rates the call with a context of its own)
        if free:
            self._continue(d, reply)
            return
        sid = f"camel/{d.key}"
        # (the engine's hot-path verbs, with the request's fields as arguments)
        r = await self.engine.reserve_units(sid, subscriber, service, f"{sid}/idp", None,
                                            destination, idp.location, now, PROTOCOL)  # fmt: skip
        if not r.ok or r.granted <= 0:
            no_credit = r.outcome is Outcome.CREDIT_LIMIT_REACHED or (r.ok and r.granted <= 0)
            if no_credit and self.config.redirect:
                # Connect (TS 29.078): the gsmSCF routes the call elsewhere -- here to the
                # number that tells the subscriber to top up -- uncharged, and let it go.
                reply.components.append(cap.invoke(Op.CONNECT, d.invoke_id(),
                                                   cap.connect(self.config.redirect)))  # fmt: skip
                reply.end = True
                return
            cause = (self.config.barred_cause if r.outcome is Outcome.SERVICE_DENIED
                     else self.config.release_cause)  # fmt: skip
            self._release_call(d, reply, cause)
            return
        call = _Call(sid, subscriber, plan, service, now)
        d.user = call
        events = T_EVENTS if terminating else O_EVENTS
        reply.components.append(cap.invoke(Op.REQUEST_REPORT_BCSM_EVENT, d.invoke_id(),
                                           cap.request_report(events)))  # fmt: skip
        reply.components.append(self._apply_charging(d, call, r))
        reply.components.append(cap.invoke(Op.CONTINUE, d.invoke_id()))

    def _apply_charging(self, d: Dialogue, call: _Call, r: ChargeResult) -> Component:
        call.final = r.final
        switch = self._tariff_switch(call, r.granted)
        tone = r.final and self.config.warning_tone
        return cap.invoke(Op.APPLY_CHARGING, d.invoke_id(), cap.apply_charging(
            d.phase, r.granted * 10, release=r.final, tone=tone, tariff_switch=switch))  # fmt: skip

    def _tariff_switch(self, call: _Call, granted: int) -> int | None:
        """Seconds from the committed position to the plan's next band boundary, if it falls
        inside this grant (rating is by band from the call's start, DESIGN.md)."""
        try:
            cal = self.plans(call.plan, call.started_at).calendar
        except RatingError:
            return None
        for off, _, _ in cal.segments(call.started_at // 1000, call.committed + granted):
            if off > call.committed:
                call.pending_switch = off
                return off - call.committed
        return None

    def _seconds(self, call: _Call, result: cap.CallResult) -> int:
        """Seconds since answer that a report says (rounded up: a started second counts)."""
        tenths = result.time
        if result.tariff_switch:
            if call.pending_switch is not None and call.pending_switch > call.switch_base:
                call.switch_base = call.pending_switch
                call.pending_switch = None
            tenths += call.switch_base * 10
        return math.ceil(tenths / 10)

    async def _report(self, d: Dialogue, inv: Invoke, reply: TcReply) -> None:
        call = d.user
        result = cap.read_call_result(inv)
        seen = call.reports.get((inv.invoke_id, result)) if isinstance(call, _Call) else None
        if not isinstance(call, _Call) or (call.ended and seen is None):
            reply.components.append(ReturnError(inv.invoke_id, UNEXPECTED_COMPONENT_SEQUENCE))
            return
        more = result.leg_active
        if seen is not None:  # a retransmission: the first one's request again
            if not more and call.ended:
                return  # the last report, already taken: it had no answer either
            (seq, used), total = seen, call.committed
        else:
            total = self._seconds(call, result)
            used = max(0, total - call.committed)
            seq = len(call.reports) + 1
            call.reports[(inv.invoke_id, result)] = (seq, used)
        key = f"{call.session}/acr{seq}"
        if not more:
            # The leg is gone (legActive FALSE): these are the call's last seconds, and one
            # release charges them and ends the session (as the native protocol's release
            # does) -- not a commit, then a release of nothing at the disconnect.
            call.ended = True
            call.committed = max(call.committed, total)
            await self.engine.settle(call.session, key, used, call.subscriber, next_units=0,
                                     end=True)  # fmt: skip
            return
        r = await self.engine.settle(call.session, key, used, call.subscriber, next_units=None,
                                     end=False, protocol=PROTOCOL)  # fmt: skip
        call.committed = max(call.committed, total)
        if r.ok and r.granted > 0:
            reply.components.append(self._apply_charging(d, call, r))
            return
        # No credit for another slice (or no longer allowed): the call ends here.
        await self._release(call, "end")
        cause = (self.config.barred_cause if r.outcome is Outcome.SERVICE_DENIED
                 else self.config.release_cause)  # fmt: skip
        self._release_call(d, reply, cause)

    async def _event(self, d: Dialogue, inv: Invoke, reply: TcReply) -> None:
        ev = cap.read_event_report(inv)
        call = d.user
        if ev.event in ANSWERS:
            return
        if ev.event in DISCONNECTS or ev.event in UNANSWERED:
            if isinstance(call, _Call) and not call.ended:
                await self._release(call, "end")
            reply.end = True

    async def _release(self, call: _Call, why: str) -> ChargeResult:
        call.ended = True
        return await self.engine.settle(call.session, f"{call.session}/{why}", 0,
                                        call.subscriber, next_units=0, end=True)  # fmt: skip
