"""The answers of session requests kept in the sessions hash (issue 17; scripts/lib.lua,
session_lookup): any earlier request of a session replays its exact answer within its window,
also after the session's release or expiry; past the window the answers are deleted by the
expiry pass, in batches; readers of the sessions hash see only sessions.

Against a real Redis started by the test session (the store fixture of tests/conftest.py,
which keeps session answers 15 minutes); the window tests use a store with a one-minute TTL.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from test_engine import T0, add

from ocs.store import keys as K
from ocs.store.store import ScriptAnswer, Store

TTL = 60_000
HOLD = 30_000
SUB = "46701230001"


def short(store: Store) -> Store:
    """The same client, session answers kept one minute."""
    return Store(store.client, session_ttl_ms=TTL, reference_ttl_ms=86_400_000)


async def reserve(store: Store, sid: str, rk: str, now: int, version: int = 0) -> ScriptAnswer:
    return await store.reserve(
        SUB, request_key=rk, session_id=sid, service="voice", units=60, cost=60_000,
        bucket_quote=-1, expected_version=version, hold_ms=HOLD, flags="o", destination="4672",
        location="cell-1", plan="per-second", now=now,
    )  # fmt: skip


async def commit(store: Store, sid: str, rk: str, version: int, now: int) -> ScriptAnswer:
    return await store.commit(
        SUB, request_key=rk, session_id=sid, used=30, cost=30_000, expected_version=version,
        next_units=60, next_cost=60_000, bucket_quote=-1, hold_ms=HOLD, flags="o", now=now,
    )  # fmt: skip


async def release(store: Store, sid: str, rk: str, version: int, now: int) -> ScriptAnswer:
    return await store.release(
        SUB, request_key=rk, session_id=sid, used=10, cost=10_000, expected_version=version,
        now=now,
    )  # fmt: skip


def replayed(ans: ScriptAnswer, kind: int = 1) -> ScriptAnswer:
    """What a replay of ``ans`` answers: the same, flagged."""
    fields = {f: getattr(ans, f) for f in ans.__dataclass_fields__}
    return ScriptAnswer(**{**fields, "replay": kind})


async def session_fields(raw: redis.asyncio.Redis) -> dict[bytes, bytes]:
    h: dict[bytes, bytes] = await raw.hgetall(K.SubscriberKeys.of(SUB).sessions)
    return h


async def compact(raw: redis.asyncio.Redis) -> bool:
    """Whether the account hash is in Redis's compact encoding (a listpack; a ziplist on
    Redis 6.2)."""
    enc = await raw.object("encoding", K.SubscriberKeys.of(SUB).account)
    return enc in (b"listpack", b"ziplist")


async def outbox_len(raw: redis.asyncio.Redis) -> int:
    n: int = await raw.xlen(K.outbox_key(K.bucket_of(SUB)))
    return n


async def test_every_request_of_a_session_replays_after_its_release(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await add(store, SUB, 10_000_000)
    first = [await reserve(store, "s1", "s1/0", T0)]
    first.append(await commit(store, "s1", "s1/1", first[0].session_version, T0 + 1_000))
    first.append(await commit(store, "s1", "s1/2", first[1].session_version, T0 + 2_000))
    first.append(await release(store, "s1", "s1/3", first[2].session_version, T0 + 3_000))
    assert [a.status for a in first] == ["OK", "OK", "OK", "OK"]
    after, events = await store.get_account(SUB), await outbox_len(raw_redis)
    assert after is not None and after.sessions == () and after.reserved == 0
    # Each replayed, in any order, with the version it was sent with (or a later one: an
    # engine whose cache moved on), and at another time: the first answer, nothing changed.
    for version in (None, 99):
        again = [
            await release(store, "s1", "s1/3", version or first[2].session_version, T0 + 9_000),
            await commit(store, "s1", "s1/1", version or first[0].session_version, T0 + 9_000),
            await reserve(store, "s1", "s1/0", T0 + 9_000),
            await commit(store, "s1", "s1/2", version or first[1].session_version, T0 + 9_000),
        ]
        assert again == [replayed(first[i]) for i in (3, 1, 0, 2)]
    # Another request under a used key: the first answer, said to be another's.
    other = await store.release(
        SUB, request_key="s1/3", session_id="s1", used=11, cost=11_000, expected_version=3,
        now=T0 + 9_000,
    )  # fmt: skip
    assert other == replayed(first[3], 2)
    assert await store.get_account(SUB) == after
    assert await outbox_len(raw_redis) == events
    # The answers are fields of the sessions hash, not keys; readers see only sessions.
    fields = await session_fields(raw_redis)
    assert sorted(fields) == [b"\xff#", b"\xffcs1/1", b"\xffcs1/2", b"\xffes1/3", b"\xffrs1/0"]
    # (and how many sessions are open, and when the answers' next pass is due: after the
    # first answer's time, plus half a TTL)
    last = T0 + 3_000 + 900_000 + 900_000 // 16  # (the last answer's time, and a margin)
    assert fields[b"\xff#"] == f"0:{T0 + 900_000 + 450_000}:{last}".encode()
    assert [k async for k in raw_redis.scan_iter(match="*:idem:*")] == []
    # A request key is per script: a commit under the reserve's key is a new request.
    assert (await commit(store, "s1", "s1/0", 1, T0 + 9_000)).status == "NOSESS"
    # The index still says the session's hold (a lower bound). The pass it brings finds no
    # session open and no answer past its time: it only moves the index to when all of them
    # are past it (the last one's, the release's, and a margin for the processes' clocks), so
    # they are kept about a TTL, not 1.5; and that pass deletes the key at once.
    expiry = K.SubscriberKeys.of(SUB).expiry
    assert await raw_redis.zscore(expiry, SUB) == T0 + HOLD
    assert await store.expire(SUB, T0 + HOLD) == 0
    assert await raw_redis.zscore(expiry, SUB) == last
    assert await store.expire(SUB, last - 1) == 0
    assert len(await session_fields(raw_redis)) == 5
    assert await store.expire(SUB, last) == 0
    assert await session_fields(raw_redis) == {}
    assert await raw_redis.zscore(expiry, SUB) is None


async def test_answers_are_kept_their_window_and_then_deleted(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    st = short(store)
    await add(st, SUB, 10_000_000)
    r = await reserve(st, "s1", "s1/0", T0)
    c = await commit(st, "s1", "s1/1", r.session_version, T0 + 20_000)
    e = await release(st, "s1", "s1/2", c.session_version, T0 + 40_000)
    assert e.status == "OK"
    # The release's lazy pass (past the reserve's hold) deleted nothing and scheduled the
    # answers' next for when half of them are past their time: the reserve's and the
    # commit's are kept until T0 + 60 s and T0 + 80 s. The index says the commit's hold (a
    # lower bound); the pass it brings only moves it there: no session is open.
    k = K.SubscriberKeys.of(SUB)
    assert await raw_redis.zscore(k.expiry, SUB) == T0 + 20_000 + HOLD
    assert await st.expire(SUB, T0 + 20_000 + HOLD) == 0
    assert await raw_redis.zscore(k.expiry, SUB) == T0 + 70_000
    assert await raw_redis.hget(k.account, "nexp") == str(T0 + 70_000).encode()
    assert await st.expire(SUB, T0 + TTL - 1) == 0
    assert len(await session_fields(raw_redis)) == 4  # (three answers and the count)
    assert await reserve(st, "s1", "s1/0", T0 + TTL - 1) == replayed(r)
    # That pass deletes the reserve's answer, past its time, and keeps the others.
    assert await st.expire(SUB, T0 + 70_000) == 0
    assert sorted(await session_fields(raw_redis)) == [b"\xff#", b"\xffcs1/1", b"\xffes1/2"]
    assert await commit(st, "s1", "s1/1", r.session_version, T0 + 70_000) == replayed(c)
    assert await raw_redis.zscore(k.expiry, SUB) == T0 + 90_000
    assert await st.expire(SUB, T0 + 90_000) == 0
    assert sorted(await session_fields(raw_redis)) == [b"\xff#", b"\xffes1/2"]
    assert await release(st, "s1", "s1/2", 2, T0 + 90_000) == replayed(e)
    # ... and the last pass deletes the last one, and the key.
    due = int(await raw_redis.zscore(k.expiry, SUB) or 0)
    assert due == T0 + 40_000 + TTL
    assert await st.expire(SUB, due) == 0
    assert await session_fields(raw_redis) == {}
    assert await raw_redis.zscore(k.expiry, SUB) is None
    # Past its window a replay is a new request: here, of a session that is gone.
    assert (await release(st, "s1", "s1/2", 2, due)).status == "NOSESS"


async def test_an_expired_session_keeps_its_answers(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    st = short(store)
    await add(st, SUB, 10_000_000)
    r = await reserve(st, "s1", "s1/0", T0)
    # Abandoned: released by the sweeper's step once its hold has passed.
    assert await st.expire(SUB, T0 + HOLD) == 1
    acct = await st.get_account(SUB)
    assert acct is not None and acct.sessions == () and acct.reserved == 0
    # A late replay of its reserve still gets the first answer (it does not open it again).
    assert await reserve(st, "s1", "s1/0", T0 + HOLD + 1) == replayed(r)
    assert await st.get_account(SUB) == acct
    # A lazy pass (another request of the subscriber) deletes it once past its time.
    await reserve(st, "s2", "s2/0", T0 + TTL + TTL // 2)
    assert sorted(await session_fields(raw_redis)) == [b"s2", b"\xff#", b"\xffrs2/0"]


async def test_a_top_up_tells_of_open_sessions_only(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    async def credits() -> list[dict[bytes, Any]]:
        entries = await raw_redis.xrange(K.notify_key(K.bucket_of(SUB)))
        return [f for _, f in entries if f[b"t"] == b"credit" and f[b"sub"] == SUB.encode()]

    await add(store, SUB, 10_000_000)
    r = await reserve(store, "s1", "s1/0", T0)
    await store.credit(SUB, kind="topup", amount=1_000_000, reference="t1", now=T0)
    assert len(await credits()) == 1
    await release(store, "s1", "s1/1", r.session_version, T0 + 1_000)
    # Only answers (and the count, 0) left in the sessions hash: no open session to tell of.
    assert len(await session_fields(raw_redis)) == 3
    await store.credit(SUB, kind="topup", amount=1_000_000, reference="t2", now=T0 + 2_000)
    assert len(await credits()) == 1


async def test_after_an_upgrade_the_answers_of_before_still_replay(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    from test_script_equivalence import FrozenStore

    old = FrozenStore(store.client)  # (the scripts before session answers moved)
    await old.load_scripts()
    await add(old, SUB, 10_000_000)
    r = await reserve(old, "s1", "s1/0", T0)
    c = await commit(old, "s1", "s1/1", r.session_version, T0 + 1_000)
    assert (r.status, c.status) == ("OK", "OK")
    assert len([k async for k in raw_redis.scan_iter(match="*:idem:*")]) == 2
    # This version starts on a store with keys that expire: for a session TTL it also reads
    # the keys of before (the store's clock, here T0, is within it), and only reads them.
    new = Store(store.client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
    await new.load_scripts()
    assert new.legacy_answers_until > T0 + 900_000
    assert await commit(new, "s1", "s1/1", r.session_version, T0 + 2_000) == replayed(c)
    assert await reserve(new, "s1", "s1/0", T0 + 2_000) == replayed(r)
    e = await release(new, "s1", "s1/2", c.session_version, T0 + 3_000)
    assert e.status == "OK" and b"\xffes1/2" in await session_fields(raw_redis)
    assert len([k async for k in raw_redis.scan_iter(match="*:idem:*")]) == 2
    # Another process of this version starts later: the same window (the store says when).
    later = Store(store.client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
    await later.load_scripts()
    assert later.legacy_answers_until == new.legacy_answers_until
    # Past the window the keys of before are not read (they have expired by then).
    later.legacy_answers_until = T0
    assert (await commit(later, "s1", "s1/1", r.session_version, T0 + 4_000)).status == "NOSESS"


async def test_a_new_store_reads_no_keys_of_before(store: Store) -> None:
    await store.load_scripts()
    assert store.legacy_answers_until == 0


async def test_a_new_account_holds_the_fields_of_every_request_first(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    """A small hash is a listpack, which HMGET and HSET search from its start: a new account
    has the fields every request reads (load_account) and writes (ver, up) first
    (upsert.lua; docs/architecture.md, Performance 18), and keeps them there."""
    await add(store, SUB, 10_000_000)
    r = await reserve(store, "s1", "s1/0", T0)
    await commit(store, "s1", "s1/1", r.session_version, T0 + 1_000)
    k = K.SubscriberKeys.of(SUB)
    assert await compact(raw_redis)
    fields = list(await raw_redis.hgetall(k.account))  # (a listpack's: in its order)
    every_request = [b"bal", b"rsv", b"ver", b"up", b"nexp", b"lim", b"st", b"plan", b"bk",
                     b"nb", b"blo", b"bhi", b"thv"]  # fmt: skip
    assert fields[: len(every_request)] == every_request
