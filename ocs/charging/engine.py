"""The charging engine: sessions, quota sizing, final units and idempotency keys.

It turns the protocol-neutral requests of :mod:`ocs.charging.types` into store scripts, with
rating done here in Python (:class:`tariffs.interface.Rater`) and all balance arithmetic in the
scripts. One Redis round trip serves a request in the common case: the engine keeps a small
cache of what it last saw of each subscriber's plan and each session (version, money cursor,
units held from buckets), passes its expectation to the script, and the script refuses with
the truth (PLAN, STALE) when the cache is wrong, for example after another process served the
session. Nothing here is state that Redis does not hold: losing the cache costs one more round
trip, never money.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ocs.charging.types import (
    BalanceResult,
    ChargeResult,
    ChargingConfig,
    CommitRequest,
    DebitRequest,
    Outcome,
    ReleaseRequest,
    ReserveRequest,
)
from ocs.store.errors import StoreError, StoreUnavailable
from ocs.store.store import ScriptAnswer, Store
from tariffs.errors import RatingError
from tariffs.interface import Rater, ServiceSpec, UsageContext
from tariffs.rater import make_room

#: How many times one request may be re-priced because Redis disagreed with the engine (PLAN,
#: STALE, QUOTE). Each retry is caused by a concurrent change, so this only bounds contention.
MAX_ATTEMPTS: Final = 8


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Session:
    """What the engine last saw of a session; the script checks ``version``. Updated in place
    (this is a cache entry on the hot path, not a value passed around)."""

    subscriber: str
    ctx: UsageContext
    spec: ServiceSpec
    version: int
    money_cursor: int
    held_bucket_units: int
    #: The cost of the session's first ``priced_units`` money units (-1: none known): kept
    #: at the money cursor the next request starts from, so a request rates once less.
    #: Keyed by the cursor's value, so an answer that moved the cursor elsewhere (a replay,
    #: another process) is simply a miss. (Across a tariff reload the slices' sum stays the
    #: cost of the whole usage: each slice starts from the cost its predecessor ended on.)
    priced_units: int = -1
    priced: int = 0
    #: The cost of the first ``slice_units`` money units (-1: none known): where the slice
    #: granted last ends, so a commit that used all of it (the common report) does not rate
    #: its usage again.
    slice_units: int = -1
    slice_cost: int = 0


@dataclass(slots=True)
class _Hold:
    """What a session holds as this process last heard (the metrics' held credit)."""

    protocol: str
    money: int
    #: Unix ms: when the script releases it unless a request comes first.
    expires_at: int


def _flags(spec: ServiceSpec, *, final: bool = False, force: bool = False) -> str:
    return (
        ("o" if spec.outgoing else "")
        + ("f" if spec.free else "")
        + ("F" if final else "")
        + ("X" if force else "")
    )


def _failed(exc: StoreUnavailable | RatingError) -> ChargeResult:
    """A store or rating failure as the outcome the verb answers with."""
    if isinstance(exc, StoreUnavailable):
        return ChargeResult(Outcome.STORE_UNAVAILABLE, detail=str(exc))
    return ChargeResult(Outcome.RATING_FAILED, detail=str(exc))


def _conflict(request_key: str) -> ChargeResult:
    """A request sent under a key that an earlier, different request used: the first answer
    stands and nothing changed; the client's mistake is said, not hidden
    (docs/architecture.md, idempotency)."""
    return ChargeResult(
        Outcome.INVALID_REQUEST,
        detail=f"request key {request_key!r} was used by a different request; nothing changed",
    )


class ChargingEngine:
    """reserve / commit / release / debit / balance, for every protocol."""

    def __init__(
        self,
        store: Store,
        rater: Rater,
        config: ChargingConfig | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.store = store
        self.rater = rater
        self.config = config or ChargingConfig()
        self.clock = clock
        self._plans: dict[str, str] = {}
        self._sessions: dict[str, _Session] = {}
        #: Every session this process last saw holding a reservation, from the scripts'
        #: answers (kept apart from the cache, which may be emptied), in the order they were
        #: last held (a hold moves to the end), so in the order they expire.
        self._holds: dict[str, _Hold] = {}
        self._holds_limit = self.config.cache_size
        #: Protocol -> [sessions, money] of ``_holds``, kept as they change: what
        #: :meth:`holds` answers without a pass over every open session (a scrape of 100k
        #: holds took 45 ms of the event loop that way).
        self._held_totals: dict[str, list[int]] = {}
        #: Told the money each request charged (micro-units, replays excluded): the metrics.
        self.on_charged: Callable[[int], None] | None = None

    # -- caches -------------------------------------------------------------------------------

    def _remember_plan(self, msisdn: str, plan: str) -> None:
        if len(self._plans) >= self.config.cache_size:
            make_room(self._plans)
        self._plans[msisdn] = plan

    def _remember_session(self, sid: str, st: _Session, ans: ScriptAnswer) -> None:
        st.version = ans.session_version
        st.money_cursor = ans.money_cursor
        st.held_bucket_units = ans.held_bucket_units
        cached = self._sessions.get(sid)
        if cached is not st:
            if cached is not None:
                # Rebuilt from a STALE answer: keep the new one (the old one would be STALE
                # again at every request).
                self.rater.forget(cached.ctx)
            elif len(self._sessions) >= self.config.cache_size:
                # The oldest first: sessions whose gateway went silent (released ones left).
                for old in make_room(self._sessions):
                    self.rater.forget(old.ctx)
            self._sessions[sid] = st

    def _forget_session(self, sid: str, st: _Session | None = None) -> None:
        """Session ``sid`` ended here or is unknown to the store: drop it from the caches, and
        what the rater kept to price it (``st``: a copy of it not in the cache, if any), so
        that what this process holds is bounded by the open sessions."""
        cached = self._sessions.pop(sid, None)
        self._drop_hold(sid)
        if cached is not None:
            self.rater.forget(cached.ctx)
        if st is not None and st is not cached:
            self.rater.forget(st.ctx)

    def _held(self, sid: str, protocol: str, money: int, now: int) -> None:
        """Record what session ``sid`` holds after a request answered at ``now`` (the script
        keeps the hold until ``now + hold_ms``, as it was told)."""
        # (taken out and put back at the end: the dict stays in the order holds expire)
        h = self._drop_hold(sid)
        if h is not None:
            h.money, h.expires_at = money, now + self.hold_ms
            if protocol:
                h.protocol = protocol
        else:
            if len(self._holds) >= self._holds_limit:
                # Holds nobody came back for (and no scrape pruned): forget the expired ones.
                self._prune_holds(self.clock())
                self._holds_limit = max(self.config.cache_size, 2 * len(self._holds))
            h = _Hold(protocol, money, now + self.hold_ms)
        self._holds[sid] = h
        totals = self._held_totals.get(h.protocol)
        if totals is None:
            totals = self._held_totals[h.protocol] = [0, 0]
        totals[0] += 1
        totals[1] += money

    def _drop_hold(self, sid: str) -> _Hold | None:
        """Take session ``sid``'s hold out of the holds and their totals (and return it)."""
        h = self._holds.pop(sid, None)
        if h is not None:
            totals = self._held_totals[h.protocol]
            totals[0] -= 1
            totals[1] -= h.money
        return h

    def _prune_holds(self, now: int) -> None:
        """Forget the holds expired at ``now``: from the front, up to the first that is not
        (a hold recorded with an earlier clock than the one before it, a request that
        carried its own time, goes when those before it do)."""
        expired = []
        for sid, h in self._holds.items():
            if h.expires_at > now:
                break
            expired.append(sid)
        for sid in expired:
            self._drop_hold(sid)

    def holds(self, now: int | None = None) -> dict[str, tuple[int, int]]:
        """Protocol -> (sessions, money held in micro-units) of the reservations this process
        holds now: every session whose last answer here left it open and whose hold has not
        expired (the sweeper releases those). A session another process took over (failover)
        stays counted here until its hold time passes. The protocol is the one its requests
        named ("" when none did)."""
        self._prune_holds(self.clock() if now is None else now)
        return {p: (n, m) for p, (n, m) in self._held_totals.items() if n}

    def _cost_at(self, st: _Session, units: int) -> int:
        """What the session's first ``units`` money units cost (remembered at one point)."""
        if units == st.priced_units:
            return st.priced
        if units == st.slice_units:
            return st.slice_cost
        return self.rater.cost(st.ctx, units)

    def _session_from_answer(self, sid: str, msisdn: str, ans: ScriptAnswer) -> _Session:
        """Rebuild a session the cache did not know from a STALE answer (failover)."""
        ctx = UsageContext(
            plan=ans.session_plan,
            service=ans.service,
            subscriber=msisdn,
            started_at=ans.started_at,
            destination=ans.destination,
            location=ans.location,
        )
        return _Session(
            msisdn,
            ctx,
            self.rater.service(ctx),
            ans.session_version,
            ans.money_cursor,
            ans.held_bucket_units,
        )

    @property
    def hold_ms(self) -> int:
        return (self.config.validity + self.config.grace) * 1000

    def _result(
        self, ans: ScriptAnswer, granted: int = 0, final: bool = False, validity: int = 0
    ) -> ChargeResult:
        """The success a script's answer says (the money it charged told to ``on_charged``)."""
        if ans.charged > 0 and not ans.replay and self.on_charged is not None:
            self.on_charged(ans.charged)
        # (positionally: ChargeResult's fields in order; built once per request)
        return ChargeResult(
            Outcome.SUCCESS, granted, final, ans.charged, ans.from_buckets, ans.balance,
            validity, "", ans.replay != 0,
        )  # fmt: skip

    # -- reserve ------------------------------------------------------------------------------

    # Every verb answers and none raises: store and rating failures become outcomes
    # (_failed). Each public verb catches them itself rather than through a wrapper coroutine:
    # the await chain from the agent to the store is one frame shorter per request.

    async def reserve(self, req: ReserveRequest) -> ChargeResult:
        """Open a session (or give it a new slice) and grant up to the requested units."""
        info = req.info
        return await self.reserve_units(
            req.session_id, req.subscriber, req.service, req.request_key, req.units,
            info.destination, info.location, req.at, req.protocol,
        )  # fmt: skip

    async def reserve_units(
        self,
        session_id: str,
        subscriber: str,
        service: str,
        request_key: str,
        units: int | None,
        destination: str = "",
        location: str = "",
        at: int | None = None,
        protocol: str = "",
    ) -> ChargeResult:
        """:meth:`reserve` with the request's fields as arguments: what an agent calls on its
        hot path, sparing a request object and a coroutine per request."""
        now = at if at is not None else self.clock()
        cached = self._sessions.get(session_id)
        if cached is not None and cached.subscriber != subscriber:
            return ChargeResult(
                Outcome.INVALID_REQUEST, detail="session belongs to another subscriber"
            )
        try:
            return await self._grant(
                subscriber, session_id, request_key, cached, service, units, now,
                destination=destination, location=location, protocol=protocol,
            )  # fmt: skip
        except (StoreUnavailable, RatingError) as exc:
            return _failed(exc)

    async def _grant(
        self,
        msisdn: str,
        sid: str,
        rk: str,
        st: _Session | None,
        service: str,
        units: int | None,
        now: int,
        *,
        destination: str = "",
        location: str = "",
        prior: ScriptAnswer | None = None,
        protocol: str = "",
    ) -> ChargeResult:
        """Hold a slice for a new session (st None) or an open one, sizing it to the credit.

        ``prior`` is the commit whose next slice this is (its charge goes into the result,
        its quote prices the first attempt).
        """
        quote = None if prior is None else (prior.quote_buckets, prior.quote_money)
        #: The context made for a new session, while the session is not kept with it: the
        #: rater forgets it on the way out (refused, a replay's answer, a retry's next one).
        made: UsageContext | None = None
        try:
            for _ in range(MAX_ATTEMPTS):
                if st is None:
                    if made is not None:
                        self.rater.forget(made)
                        made = None
                    plan = self._plans.get(msisdn, "")
                    ctx = UsageContext(
                        plan=plan,
                        service=service,
                        subscriber=msisdn,
                        started_at=now,
                        destination=destination,
                        location=location,
                    )
                    spec = None
                    if plan:
                        made = ctx
                        spec = self.rater.service(ctx)
                    cursor, version = 0, 0
                else:
                    ctx, spec, cursor, version = st.ctx, st.spec, st.money_cursor, st.version
                base = 0  # (the cost at the cursor)
                if spec is None:
                    # First request for this subscriber in this process: the script says the plan.
                    n = cost = 0
                    bq, flags = -1, ""
                    slice_end, at_end = -1, 0
                else:
                    wanted = spec.default_quota if not units else min(units, spec.default_quota)
                    n, bq, final = wanted, -1, False
                    if quote is not None:
                        b, money = quote
                        m = self.rater.affordable(ctx, money, cursor, wanted - b)
                        n, bq, final = b + m, b, b + m < wanted
                        if n <= 0:
                            return self._refused(prior)
                    # (a new session starts at 0 units, which cost nothing: Rater.cost)
                    base = 0 if st is None else self._cost_at(st, cursor)
                    slice_end = cursor + (n - max(bq, 0))
                    at_end = self.rater.cost(ctx, slice_end)
                    cost = at_end - base
                    flags = _flags(spec, final=final)
                reserve = self.store.reserve(
                    msisdn,
                    request_key=rk,
                    session_id=sid,
                    service=service if st is None else st.ctx.service,
                    units=n,
                    cost=cost,
                    bucket_quote=bq,
                    expected_version=version,
                    hold_ms=self.hold_ms,
                    flags=flags,
                    destination=destination,
                    location=location,
                    plan=ctx.plan,
                    now=now,
                )
                if st is None and spec is not None:
                    # Index the new session (in the same write), for requests that name only it.
                    self.store.index_session(sid, msisdn, self.hold_ms)
                ans = await reserve
                status = ans.status
                if ans.conflict:
                    return _conflict(rk)
                if status == "OK":
                    if st is None:
                        if spec is not None and ans.session_plan == ctx.plan:
                            st = _Session(msisdn, ctx, spec, 0, 0, 0, 0, base, slice_end, at_end)
                            made = None  # (kept: forgotten when the session ends)
                        else:  # a replay's stored answer, arriving while the cache knew nothing
                            st = self._session_from_answer(sid, msisdn, ans)
                        self._remember_plan(msisdn, st.ctx.plan)
                    else:
                        st.slice_units, st.slice_cost = slice_end, at_end
                    self._remember_session(sid, st, ans)
                    if not ans.replay:
                        self._held(sid, protocol, ans.held_money, now)
                    return ChargeResult(
                        Outcome.SUCCESS,
                        granted=ans.granted,
                        final=ans.final,
                        charged=prior.charged if prior else 0,
                        from_buckets=prior.from_buckets if prior else 0,
                        balance=ans.balance,
                        validity=self.config.validity,
                    )
                if status == "QUOTE":
                    quote = (ans.quote_buckets, ans.quote_money)
                    continue
                quote = None
                if status == "PLAN":
                    self._remember_plan(msisdn, ans.plan)
                elif status == "STALE":
                    st = self._session_from_answer(sid, msisdn, ans)
                elif status == "NOSESS":
                    self._forget_session(sid, st)
                    if prior is not None:
                        return ChargeResult(Outcome.UNKNOWN_SESSION)
                    st = None
                elif status == "NOSUB":
                    self._plans.pop(msisdn, None)
                    self._forget_session(sid, st)
                    return ChargeResult(Outcome.USER_UNKNOWN)
                elif status == "DENIED":
                    return self._denied(prior, ans)
                else:
                    raise StoreError(f"reserve: unexpected status {status!r}")
            return self._refused(prior, detail="too much contention on this account; try again")
        finally:
            if made is not None:
                self.rater.forget(made)

    def _refused(self, prior: ScriptAnswer | None, detail: str = "") -> ChargeResult:
        if prior is None:
            return ChargeResult(Outcome.CREDIT_LIMIT_REACHED, detail=detail)
        return ChargeResult(
            Outcome.CREDIT_LIMIT_REACHED,
            charged=prior.charged,
            from_buckets=prior.from_buckets,
            balance=prior.balance,
            final=True,
            detail=detail or "usage debited; no credit for another slice",
        )

    def _denied(self, prior: ScriptAnswer | None, ans: ScriptAnswer) -> ChargeResult:
        src = prior or ans
        return ChargeResult(
            Outcome.SERVICE_DENIED,
            charged=src.charged if prior else 0,
            from_buckets=src.from_buckets if prior else 0,
            balance=ans.balance,
            detail=f"subscriber is {ans.state}",
        )

    # -- commit / release ---------------------------------------------------------------------

    async def commit(self, req: CommitRequest, subscriber: str | None = None) -> ChargeResult:
        """Debit the units used and, unless ``next_units`` is 0, grant the next slice."""
        return await self.settle(
            req.session_id, req.request_key, req.used, subscriber,
            next_units=req.next_units, end=False, at=req.at, protocol=req.protocol,
        )  # fmt: skip

    async def release(self, req: ReleaseRequest, subscriber: str | None = None) -> ChargeResult:
        """Debit the final usage and end the session."""
        return await self.settle(
            req.session_id, req.request_key, req.used, subscriber, next_units=0, end=True,
            at=req.at,
        )  # fmt: skip

    async def settle(
        self,
        sid: str,
        rk: str,
        used: int,
        subscriber: str | None = None,
        *,
        next_units: int | None,
        end: bool,
        at: int | None = None,
        protocol: str = "",
    ) -> ChargeResult:
        """:meth:`commit` (``end`` False) or :meth:`release` (``end`` True; ``next_units`` is
        then ignored) with the request's fields as arguments, for an agent's hot path
        (``protocol``: who asks, for the held-credit metrics)."""
        try:
            now = at if at is not None else self.clock()
            st = self._sessions.get(sid)
            if st is not None:
                msisdn = st.subscriber
            elif subscriber:
                msisdn = subscriber  # (then the script tells the rest)
            else:
                owner = await self.store.session_owner(sid)
                if owner is None:
                    self._drop_hold(sid)
                    return ChargeResult(Outcome.UNKNOWN_SESSION)
                msisdn = owner
            for _ in range(MAX_ATTEMPTS):
                if st is None:
                    # Unknown here (another process opened it): ask the script for the truth.
                    version, cost, n, next_cost, flags = -1, 0, 0, 0, ""
                else:
                    version = st.version
                    money_units = used - min(used, st.held_bucket_units)
                    after = st.money_cursor + money_units
                    at_after = self._cost_at(st, after)
                    cost = at_after - self._cost_at(st, st.money_cursor)
                    n = 0
                    if not end and next_units != 0:
                        quota = st.spec.default_quota
                        n = quota if next_units is None else min(next_units, quota)
                    next_cost = 0
                    if n:
                        at_next = self.rater.cost(st.ctx, after + n)
                        next_cost = at_next - at_after
                        st.slice_units, st.slice_cost = after + n, at_next
                    # Where the next request will start (if this one is applied as sent).
                    st.priced_units, st.priced = after, at_after
                    flags = _flags(st.spec)
                if end:
                    ans = await self.store.release(
                        msisdn, request_key=rk, session_id=sid, used=used, cost=cost,
                        expected_version=version, now=now,
                    )  # fmt: skip
                else:
                    commit = self.store.commit(
                        msisdn, request_key=rk, session_id=sid, used=used, cost=cost,
                        expected_version=version, next_units=n, next_cost=next_cost,
                        bucket_quote=-1, hold_ms=self.hold_ms, flags=flags, now=now,
                    )  # fmt: skip
                    if not subscriber:
                        # The index found this session: keep it as long as the hold.
                        self.store.index_session(sid, msisdn, self.hold_ms)
                    ans = await commit
                status = ans.status
                if ans.conflict:
                    return _conflict(rk)
                if status == "STALE":
                    st = self._session_from_answer(sid, msisdn, ans)
                    continue
                if status in ("NOSESS", "NOSUB"):
                    self._forget_session(sid, st)
                    if status == "NOSUB":
                        return ChargeResult(Outcome.USER_UNKNOWN)
                    return ChargeResult(Outcome.UNKNOWN_SESSION, balance=ans.balance)
                if st is None:
                    # A replay answered from the idempotency store before the cache was warm.
                    st = self._session_from_answer(sid, msisdn, ans)
                if end:
                    self._forget_session(sid, st)
                    if not ans.replay:
                        # Kept past the release, so that a replay naming only the session finds
                        # the subscriber whose script holds the first answer (see the store).
                        self.store.index_session(sid, msisdn)
                    return self._result(ans)
                if not ans.replay:
                    # (a stored answer's session figures are the past's: the cache keeps its own)
                    self._remember_session(sid, st, ans)
                    self._held(sid, protocol, ans.held_money, now)
                if status == "OK":
                    return self._result(
                        ans, ans.granted, ans.final, self.config.validity if ans.granted else 0
                    )
                if status == "OKD":
                    return self._denied(ans, ans)
                if status == "OKQ":
                    # Usage is debited; the next slice needs pricing against what is left.
                    return await self._grant(
                        msisdn, sid, rk + "/q", st, st.ctx.service, n, now, prior=ans,
                        protocol=protocol,
                    )  # fmt: skip
                raise StoreError(f"commit: unexpected status {status!r}")
            return ChargeResult(
                Outcome.STORE_UNAVAILABLE, detail="session kept changing; try again"
            )
        except (StoreUnavailable, RatingError) as exc:
            return _failed(exc)

    # -- debit --------------------------------------------------------------------------------

    async def debit(self, req: DebitRequest) -> ChargeResult:
        """Rate and debit a one-shot event, all of it or nothing (unless forced)."""
        try:
            return await self._debit(req)
        except (StoreUnavailable, RatingError) as exc:
            return _failed(exc)

    async def _debit(self, req: DebitRequest) -> ChargeResult:
        now = req.at if req.at is not None else self.clock()
        msisdn, n = req.subscriber, req.units
        bq = -1
        for _ in range(MAX_ATTEMPTS):
            plan = self._plans.get(msisdn, "")
            ctx = UsageContext(
                plan=plan,
                service=req.service,
                subscriber=msisdn,
                started_at=now,
                destination=req.info.destination,
                location=req.info.location,
            )
            if plan:
                spec = self.rater.service(ctx)
                cost = self.rater.cost(ctx, n - max(bq, 0))
                flags = _flags(spec, force=req.force)
                self.rater.forget(ctx)  # (a one-shot event: nothing to rate it again for)
            else:
                cost, flags = 0, ""
            ans = await self.store.debit(
                msisdn, request_key=req.request_key, service=req.service, units=n, cost=cost,
                bucket_quote=bq, flags=flags, plan=plan, now=now,
                destination=req.info.destination,
            )  # fmt: skip
            status = ans.status
            if ans.conflict:
                return _conflict(req.request_key)
            if status == "OK":
                return self._result(ans)
            if status == "PLAN":
                self._remember_plan(msisdn, ans.plan)
                bq = -1
            elif status == "QUOTE":
                b = ans.quote_buckets
                fits = req.force or b + self.rater.affordable(ctx, ans.quote_money, 0, n - b) >= n
                self.rater.forget(ctx)
                if not fits:
                    return ChargeResult(Outcome.CREDIT_LIMIT_REACHED, balance=ans.balance)
                bq = b
            elif status == "NOSUB":
                self._plans.pop(msisdn, None)
                return ChargeResult(Outcome.USER_UNKNOWN)
            elif status == "DENIED":
                return self._denied(None, ans)
            else:
                raise StoreError(f"debit: unexpected status {status!r}")
        return ChargeResult(
            Outcome.CREDIT_LIMIT_REACHED, detail="too much contention on this account; try again"
        )

    # -- refund -------------------------------------------------------------------------------

    async def refund(self, req: DebitRequest) -> ChargeResult:
        """Rate ``req.units`` of ``req.service`` as a debit would and credit that amount back
        (an event refund, Diameter REFUND_ACCOUNT), idempotent by ``req.request_key``.
        ``charged`` in the result is the amount credited (a replay's is the first one's)."""
        try:
            return await self._refund(req)
        except (StoreUnavailable, RatingError) as exc:
            return _failed(exc)

    async def _refund(self, req: DebitRequest) -> ChargeResult:
        now = req.at if req.at is not None else self.clock()
        plan = await self.plan_of(req.subscriber)
        if plan is None:
            return ChargeResult(Outcome.USER_UNKNOWN)
        ctx = UsageContext(
            plan=plan,
            service=req.service,
            subscriber=req.subscriber,
            started_at=now,
            destination=req.info.destination,
            location=req.info.location,
        )
        amount = self.rater.cost(ctx, req.units)
        self.rater.forget(ctx)
        ans = await self.store.credit(
            req.subscriber, kind="refund", amount=amount, reference=req.request_key,
            note=f"refund {req.units} {req.service}", now=now,
            fingerprint=f"refund:{req.service}:{req.units}",
        )  # fmt: skip
        if ans.conflict:
            return _conflict(req.request_key)
        if ans.status == "NOSUB":
            self._plans.pop(req.subscriber, None)
            return ChargeResult(Outcome.USER_UNKNOWN)
        if ans.status != "OK":
            return ChargeResult(Outcome.INVALID_REQUEST, balance=ans.balance, detail=ans.status)
        return self._result(ans)

    # -- balance ------------------------------------------------------------------------------

    async def plan_of(self, subscriber: str) -> str | None:
        """The subscriber's plan (from the cache, else the store), or None if unknown.
        StoreUnavailable when the store cannot say."""
        plan = self._plans.get(subscriber)
        if plan:
            return plan
        acct = await self.store.get_account(subscriber)
        if acct is None:
            return None
        self._remember_plan(subscriber, acct.plan)
        return acct.plan

    async def balance(self, subscriber: str, at: int | None = None) -> BalanceResult:
        """The account, brought up to date first (due expiries, thresholds published since
        its last request: a balance request applies them as any request does)."""
        now = at if at is not None else self.clock()
        try:
            acct = await self.store.get_account(subscriber, refresh_at=now)
        except StoreUnavailable as exc:
            return BalanceResult(Outcome.STORE_UNAVAILABLE, detail=str(exc))
        if acct is None:
            return BalanceResult(Outcome.USER_UNKNOWN)
        return BalanceResult(
            Outcome.SUCCESS,
            balance=acct.balance,
            reserved=acct.reserved,
            available=acct.available,
            credit_limit=acct.credit_limit,
            state=acct.state,
            plan=acct.plan,
        )
