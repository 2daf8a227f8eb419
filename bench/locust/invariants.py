"""After a load run: does every micro-unit add up? Read from Redis, once the traffic has stopped.

Every script that changes an account appends its event to the bucket's outbox stream in the
same step (ocs/store/scripts/lib.lua, ``emit``): the fields ``t`` (kind), ``sub``, ``ts``,
``bal`` and ``rsv`` (the account after the event) and ``ver`` (the account's version after the
script), then the kind's own fields. One script is one mutation and bumps the version once;
the events it writes (lazy expiries first, then its own) share that version. The checks are
keyed on the fields, not on a list of kinds, so an event kind added later (a threshold or
barring event, say) passes as long as it says what it does to the money:

* ``amt``: signed micro-units added to the balance (top-ups, refunds, adjustments, charges);
* ``sid`` with ``hm``: the session's hold is now ``hm``; ``sid`` with ``rel``: the session
  ended and its hold ``rel`` went back;
* anything else changes neither the balance nor what is reserved.

For every subscriber:

1. **One event per mutation.** The versions of its events run 1, 2, 3... with no gap (a gap is
   a change without its event) and never go back; no version holds two events with a request
   key (``rk``), and no request key appears twice (a replay applied again).
2. **Money.** For each mutation: the balance after it = the balance before it + the sum of its
   ``amt``; the first mutation (creation) sets the opening balance, which must be the
   population's when it is known. So opening + top-ups - charges = the final balance, exactly.
3. **Reservations.** For each mutation, what is reserved moves by exactly the change of its
   sessions' holds, and a release returns exactly what the session held; at the end the
   account's ``rsv`` = the sum of its open sessions' holds, the sessions the events leave open
   are the sessions the account holds, and (after a load run) there are none, but for those the
   load generator reported abandoned.
4. **The last event is the account**: its balance, reserved and version are the account's.
5. **The client's ledger agrees** (when it knows): opening + what it topped up - what the OCS
   said it charged = the final balance; top-ups in the events = top-ups the client saw applied.

Off by one micro-unit anywhere is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ocs.constants import BUCKET_COUNT
from ocs.store.cluster import AdminRedis, admin_client
from ocs.store.events import expand
from ocs.store.keys import (
    SubscriberKeys,
    account_pattern,
    is_session_field,
    msisdn_of_account_key,
    outbox_key,
)

Event = dict[str, str]


@dataclass(frozen=True, slots=True)
class AccountState:
    balance: int
    reserved: int
    version: int
    #: Open sessions: id -> money held.
    sessions: Mapping[str, int]


@dataclass
class Totals:
    subscribers: int = 0
    events: int = 0
    mutations: int = 0
    opening: int = 0
    credits: int = 0  # sum of positive amounts
    debits: int = 0  # sum of negative amounts (a negative number)
    final: int = 0
    reserved: int = 0
    open_sessions: int = 0
    ledger_checked: int = 0
    ledger_unknown: int = 0
    #: The ledger knew the charges (native), not only the top-ups (Diameter).
    ledger_charges: bool = True


@dataclass
class CheckReport:
    totals: Totals = field(default_factory=Totals)
    #: (subscriber, problem), in the order found.
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: Event kinds seen and how often.
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def failing_subscribers(self) -> int:
        return len({s for s, _ in self.problems})

    def markdown(self, limit: int = 20) -> str:
        t = self.totals
        verdict = "**PASS**" if self.ok else f"**FAIL** ({self.failing_subscribers()} subscribers)"
        lines = [
            f"Invariant check: {verdict}. {t.subscribers:,} subscribers, {t.events:,} outbox "
            f"events, {t.mutations:,} mutations; opening {t.opening:,} µ + credits "
            f"{t.credits:,} µ - charges {-t.debits:,} µ = final {t.final:,} µ "
            f"({'equal' if t.opening + t.credits + t.debits == t.final else 'NOT equal'}); "
            f"reserved {t.reserved:,} µ in {t.open_sessions:,} open sessions.",
        ]
        if t.ledger_checked or t.ledger_unknown:
            what = "top-ups and charges" if t.ledger_charges else "top-ups (Diameter answers "
            what += "" if t.ledger_charges else "do not carry the amount charged)"
            lines.append(
                f"Client ledger ({what}): {t.ledger_checked:,} subscribers compared"
                + (
                    f", {t.ledger_unknown:,} had unanswered requests (not compared)"
                    if t.ledger_unknown
                    else ""
                )
                + "."
            )
        if self.kinds:
            kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.kinds.items()))
            lines.append(f"Events by kind: {kinds}.")
        for sub, problem in self.problems[:limit]:
            lines.append(f"- {sub}: {problem}")
        if len(self.problems) > limit:
            lines.append(f"- ... and {len(self.problems) - limit:,} more problems")
        return "\n".join(lines)


def _int(event: Event, name: str) -> int:
    return int(event[name])


def verify_subscriber(
    msisdn: str,
    events: Sequence[Event],
    account: AccountState | None,
    *,
    opening: int | None = None,
    ledger: Sequence[int] | None = None,
    check_charges: bool = True,
    abandoned: Iterable[str] = (),
    require_closed: bool = True,
    totals: Totals | None = None,
) -> list[str]:
    """The problems of one subscriber (empty: every invariant holds). ``events`` in stream
    order; ``ledger``: [charged, topped up, unanswered requests] from the load generator."""
    problems: list[str] = []
    totals = totals if totals is not None else Totals()
    if account is None:
        return ["events but no account"] if events else []
    if not events:
        return ["an account without any event (its creation left no event)"]
    totals.subscribers += 1
    totals.events += len(events)
    # Mutations: runs of events with the same version.
    groups: list[list[Event]] = []
    for e in events:
        if groups and groups[-1][0]["ver"] == e["ver"]:
            groups[-1].append(e)
        else:
            groups.append([e])
    totals.mutations += len(groups)
    first = int(groups[0][0]["ver"])
    if first != 1:
        problems.append(
            f"the outbox starts at version {first}: the events before it are "
            "missing (trimmed?), nothing can be checked"
        )
        return problems
    bal = rsv = 0
    holds: dict[str, int] = {}
    seen_keys: dict[tuple[str, str], int] = {}
    credits = debits = topups = 0
    prev_ver = 0
    for group in groups:
        ver = int(group[0]["ver"])
        if ver != prev_ver + 1:
            if ver <= prev_ver:
                problems.append(
                    f"version {ver} after version {prev_ver}: events out of order or repeated"
                )
            else:
                missing = f"{prev_ver + 1}" if ver == prev_ver + 2 else f"{prev_ver + 1}..{ver - 1}"
                problems.append(f"version {missing} has no event: a change without its event")
        prev_ver = max(prev_ver, ver)
        keyed = [e for e in group if "rk" in e]
        if len(keyed) > 1:
            problems.append(
                f"version {ver} has {len(keyed)} events with a request key: "
                "one change, several events"
            )
        if len({tuple(sorted(e.items())) for e in group}) < len(group):
            problems.append(f"version {ver}: the same event twice")
        amount = 0
        rsv_delta = 0
        for e in group:
            if "rk" in e:
                k = (e.get("t", ""), e["rk"])
                if k in seen_keys:
                    problems.append(
                        f"request {e['rk']!r} ({k[0]}) applied twice: versions "
                        f"{seen_keys[k]} and {ver}"
                    )
                seen_keys[k] = ver
            if "amt" in e:
                a = _int(e, "amt")
                amount += a
                if a >= 0:
                    credits += a
                else:
                    debits += a
                if e.get("rk", "").startswith("topup:"):
                    topups += a
            sid = e.get("sid")
            if sid is not None:
                old = holds.get(sid, 0)
                if "hm" in e:
                    new = _int(e, "hm")
                    holds[sid] = new
                    rsv_delta += new - old
                elif "rel" in e:
                    released = _int(e, "rel")
                    if sid not in holds:
                        problems.append(f"version {ver}: session {sid!r} ended but never opened")
                    elif released != old:
                        problems.append(
                            f"version {ver}: session {sid!r} released {released} µ but held {old} µ"
                        )
                    holds.pop(sid, None)
                    rsv_delta -= old
        end_bal, end_rsv = _int(group[-1], "bal"), _int(group[-1], "rsv")
        if group is groups[0]:
            start = end_bal - amount  # the opening balance
            totals.opening += start
            if opening is not None and start != opening:
                problems.append(f"opened with {start} µ, the population says {opening} µ")
            bal = start
        if bal + amount != end_bal:
            problems.append(
                f"version {ver}: balance {bal} µ {amount:+d} µ should be "
                f"{bal + amount} µ, the event says {end_bal} µ "
                f"(off by {end_bal - bal - amount:+d} µ)"
            )
        if rsv + rsv_delta != end_rsv:
            problems.append(
                f"version {ver}: reserved {rsv} µ {rsv_delta:+d} µ (the sessions' "
                f"holds) should be {rsv + rsv_delta} µ, the event says {end_rsv} µ"
            )
        bal, rsv = end_bal, end_rsv
    totals.credits += credits
    totals.debits += debits
    totals.final += account.balance
    totals.reserved += account.reserved
    totals.open_sessions += len(account.sessions)
    # The last event is the account as it is.
    if (bal, rsv, prev_ver) != (account.balance, account.reserved, account.version):
        problems.append(
            f"the last event says balance {bal} µ, reserved {rsv} µ, version "
            f"{prev_ver}; the account holds {account.balance} µ, "
            f"{account.reserved} µ, version {account.version} "
            f"(balance off by {account.balance - bal:+d} µ)"
        )
    held = sum(account.sessions.values())
    if held != account.reserved:
        problems.append(
            f"reserved {account.reserved} µ but its open sessions hold {held} µ "
            f"(off by {account.reserved - held:+d} µ)"
        )
    if set(holds) != set(account.sessions):
        only_events = sorted(set(holds) - set(account.sessions))[:3]
        only_account = sorted(set(account.sessions) - set(holds))[:3]
        problems.append(
            f"open sessions differ: the events leave {only_events} open, the "
            f"account holds {only_account}"
        )
    else:
        for sid, hm in account.sessions.items():
            if holds[sid] != hm:
                problems.append(f"session {sid!r} holds {hm} µ, its last event says {holds[sid]} µ")
    if require_closed:
        left = sorted(set(account.sessions) - set(abandoned))
        if left:
            problems.append(
                f"{len(left)} sessions still open after the run ({left[:3]}), none "
                "abandoned by the load generator"
            )
    if ledger is not None:
        charged, topped, unanswered = ledger
        if unanswered:
            totals.ledger_unknown += 1
        else:
            totals.ledger_checked += 1
            if topped != topups:
                problems.append(f"the client topped up {topped} µ, the events say {topups} µ")
            if check_charges and opening is not None:
                expect = opening + topped - charged
                if expect != account.balance:
                    problems.append(
                        f"opening {opening} µ + top-ups {topped} µ - charges the OCS "
                        f"reported {charged} µ = {expect} µ, but the balance is "
                        f"{account.balance} µ (off by {account.balance - expect:+d} µ)"
                    )
    return problems


async def read_outbox(client: AdminRedis, batch: int = 10_000) -> dict[str, list[Event]]:
    """Every bucket's outbox, as each subscriber's events in stream order."""
    by_sub: dict[str, list[Event]] = {}
    for b in range(BUCKET_COUNT):
        key = outbox_key(b)
        start = "-"
        while True:
            entries = await client.xrange(key, start, "+", count=batch)
            for entry_id, raw in entries:
                fields = expand({_s(k): _s(v) for k, v in raw.items()})
                fields["_id"] = _s(entry_id)
                by_sub.setdefault(fields.get("sub", ""), []).append(fields)
            if len(entries) < batch:
                break
            start = "(" + _s(entries[-1][0])
    for events in by_sub.values():
        for e in events:
            del e["_id"]
    return by_sub


async def read_accounts(client: AdminRedis) -> dict[str, AccountState]:
    """Every account: balance, reserved, version and its open sessions' holds."""
    keys = [_s(k) async for k in client.scan_iter(match=account_pattern(), count=1000)]
    msisdns = [msisdn_of_account_key(k) for k in keys]
    out: dict[str, AccountState] = {}
    for i in range(0, len(msisdns), 1000):
        chunk = msisdns[i : i + 1000]
        pipe = client.pipeline(transaction=False)
        for m in chunk:
            k = SubscriberKeys.of(m)
            pipe.hmget(k.account, "bal", "rsv", "ver")
            pipe.hgetall(k.sessions)
        replies = await pipe.execute()
        for j, m in enumerate(chunk):
            (bal, rsv, ver), sess = replies[2 * j], replies[2 * j + 1]
            sessions = {
                _s(sid): int(_unpack(raw)["hm"])
                for sid, raw in sess.items()
                if is_session_field(sid)  # (else a session request's answer)
            }
            out[m] = AccountState(int(bal or 0), int(rsv or 0), int(ver or 0), sessions)
    return out


async def check(
    redis_url: str,
    *,
    opening: Mapping[str, int] | None = None,
    ledger: Mapping[str, Sequence[int]] | None = None,
    check_charges: bool = True,
    abandoned: Iterable[str] = (),
    require_closed: bool = True,
) -> CheckReport:
    """Check every subscriber in the Redis at ``redis_url`` (no traffic may run meanwhile).

    ``opening``: the balances the population was created with; ``ledger``: the load
    generator's [charged, topped up, unanswered] per subscriber (``check_charges`` False when it
    cannot know charges: Diameter); ``abandoned``: engine session ids it could not end.
    """
    client = admin_client(redis_url)  # one Redis, a cluster or the sentinels' master
    try:
        events, accounts = await asyncio.gather(read_outbox(client), read_accounts(client))
    finally:
        await client.aclose()
    report = CheckReport()
    report.totals.ledger_charges = check_charges
    gone = set(abandoned)
    for e in (e for evs in events.values() for e in evs):
        report.kinds[e.get("t", "?")] = report.kinds.get(e.get("t", "?"), 0) + 1
    for msisdn in sorted(set(events) | set(accounts)):
        problems = verify_subscriber(
            msisdn,
            events.get(msisdn, []),
            accounts.get(msisdn),
            opening=None if opening is None else opening.get(msisdn),
            ledger=None if ledger is None else ledger.get(msisdn, (0, 0, 0)),
            check_charges=check_charges,
            abandoned=gone,
            require_closed=require_closed,
            totals=report.totals,
        )
        report.problems.extend((msisdn, p) for p in problems)
    return report


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
