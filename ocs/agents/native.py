"""The native-protocol agent: native requests in, charging engine verbs, native replies out."""

from __future__ import annotations

import time
from typing import Final

from ocs.charging.engine import ChargingEngine
from ocs.charging.types import BalanceResult, ChargeResult, DebitRequest, Outcome, SessionInfo
from ocs.metrics import Metrics
from protocols.native import (
    ChargingRequest,
    Commit,
    Debit,
    Release,
    Reply,
    Reserve,
    charge_reply,
)

PROTOCOL: Final = "native"


def session_key(session: str, seq: int) -> str:
    """The idempotency key of a session request: the session and its request number."""
    return f"{session}/{seq}"


#: Each outcome's wire text (an enum's ``.value`` is a property lookup per request).
_RESULTS: Final = {o: o.value for o in Outcome}
_STORE_UNAVAILABLE: Final = Outcome.STORE_UNAVAILABLE.value


def _reply(rid: int, r: ChargeResult) -> Reply:
    return charge_reply(
        rid, _RESULTS[r.outcome], r.granted, r.final, r.charged, r.from_buckets, r.balance,
        r.validity, r.detail,
    )  # fmt: skip


def _balance_reply(rid: int, b: BalanceResult) -> Reply:
    return Reply(
        rid,
        b.outcome.value,
        balance=b.balance,
        reserved=b.reserved,
        available=b.available,
        credit_limit=b.credit_limit,
        state=b.state,
        plan=b.plan,
        detail=b.detail,
    )


class NativeAgent:
    """The handler the native server calls for each request."""

    def __init__(self, engine: ChargingEngine, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics

    async def __call__(self, req: ChargingRequest) -> Reply:
        # One coroutine from here to the engine's verb, and the engine's flat entry points
        # (no request object per request): docs/native-protocol.md, Speed.
        t0 = time.perf_counter()
        e = self.engine
        if isinstance(req, Reserve):
            r = await e.reserve_units(
                req.session, req.subscriber, req.service, session_key(req.session, req.seq),
                req.units, req.destination, req.location, protocol=PROTOCOL,
            )  # fmt: skip
        elif isinstance(req, Commit):
            r = await e.settle(
                req.session, session_key(req.session, req.seq), req.used, req.subscriber or None,
                next_units=req.units, end=False, protocol=PROTOCOL,
            )  # fmt: skip
        elif isinstance(req, Release):
            r = await e.settle(
                req.session, session_key(req.session, req.seq), req.used, req.subscriber or None,
                next_units=0, end=True,
            )  # fmt: skip
        elif isinstance(req, Debit):
            info = SessionInfo(req.destination, req.location)
            r = await e.debit(
                DebitRequest(
                    req.subscriber, req.service, req.key, units=req.units, info=info,
                    force=req.force,
                )
            )  # fmt: skip
        else:
            reply = _balance_reply(req.id, await e.balance(req.subscriber))
            self._observe(req, reply, t0)
            return reply
        reply = _reply(req.id, r)
        self._observe(req, reply, t0)
        return reply

    def _observe(self, req: ChargingRequest, reply: Reply, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(PROTOCOL, req.verb, reply.result, time.perf_counter() - t0)
            if reply.result == _STORE_UNAVAILABLE:
                self.metrics.redis_error()
