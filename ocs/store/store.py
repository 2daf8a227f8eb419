"""The store: the only code that touches balances. Redis + Lua, one script per mutation.

Each mutation is one EVALSHA through the auto-pipelining client, so the concurrent requests of
one event-loop turn travel to Redis in one write. Scripts live in ``scripts/*.lua``; each is
loaded with the shared prelude ``lib.lua`` in front of it (see that file for conventions).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import msgpack

from ocs.constants import BUCKET_COUNT
from ocs.store import keys as K
from ocs.store.cluster import HotRedis
from ocs.store.errors import StoreError, StoreUnavailable
from ocs.store.events import expand
from ocs.store.functions import build_library
from ocs.store.keys import SubscriberKeys
from ocs.store.redis_client import (
    ConnectionLost,
    Function,
    LibraryLoader,
    RedisClientError,
    ReplyError,
    Script,
)

logger = logging.getLogger(__name__)

SCRIPT_NAMES: Final = ("reserve", "commit", "release", "debit", "credit", "upsert", "expire")

#: ``ScriptAnswer.replay``: a retry of the same request; another request under a used key.
REPLAY_SAME: Final = 1
REPLAY_DIFFERENT: Final = 2

#: Reply errors that mean "Redis cannot serve now", not "the request is wrong".
_UNAVAILABLE_REPLIES: Final = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
    "NOREPLICAS",
)


def script_source(name: str) -> str:
    """A script's full source: the shared prelude, then its body."""
    pkg = resources.files("ocs.store") / "scripts"
    return (pkg / "lib.lua").read_text() + "\n" + (pkg / f"{name}.lua").read_text()


def session_fingerprint(name: str, args: Sequence[str | int | bytes]) -> str:
    """The fingerprint a session script (reserve, commit, release) makes of its arguments
    (scripts/lib.lua, idem_get): its name and the service (reserve) or the units used
    (commit, release), ARGV[6]. For callers of earlier scripts, which took it as their
    next-to-last argument (tests/test_script_equivalence.py, bench/scripts_cost.py)."""
    return f"{name}:{_s(args[5]) if isinstance(args[5], bytes) else args[5]}"


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class ScriptAnswer:
    """The fixed-shape answer of the charging scripts (see ``answer`` in lib.lua).

    Built once per request on the hot path, so it is a plain slotted dataclass (a frozen
    one costs a ``object.__setattr__`` per field); treat it as read-only.
    """

    status: str
    granted: int = 0
    charged: int = 0
    from_buckets: int = 0
    balance: int = 0
    reserved: int = 0
    credit_limit: int = 0
    session_version: int = 0
    money_cursor: int = 0
    held_bucket_units: int = 0
    quote_buckets: int = 0
    quote_money: int = 0
    used_total: int = 0
    final: bool = False
    state: str = ""
    service: str = ""
    destination: str = ""
    location: str = ""
    started_at: int = 0
    plan: str = ""
    session_plan: str = ""
    #: 0: answered now; REPLAY_SAME: the stored answer of an earlier request under the same
    #: key; REPLAY_DIFFERENT: the same, but that request was not this one (another amount...).
    replay: int = 0
    #: Money the session holds after the request (micro-units; 0 without a session). A
    #: replay's is the first answer's, the past's.
    held_money: int = 0

    @property
    def conflict(self) -> bool:
        """A different request was sent under a key already used: the stored answer is the
        first request's, and nothing changed."""
        return self.replay == REPLAY_DIFFERENT

    @classmethod
    def parse(cls, r: Sequence[Any]) -> ScriptAnswer:
        """From the script's reply: numbers arrive as integers, text as bytes."""
        # 21 or 22 slots: an answer stored before ``held_money`` (slot 23) was answered.
        if len(r) not in (21, 22, 23):
            raise StoreError(f"malformed script answer: {r!r}")
        return cls(
            r[0].decode(),
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13] == 1,
            r[14].decode(),
            r[15].decode(),
            r[16].decode(),
            r[17].decode(),
            r[18],
            r[19].decode(),
            r[20].decode(),
            r[21] if len(r) >= 22 else 0,
            r[22] if len(r) == 23 else 0,
        )

    @property
    def available(self) -> int:
        return self.balance - self.reserved + self.credit_limit


@dataclass(frozen=True, slots=True)
class UnitBucket:
    """Free units for one service: consumed before money, lowest priority number first."""

    id: str
    service: str
    units: int
    reserved: int = 0
    priority: int = 0
    #: Unix ms; 0 = never.
    expires_at: int = 0


@dataclass(frozen=True, slots=True)
class OpenSession:
    session_id: str
    service: str
    plan: str
    granted: int
    held_money: int
    held_units: int
    used: int
    charged: int
    started_at: int
    expires_at: int
    destination: str
    location: str
    version: int


#: A balance threshold as the store keeps it: (below, lift, action), micro-units.
ThresholdSpec = tuple[int, int, str]

#: ``update_subscriber(thresholds=PLAN_THRESHOLDS)``: drop the account's own thresholds.
PLAN_THRESHOLDS: Final = "plan"

_LEVEL: Final = {"active": 0, "barred-outgoing": 1, "barred-all": 2, "suspended": 2,
                 "none": 0, "outgoing": 1, "all": 2}  # fmt: skip
_LEVEL_NAME: Final = ("none", "outgoing", "all")


def encode_thresholds(thresholds: Sequence[ThresholdSpec]) -> str:
    """The scripts' text form, "below:lift:action;..." (``;`` alone: an empty list)."""
    return ";".join(f"{b}:{lift}:{a}" for b, lift, a in thresholds) or ";"


def decode_thresholds(text: str) -> tuple[ThresholdSpec, ...]:
    out = []
    for item in text.split(";"):
        if item:
            below, lift, action = item.split(":", 2)
            out.append((int(below), int(lift), action))
    return tuple(out)


def network_barring(state: str, by_balance: str) -> str:
    """The barring the network should apply (none | outgoing | all): the stronger of the
    account state's and the balance thresholds' (the same rule as ``barring`` in lib.lua)."""
    return _LEVEL_NAME[max(_LEVEL.get(state, 0), _LEVEL.get(by_balance, 0))]


@dataclass(frozen=True, slots=True)
class Account:
    msisdn: str
    balance: int
    reserved: int
    credit_limit: int
    state: str
    plan: str
    version: int
    created_at: int
    updated_at: int
    buckets: tuple[UnitBucket, ...] = ()
    sessions: tuple[OpenSession, ...] = ()
    #: The barring the balance thresholds impose: none | outgoing | all.
    barred_by_balance: str = "none"
    #: The thresholds now engaged (their ``below``), highest first.
    engaged: tuple[int, ...] = ()
    #: The account's own thresholds (None: the plan's apply).
    thresholds: tuple[ThresholdSpec, ...] | None = None

    @property
    def barring(self) -> str:
        """What the network (the HLR) should bar: none | outgoing | all."""
        return network_barring(self.state, self.barred_by_balance)

    @property
    def available(self) -> int:
        """What new grants may still hold: balance - reserved + credit limit."""
        return self.balance - self.reserved + self.credit_limit


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox entry: the stream id and its fields (all strings, amounts as integers)."""

    id: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.fields.get("t", "")


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


#: At most this many SCAN steps for one page of list_subscribers.
SCAN_STEPS = 64


class Store:
    """Typed access to balances. Every method raises StoreUnavailable when Redis cannot answer."""

    def __init__(
        self,
        client: HotRedis,
        *,
        session_ttl_ms: int,
        reference_ttl_ms: int,
    ) -> None:
        self.client = client
        self.session_ttl_ms = session_ttl_ms
        self.reference_ttl_ms = reference_ttl_ms
        #: Which set of plan thresholds the buckets hold (a digest of them, the same in every
        #: process): an account evaluated with another re-evaluates at its next change.
        self.thresholds_generation = "0"
        #: EVALSHA until load_scripts() finds Redis 7.0+, then FCALL (ocs/store/functions.py).
        self._scripts: dict[str, Script | Function] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        #: "functions" or "evalsha": how the scripts are called (set by load_scripts()).
        self.script_mode = "evalsha"
        #: Until when (Unix ms, the requests' clock) a session request also looks for its
        #: answer under the key an earlier version kept it in (set by load_scripts(); 0:
        #: not at all). Session answers are fields of the sessions hash now (scripts/lib.lua,
        #: session_lookup); a replay after an upgrade of a request answered before it still
        #: finds its answer, for the session TTL those keys live.
        self.legacy_answers_until = 0

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    async def _redis(work: Awaitable[Any]) -> Any:
        """Await a Redis call; driver errors leave the store wrapped (docs/architecture.md)."""
        try:
            return await work
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc) from exc

    async def _call(
        self, name: str, keys: Sequence[str], args: list[str | int | bytes], fingerprint: str = ""
    ) -> Any:
        # Every script's last arguments: the request's fingerprint, stored with its answer, and
        # the generation of the published thresholds (lib.lua).
        args.append(fingerprint)
        args.append(self.thresholds_generation)
        return await self._redis(self._scripts[name](keys, args))

    async def _cmd(self, *args: str | int | bytes) -> Any:
        return await self._redis(self.client.execute(*args))

    async def _answer(
        self,
        name: str,
        msisdn: str,
        request_key: str | None,
        args: list[str | int | bytes],
        fingerprint: str | None = "",
    ) -> ScriptAnswer:
        """Run a charging script. ``fingerprint`` is what the client asked (not what the
        engine derived from its caches), kept with the answer so that a replay under the same
        key can say whether it was the same request (``ScriptAnswer.replay``); None for the
        session scripts, which make theirs from their arguments (:func:`session_fingerprint`:
        one argument fewer per request)."""
        until = self.legacy_answers_until  # (args[0]: the request's `now`, in every script)
        legacy = until > 0 and args[0] < until  # type: ignore[operator]
        keys = SubscriberKeys.of(msisdn).for_script(name, request_key, legacy)
        if fingerprint is not None:
            args.append(fingerprint)
        args.append(self.thresholds_generation)
        # (awaited here rather than through _call and _redis: two coroutines fewer per
        # request on the hot path, the same errors)
        try:
            raw = await self._scripts[name](keys, args)
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc) from exc
        return ScriptAnswer.parse(raw)

    async def ping(self) -> bool:
        return _s(await self._cmd("PING")) == "PONG"

    async def load_scripts(self, *, functions: bool = True) -> None:
        """Load every script now (start-up), so the first requests need no reload.

        On Redis 7.0+ (unless ``functions`` is False) the scripts are loaded as one Functions
        library and called with FCALL from then on: the shared prelude then runs once per load
        instead of once per call (docs/architecture.md, Performance). Redis 6.2 has no
        Functions: there they stay EVALSHA scripts, with the same Lua. So do they where the
        Redis user may not run FUNCTION (an ACL without it: NOPERM), with a warning.
        """
        self.legacy_answers_until = await self._legacy_answers_until()
        if functions and await self._redis_major() >= 7:
            lib = build_library(SCRIPT_NAMES)
            loader = LibraryLoader(self.client, lib.code)
            try:
                await loader.load()
            except ReplyError as exc:
                if not exc.message.startswith("NOPERM"):
                    raise _wrapped(exc) from exc
                logger.warning("redis: FUNCTION not allowed (%s); scripts by EVALSHA", exc)
            except _DRIVER_ERRORS as exc:
                raise _wrapped(exc) from exc
            else:
                self._scripts = {
                    name: Function(self.client, lib.functions[name], lib.name, loader)
                    for name in SCRIPT_NAMES
                }
                self.script_mode = "functions"
                return
        for name in SCRIPT_NAMES:
            await self._cmd("SCRIPT", "LOAD", script_source(name))

    async def _legacy_answers_until(self) -> int:
        """Until when session requests also read the answer keys of an earlier version: a
        session TTL after the first start of this version on a store that held keys with a
        TTL (answers of before among them, perhaps); 0 on a store that held none (new)."""
        key = K.session_answers_since_key()
        since = await self._cmd("GET", key)
        if since is None:
            masters = getattr(self.client, "masters", None)
            nodes = masters() if callable(masters) else [self.client]
            expiring = 0
            for node in nodes:
                info = _s(await self._redis(node.execute("INFO", "keyspace")))
                expiring += sum(int(x) for x in re.findall(r"expires=(\d+)", info))
            start = time.time_ns() // 1_000_000 if expiring else 0
            if not await self._cmd("SET", key, start, "NX"):
                since = await self._cmd("GET", key)  # (another process was first)
            else:
                since = start
        first = int(since or 0)
        return first + self.session_ttl_ms if first else 0

    async def _redis_major(self) -> int:
        info = _s(await self._cmd("INFO", "server"))
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return int(line.split(":", 1)[1].split(".", 1)[0])
        return 0

    # -- mutations (one script each) ----------------------------------------------------------

    async def create_subscriber(
        self,
        msisdn: str,
        *,
        plan: str,
        balance: int,
        credit_limit: int,
        state: str,
        buckets: Sequence[UnitBucket] = (),
        now: int,
        request_key: str | None = None,
    ) -> ScriptAnswer:
        """Create a subscriber; status EXISTS (and nothing changes) when it already exists."""
        packed = _pack_buckets(buckets)
        return await self._answer(
            "upsert",
            msisdn,
            request_key,
            [now, msisdn, request_key or "", self.reference_ttl_ms, "create", plan,
             credit_limit, state, balance, packed, ""],
            f"create:{plan}:{balance}:{credit_limit}:{state}:{_digest(packed)}",
        )  # fmt: skip

    async def update_subscriber(
        self,
        msisdn: str,
        *,
        plan: str | None = None,
        credit_limit: int | None = None,
        state: str | None = None,
        add_buckets: Sequence[UnitBucket] = (),
        thresholds: Sequence[ThresholdSpec] | str | None = None,
        now: int,
        request_key: str | None = None,
    ) -> ScriptAnswer:
        """Change plan, credit limit, state or the account's own balance thresholds
        (``PLAN_THRESHOLDS``: none of its own), or grant unit buckets; status NOSUB if
        unknown. A change of plan or thresholds re-evaluates the thresholds at once."""
        if thresholds is None:
            thr = ""
        elif isinstance(thresholds, str):
            if thresholds != PLAN_THRESHOLDS:
                raise ValueError(f"thresholds: {thresholds!r}")
            thr = "-"
        else:
            thr = encode_thresholds(thresholds)
        packed = _pack_buckets(add_buckets)
        lim = "" if credit_limit is None else credit_limit
        return await self._answer(
            "upsert",
            msisdn,
            request_key,
            [now, msisdn, request_key or "", self.reference_ttl_ms, "update", plan or "", lim,
             state or "", 0, packed, thr],
            f"update:{plan or ''}:{lim}:{state or ''}:{thr}:{_digest(packed)}",
        )  # fmt: skip

    async def credit(
        self,
        msisdn: str,
        *,
        kind: str,
        amount: int,
        reference: str,
        note: str = "",
        now: int,
        fingerprint: str | None = None,
    ) -> ScriptAnswer:
        """Top-up, refund (amount > 0) or adjustment (signed), idempotent by reference.

        ``charged`` in the answer is the amount applied (a replay's is the first request's);
        status TOOBIG when the balance would leave the exact range (nothing changes). A
        replay of another request under the reference (by default: another kind or amount;
        ``fingerprint`` says what identifies the request otherwise) has ``conflict`` set.
        """
        return await self._answer(
            "credit",
            msisdn,
            reference,
            [now, msisdn, reference, self.reference_ttl_ms, kind, amount, note],
            f"{kind}:{amount}" if fingerprint is None else fingerprint,
        )

    # reserve, commit and release hand back _answer's coroutine rather than awaiting it in
    # one of their own (one coroutine fewer per request, docs/native-protocol.md, Speed);
    # the caller awaits it as it would theirs, and nothing runs before that.

    def reserve(
        self,
        msisdn: str,
        *,
        request_key: str,
        session_id: str,
        service: str,
        units: int,
        cost: int,
        bucket_quote: int,
        expected_version: int,
        hold_ms: int,
        flags: str,
        destination: str,
        location: str,
        plan: str,
        now: int,
    ) -> Coroutine[Any, Any, ScriptAnswer]:
        return self._answer(
            "reserve",
            msisdn,
            request_key,
            [now, msisdn, request_key, now + self.session_ttl_ms, session_id, service, units, cost,
             bucket_quote, expected_version, hold_ms, flags, destination, location, plan],
            None,  # (the script's fingerprint: "reserve:<service>")
        )  # fmt: skip

    def commit(
        self,
        msisdn: str,
        *,
        request_key: str,
        session_id: str,
        used: int,
        cost: int,
        expected_version: int,
        next_units: int,
        next_cost: int,
        bucket_quote: int,
        hold_ms: int,
        flags: str,
        now: int,
    ) -> Coroutine[Any, Any, ScriptAnswer]:
        return self._answer(
            "commit",
            msisdn,
            request_key,
            [now, msisdn, request_key, now + self.session_ttl_ms, session_id, used, cost,
             expected_version, next_units, next_cost, bucket_quote, hold_ms, flags],
            None,  # (the script's fingerprint: "commit:<used>")
        )  # fmt: skip

    def release(
        self,
        msisdn: str,
        *,
        request_key: str,
        session_id: str,
        used: int,
        cost: int,
        expected_version: int,
        now: int,
    ) -> Coroutine[Any, Any, ScriptAnswer]:
        return self._answer(
            "release",
            msisdn,
            request_key,
            [now, msisdn, request_key, now + self.session_ttl_ms, session_id, used, cost,
             expected_version],
            None,  # (the script's fingerprint: "release:<used>")
        )  # fmt: skip

    async def debit(
        self,
        msisdn: str,
        *,
        request_key: str,
        service: str,
        units: int,
        cost: int,
        bucket_quote: int,
        flags: str,
        plan: str,
        now: int,
        destination: str = "",
    ) -> ScriptAnswer:
        return await self._answer(
            "debit",
            msisdn,
            request_key,
            [now, msisdn, request_key, self.reference_ttl_ms, service, units, cost,
             bucket_quote, flags, plan, destination],
            f"debit:{service}:{units}",
        )  # fmt: skip

    async def expire(self, msisdn: str, now: int) -> int:
        """Bring the account up to date: release its sessions whose hold time has passed
        (how many were is returned) and apply the balance thresholds published since it was
        last evaluated (which may bar or unbar it)."""
        keys = SubscriberKeys.of(msisdn).for_script("expire", None)
        return int(await self._call("expire", keys, [now, msisdn]))

    async def claim_thresholds_pass(self, owner: str, ttl_s: int) -> str:
        """Who brings every account up to date with the thresholds of the current
        generation: "mine" (``owner`` now holds the claim for ``ttl_s`` s), "done" (a pass
        finished), or another owner's name (one is under way)."""
        key = K.thresholds_pass_key(self.thresholds_generation)
        for _ in range(2):  # (twice: the claim may run out between the SET and the GET)
            if await self._cmd("SET", key, owner, "NX", "EX", ttl_s):
                return "mine"
            held = await self._cmd("GET", key)
            if held is not None:
                return "mine" if _s(held) == owner else _s(held)  # (ours: a pass resumed)
        return "busy"

    async def thresholds_pass_done(self, ttl_s: int) -> None:
        """Say that every account has the current generation's thresholds."""
        await self._cmd("SET", K.thresholds_pass_key(self.thresholds_generation), "done",
                        "EX", ttl_s)  # fmt: skip

    # -- sweeper ------------------------------------------------------------------------------

    async def due_for_expiry(self, bucket: int, now: int, limit: int = 100) -> list[str]:
        """Subscribers of a bucket that may hold sessions past their hold time."""
        raw = await self._cmd("ZRANGEBYSCORE", K.expiry_key(bucket), "-inf", now, "LIMIT", 0, limit)
        return [_s(m) for m in raw]

    # -- session index (for requests that name only the session) -----------------------------

    # The index is a hint, not a balance: a plain key queued into the same write as the
    # session's script (no round trip of its own). It lives as long as the session's hold and
    # at least as long as the session's stored answers (the session TTL), and outlives the
    # session's release: a replayed commit or release that names only the session must reach
    # the script that holds its first answer. A lost write costs at most a lookup that finds
    # nothing.

    def index_session(self, session_id: str, msisdn: str, hold_ms: int = 0) -> None:
        ttl = max(hold_ms, self.session_ttl_ms)
        self.client.send_nowait("SET", K.session_index_key(session_id), msisdn, "PX", ttl)

    async def session_owner(self, session_id: str) -> str | None:
        raw = await self._cmd("GET", K.session_index_key(session_id))
        return None if raw is None else _s(raw)

    # -- tariff plans (shared by every OCS process) ---------------------------------------

    async def save_plan(self, key: str, text: str) -> int:
        """Keep a plan version's source; returns the new revision of the plan set."""
        await self._cmd("HSET", K.plans_key(), key, text)
        return int(await self._cmd("INCR", K.plans_revision_key()))

    async def publish_thresholds(self, specs: dict[str, Sequence[ThresholdSpec]]) -> None:
        """Give every bucket the balance thresholds of each plan (an empty list removes a
        plan's), so the scripts read them from their own slot. Idempotent."""
        sets = [x for name, t in sorted(specs.items()) if t for x in (name, encode_thresholds(t))]
        gone = [name for name, t in specs.items() if not t]
        generation = format(zlib.crc32("\n".join(sets).encode()), "08x")
        work = []
        for b in range(BUCKET_COUNT):
            if sets:
                work.append(self._cmd("HSET", K.thresholds_key(b), *sets))
            if gone:
                work.append(self._cmd("HDEL", K.thresholds_key(b), *gone))
        await asyncio.gather(*work)
        self.thresholds_generation = generation

    async def thresholds_published(self, plans: int) -> bool:
        """Whether the buckets hold thresholds for ``plans`` plans (checked on the first and
        the last bucket: publishing writes them in order)."""
        first, last = await asyncio.gather(
            self._cmd("HLEN", K.thresholds_key(0)),
            self._cmd("HLEN", K.thresholds_key(BUCKET_COUNT - 1)),
        )
        return int(first) == plans and int(last) == plans

    async def plans_revision(self) -> int:
        raw = await self._cmd("GET", K.plans_revision_key())
        return int(raw) if raw else 0

    async def plan_sources(self) -> dict[str, str]:
        raw = await self._cmd("HGETALL", K.plans_key())
        return {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}

    # -- reads ------------------------------------------------------------------------------

    async def get_account(self, msisdn: str, *, refresh_at: int | None = None) -> Account | None:
        """The account as it is; with ``refresh_at`` (now, Unix ms), first brought up to date
        (:meth:`expire`: due expiries, newly published thresholds), as a request would."""
        if refresh_at is not None:
            await self.expire(msisdn, refresh_at)
        k = SubscriberKeys.of(msisdn)
        acct, sess = await asyncio.gather(
            self._cmd("HGETALL", k.account), self._cmd("HGETALL", k.sessions)
        )
        if not acct:
            return None
        a = {_s(acct[i]): acct[i + 1] for i in range(0, len(acct), 2)}

        def num(name: str) -> int:
            v = a.get(name)
            return int(v) if v else 0

        buckets = tuple(
            UnitBucket(
                id=str(b["id"]),
                service=str(b["svc"]),
                units=int(b["n"]),
                reserved=int(b["r"]),
                priority=int(b["p"]),
                expires_at=int(b["x"]),
            )
            for b in (_unpack(a["bk"]) if a.get("bk") else [])
        )
        sessions = []
        for i in range(0, len(sess), 2):
            if not K.is_session_field(sess[i]):
                continue  # (a session request's answer)
            s = _unpack(sess[i + 1])
            sessions.append(
                OpenSession(
                    session_id=_s(sess[i]),
                    service=str(s["svc"]),
                    plan=str(s.get("plan", "")),
                    granted=int(s["g"]),
                    held_money=int(s["hm"]),
                    held_units=int(s["gb"]),
                    used=int(s["u"]),
                    charged=int(s["mc"]),
                    started_at=int(s["t0"]),
                    expires_at=int(s["x"]),
                    destination=str(s.get("dst", "")),
                    location=str(s.get("loc", "")),
                    version=int(s["sv"]),
                )
            )
        sessions.sort(key=lambda x: x.started_at)
        return Account(
            msisdn=msisdn,
            balance=num("bal"),
            reserved=num("rsv"),
            credit_limit=num("lim"),
            state=_s(a.get("st", b"")),
            plan=_s(a.get("plan", b"")),
            version=num("ver"),
            created_at=num("cr"),
            updated_at=num("up"),
            buckets=buckets,
            sessions=tuple(sessions),
            barred_by_balance=_s(a.get("nb", b"none")),
            engaged=tuple(int(x) for x in _s(a.get("th", b"")).split(",") if x),
            thresholds=decode_thresholds(_s(a["thr"])) if a.get("thr") else None,
        )

    async def list_subscribers(self, cursor: int = 0, count: int = 100) -> tuple[int, list[str]]:
        """A page of accounts by SCAN: (next cursor, msisdns); cursor 0 again when done. A
        SCAN step may find nothing before the end (always so on a cluster's master that holds
        none of the keys scanned): steps are taken until the page has about ``count`` or the
        scan ends (at most ``SCAN_STEPS`` steps), so an empty page means no more."""
        found: list[str] = []
        nxt = cursor
        for _ in range(SCAN_STEPS):
            step, keys = await self._cmd(
                "SCAN", nxt, "MATCH", K.account_pattern(), "COUNT", max(count, 10)
            )
            nxt = int(step)
            found += (K.msisdn_of_account_key(_s(k)) for k in keys)
            if nxt == 0 or len(found) >= count:
                break
        return nxt, sorted(found)

    async def events(
        self, msisdn: str, *, limit: int = 100, before: str | None = None, scan_max: int = 200_000
    ) -> list[Event]:
        """The subscriber's newest events, newest first, read from its bucket's outbox.

        The outbox is shared by the bucket, so this scans it backwards (at most ``scan_max``
        entries); it is an operator's view, not a hot path.
        """
        key = SubscriberKeys.of(msisdn).outbox
        out: list[Event] = []
        end = f"({before}" if before else "+"
        scanned = 0
        while len(out) < limit and scanned < scan_max:
            batch = await self._cmd("XREVRANGE", key, end, "-", "COUNT", min(1000, 50 + 4 * limit))
            if not batch:
                break
            for entry_id, flat in batch:
                f = expand({_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)})
                if f.get("sub") == msisdn:
                    out.append(Event(_s(entry_id), f))
                    if len(out) >= limit:
                        break
            scanned += len(batch)
            end = f"({_s(batch[-1][0])}"
        return out


#: What the Redis client raises; the store wraps each (see _wrapped).
_DRIVER_ERRORS: Final = (RedisClientError, ConnectionLost, OSError, TimeoutError)


def _wrapped(exc: BaseException) -> StoreError:
    """A driver error as the store's: a reply error by its meaning, else unavailable."""
    if isinstance(exc, ReplyError):
        return _wrap_reply_error(exc)
    return StoreUnavailable(f"redis: {exc or type(exc).__name__}")


def _wrap_reply_error(exc: ReplyError) -> StoreError:
    msg = str(exc)
    if msg.startswith(_UNAVAILABLE_REPLIES):
        return StoreUnavailable(f"redis: {msg}")
    return StoreError(f"redis: {msg}")


def _digest(packed: bytes | str) -> str:
    return format(zlib.crc32(packed if isinstance(packed, bytes) else packed.encode()), "08x")


def _pack_buckets(buckets: Sequence[UnitBucket]) -> bytes | str:
    if not buckets:
        return ""
    packed: bytes = msgpack.packb(
        [
            {"id": b.id, "svc": b.service, "n": b.units, "p": b.priority, "x": b.expires_at}
            for b in buckets
        ],
        use_bin_type=False,
    )
    return packed
