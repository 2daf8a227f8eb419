"""The native-protocol agent: native requests in, charging engine verbs, native replies out."""

from __future__ import annotations

import time
from typing import Final

from ocs.charging.engine import ChargingEngine
from ocs.charging.types import (
    BalanceResult,
    ChargeResult,
    CommitRequest,
    DebitRequest,
    Outcome,
    ReleaseRequest,
    ReserveRequest,
    SessionInfo,
)
from ocs.metrics import Metrics
from protocols.native import Balance, ChargingRequest, Commit, Debit, Release, Reply, Reserve

PROTOCOL: Final = "native"


def session_key(session: str, seq: int) -> str:
    """The idempotency key of a session request: the session and its request number."""
    return f"{session}/{seq}"


def _reply(rid: int, r: ChargeResult) -> Reply:
    return Reply(
        rid,
        r.outcome.value,
        granted=r.granted,
        final=r.final,
        charged=r.charged,
        buckets=r.from_buckets,
        balance=r.balance,
        validity=r.validity,
        detail=r.detail,
    )


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
        t0 = time.perf_counter()
        reply = await self._handle(req)
        if self.metrics is not None:
            self.metrics.observe(PROTOCOL, req.verb, reply.result, time.perf_counter() - t0)
            if reply.result == Outcome.STORE_UNAVAILABLE.value:
                self.metrics.redis_error()
        return reply

    async def _handle(self, req: ChargingRequest) -> Reply:
        e = self.engine
        match req:
            case Reserve():
                info = SessionInfo(req.destination, req.location)
                r = await e.reserve(
                    ReserveRequest(
                        req.session,
                        req.subscriber,
                        req.service,
                        session_key(req.session, req.seq),
                        units=req.units,
                        info=info,
                        protocol=PROTOCOL,
                    )
                )
            case Commit():
                r = await e.commit(
                    CommitRequest(
                        req.session,
                        session_key(req.session, req.seq),
                        used=req.used,
                        next_units=req.units,
                        protocol=PROTOCOL,
                    ),
                    subscriber=req.subscriber or None,
                )
            case Release():
                r = await e.release(
                    ReleaseRequest(req.session, session_key(req.session, req.seq), used=req.used),
                    subscriber=req.subscriber or None,
                )
            case Debit():
                info = SessionInfo(req.destination, req.location)
                r = await e.debit(
                    DebitRequest(
                        req.subscriber, req.service, req.key, units=req.units, info=info,
                        force=req.force,
                    )
                )  # fmt: skip
            case Balance():
                return _balance_reply(req.id, await e.balance(req.subscriber))
        return _reply(req.id, r)
