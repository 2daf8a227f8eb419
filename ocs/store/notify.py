"""The notification streams and what their consumers keep: consumer groups, leases, dead
letters, and the provisioning records (the HLR's barring as the OCS knows it).

The balance scripts append barring changes and threshold crossings to the bucket's
notification stream (``ocs:{b<N>}:ntf``) in the same step as the change. Consumers (the
provisioning worker, the webhooks) read all 64 streams through a Redis consumer group:
at least once, with the unacknowledged entries claimable after a crash. One process at a time
consumes a group (a lease), so one subscriber's commands are handled in order.

Not a hot path: this uses redis-py (its own connections, since a blocking XREADGROUP would
hold up the charging client's pipeline). On a Redis Cluster (redis-py's ``RedisCluster``) the
64 streams live in 64 slots spread over the masters, and a command may name the keys of one
slot only: the streams are then read one per bucket, polling every ``CLUSTER_POLL`` while
they are idle instead of blocking. redis-py follows the buckets when slots move (MOVED, ASK).
redis-py 8.1's cluster pipelines swallow a cancellation that lands while they wait (the task
carries on as if nothing happened), and so, more rarely, does any redis-py call on Python
3.11: its socket reads and writes go through ``asyncio.wait_for``, which returns the result
and drops a cancellation that lands as the operation completes (CPython gh-86296, fixed in
3.12). The consumers' loops therefore check ``Task.cancelling()`` themselves
(:func:`honour_cancellation`). Many concurrent commands of one task broke its
connections (a retry closes every connection of the client), so on a cluster the commands of
a batch are sent one after the other (:meth:`NotifyStore._batch`; 64 round trips on a LAN are
a few milliseconds, off the hot path).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from ocs.constants import BUCKET_COUNT
from ocs.store import keys as K
from ocs.store.cluster import AdminRedis, admin_client
from ocs.store.errors import StoreUnavailable
from ocs.store.events import expand

#: How many commands each subscriber's history keeps.
HISTORY_LENGTH: Final = 50
#: Dead letters kept (the oldest go first).
DEAD_LETTER_MAX: Final = 100_000
#: Commands awaiting a callback are forgotten after this long (seconds).
PENDING_TTL: Final = 7 * 86_400
#: On a cluster: seconds between reads of idle streams (a blocking read cannot span slots).
CLUSTER_POLL: Final = 0.1

# Extend a lease only if this process holds it (compare and set, in one step).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
# Read a pending command and forget it, in one step (a callback counts once).
_TAKE = """
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
"""
# A line of a subscriber's command history and what the OCS knows of the HLR, in one step (the
# two keys share the subscriber's slot): a reader never sees the one without the other.
_RECORD = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #ARGV > 2 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 3))
end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Notification:
    """One entry of a bucket's notification stream."""

    stream: str
    id: str
    fields: Mapping[str, str]

    @property
    def subscriber(self) -> str:
        return self.fields.get("sub", "")

    @property
    def kind(self) -> str:
        return self.fields.get("t", "")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    fields: Mapping[str, str]


async def redis_call(coro: Any) -> Any:
    """Await a redis-py call; its errors leave as StoreUnavailable (docs/architecture.md)."""
    try:
        return await coro
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


def honour_cancellation() -> None:
    """Raise the cancellation a library swallowed (see the module's docstring): call at the
    top of a consumer's loop, which runs only while the task is not being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def group_gone(exc: BaseException) -> bool:
    """Whether a group read failed because the group (or its stream) is no longer there: a
    Redis emptied or replaced under its consumers. NOGROUP on a read; UNBLOCKED for a read
    that was waiting when the stream was deleted (Redis 7). ``ensure_group`` creates it again."""
    cause = exc.__cause__
    return isinstance(cause, ResponseError) and str(cause).startswith(("NOGROUP", "UNBLOCKED"))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NotifyStore:
    """Consumer-side access to the notification streams and the provisioning records."""

    def __init__(self, url: str, *, outbox: bool = False) -> None:
        self.redis: AdminRedis = admin_client(
            url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30
        )
        self.cluster = isinstance(self.redis, RedisCluster)
        #: ``outbox``: read the buckets' outbox streams (every balance change: the billing
        #: consumer) instead of their notification streams.
        key = K.outbox_key if outbox else K.notify_key
        self.streams = [key(b) for b in range(BUCKET_COUNT)]
        self._bucket = {k: b for b, k in enumerate(self.streams)}
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._take = self.redis.register_script(_TAKE)
        self._record = self.redis.register_script(_RECORD)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _do(self, coro: Any) -> Any:
        return await redis_call(coro)

    async def _batch(self, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> Any:
        """Commands (method name, args, kwargs) in one pipeline, or on a cluster concurrently
        (see the module's docstring); the replies in order."""
        if self.cluster:
            return [await self._do(getattr(self.redis, n)(*a, **k)) for n, a, k in calls]
        async with self.redis.pipeline(transaction=False) as p:
            for name, args, kwargs in calls:
                getattr(p, name)(*args, **kwargs)
            return await self._do(p.execute())

    # -- consumer groups ----------------------------------------------------------------------

    async def ensure_group(self, group: str) -> None:
        """Create the group on every stream (from the start of each, so nothing written before
        the first consumer is missed)."""
        for key in self.streams:
            try:
                await self._do(self.redis.xgroup_create(key, group, id="0", mkstream=True))
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, ResponseError) or "BUSYGROUP" not in str(exc):
                    raise

    async def take_lease(self, group: str, me: str, ttl_ms: int) -> bool:
        """Hold (or extend) the lease that makes ``me`` the group's consumer."""
        return bool(await self._do(self._renew(keys=[K.leader_key(group)], args=[me, ttl_ms])))

    async def drop_lease(self, group: str, me: str) -> None:
        await self._do(self._release(keys=[K.leader_key(group)], args=[me]))

    async def claim_all(self, group: str, me: str) -> int:
        """Take over every entry another consumer of the group read and did not acknowledge
        (it died); they are then read again as ``me``'s pending entries, in stream order."""
        n = 0
        for key in self.streams:
            cursor = "0-0"
            while True:
                # (redis-py drops the cursor from a JUSTID reply: take the entries)
                reply = await self._do(self.redis.xautoclaim(key, group, me, 0, cursor, count=1000))
                cursor = reply[0]
                n += len(reply[1])
                if cursor == "0-0":
                    break
        return n

    async def read(
        self,
        group: str,
        me: str,
        *,
        ids: Mapping[str, str] | None,
        count: int,
        block_ms: int | None = None,
    ) -> list[Notification]:
        """New entries for ``me`` (``ids`` None; waiting up to ``block_ms``), or its own
        unacknowledged ones after the given id of each stream; oldest first in each stream."""
        streams: dict[Any, Any] = dict.fromkeys(self.streams, ">") if ids is None else dict(ids)
        if self.cluster:
            reply = await self._each_stream(
                streams, block_ms if ids is None else None, "xreadgroup", group, me, count=count
            )
        else:
            reply = await self._do(
                self.redis.xreadgroup(
                    group, me, streams, count=count, block=block_ms if ids is None else None
                )
            )
        out = []
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                # (a pending entry trimmed away reads as empty: nothing to do but ack it)
                out.append(Notification(stream, entry_id, expand(fields or {})))
        return out

    async def ack(self, group: str, note: Notification) -> None:
        await self._do(self.redis.xack(note.stream, group, note.id))

    async def ack_many(self, group: str, notes: Sequence[Notification]) -> None:
        """Acknowledge a batch (one XACK per stream, in one round trip)."""
        by_stream: dict[str, list[str]] = {}
        for n in notes:
            by_stream.setdefault(n.stream, []).append(n.id)
        # (no cluster pipeline: it would swallow a cancellation, see the module's docstring)
        await self._batch([("xack", (s, group, *ids), {}) for s, ids in by_stream.items()])

    def bucket(self, note: Notification) -> int:
        """The bucket whose stream the entry came from (with its id: the entry's identity)."""
        return self._bucket[note.stream]

    async def enqueue(self, msisdn: str, fields: Mapping[str, str]) -> str:
        """Put a notification on the subscriber's stream (a re-send decided by an operator or
        by reconciliation), behind whatever is already queued for it."""
        data: dict[Any, Any] = {"sub": msisdn, "ts": str(_now_ms()), **fields}
        return str(await self._do(self.redis.xadd(K.notify_key(K.bucket_of(msisdn)), data)))

    async def heads(self) -> dict[str, str]:
        """The last entry id of every stream now (where ``follow`` starts)."""
        last = await self._batch([("xrevrange", (k, "+", "-"), {"count": 1}) for k in self.streams])
        return {key: (e[0][0] if e else "0-0") for key, e in zip(self.streams, last, strict=True)}

    async def follow(
        self, ids: dict[str, str], block_ms: int = 1000
    ) -> AsyncIterator[Notification]:
        """Every entry added to the streams after ``ids`` (see ``heads``), as it comes; ``ids``
        is kept up to date, so following again after an error misses nothing. Each process
        reads them all, without a group (e.g. to tell the gateways it serves)."""
        while True:
            honour_cancellation()
            streams: dict[Any, Any] = ids
            if self.cluster:
                reply = await self._each_stream(streams, block_ms, "xread", count=500)
            else:
                reply = await self._do(self.redis.xread(streams, count=500, block=block_ms))
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    ids[stream] = entry_id
                    yield Notification(stream, entry_id, expand(fields))

    async def _each_stream(
        self, streams: Mapping[Any, Any], block_ms: int | None, read: str, *args: Any,
        count: int,
    ) -> list[Any]:  # fmt: skip
        """One read per stream (one slot each); while nothing came and the caller would
        block, wait a poll interval (at most ``block_ms``) and return nothing."""
        kw = {"count": count}
        replies = await self._batch([(read, (*args, {k: i}), kw) for k, i in streams.items()])
        reply = [item for r in replies if r for item in r]
        if not reply and block_ms:
            await asyncio.sleep(min(block_ms / 1000, CLUSTER_POLL))
        return reply

    async def outbox_lengths(self) -> list[int]:
        """XLEN of every bucket's outbox stream, bucket 0 first (for the metrics)."""
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("xlen", (K.outbox_key(b),), {}) for b in range(BUCKET_COUNT)
        ]
        return [int(n) for n in await self._batch(calls)]

    async def dead_letter_count(self) -> int:
        """Entries in the dead-letter stream now."""
        return int(await self._do(self.redis.xlen(K.dead_letter_key())))

    # -- dead letters ------------------------------------------------------------------------

    async def dead_letter(self, fields: Mapping[str, str]) -> str:
        data: dict[Any, Any] = dict(fields)
        return str(
            await self._do(
                self.redis.xadd(K.dead_letter_key(), data, maxlen=DEAD_LETTER_MAX, approximate=True)
            )
        )

    async def dead_letters(self, count: int = 100, before: str | None = None) -> list[DeadLetter]:
        end = f"({before}" if before else "+"
        reply = await self._do(self.redis.xrevrange(K.dead_letter_key(), end, "-", count=count))
        return [DeadLetter(i, f) for i, f in reply]

    async def dead_letter_by_id(self, entry_id: str) -> DeadLetter | None:
        try:
            reply = await self._do(self.redis.xrange(K.dead_letter_key(), entry_id, entry_id))
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, ResponseError):  # not a stream id
                return None
            raise
        return DeadLetter(reply[0][0], reply[0][1]) if reply else None

    async def drop_dead_letter(self, entry_id: str) -> bool:
        return bool(await self._do(self.redis.xdel(K.dead_letter_key(), entry_id)))

    # -- provisioning records ----------------------------------------------------------------

    async def record(
        self, msisdn: str, entry: Mapping[str, Any], *, state: Mapping[str, str] | None = None
    ) -> None:
        """Add a line to the subscriber's command history and update what the OCS knows of
        the HLR's state (``state``: confirmed, confirmed_seq, status, command, ...)."""
        line = json.dumps({"at": _now_ms(), **entry}, separators=(",", ":"))
        fields: list[str] = []
        if state:
            for name, value in {**state, "updated": str(_now_ms())}.items():
                fields += [name, value]
        keys = [K.hlr_history_key(msisdn), K.hlr_state_key(msisdn)]
        await self._do(self._record(keys=keys, args=[line, HISTORY_LENGTH, *fields]))

    async def hlr_state(self, msisdn: str) -> dict[str, str]:
        return dict(await self._do(self.redis.hgetall(K.hlr_state_key(msisdn))))

    async def history(self, msisdn: str, count: int = HISTORY_LENGTH) -> list[dict[str, Any]]:
        lines = await self._do(self.redis.lrange(K.hlr_history_key(msisdn), 0, count - 1))
        return [json.loads(x) for x in lines]

    async def await_callback(self, command_id: str, fields: Mapping[str, str]) -> None:
        """Remember a command the provisioning system accepted and will confirm later."""
        key = K.hlr_command_key(command_id)
        mapping: dict[Any, Any] = dict(fields)
        if self.cluster:  # in order (see record)
            await self._do(self.redis.hset(key, mapping=mapping))
            await self._do(self.redis.expire(key, PENDING_TTL))
            return
        await self._batch([("hset", (key,), {"mapping": mapping}),
                           ("expire", (key, PENDING_TTL), {})])  # fmt: skip

    async def take_callback(self, command_id: str) -> dict[str, str] | None:
        """The command a callback names (and forget it: a callback counts once)."""
        key = K.hlr_command_key(command_id)
        flat = await self._do(self._take(keys=[key]))
        return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)} or None

    async def save_job(self, job_id: str, doc: Mapping[str, Any], ttl_s: int) -> None:
        """Keep a background job's progress or result (JSON) for ``ttl_s`` seconds."""
        text = json.dumps(doc, separators=(",", ":"))
        await self._do(self.redis.set(K.reconcile_job_key(job_id), text, ex=ttl_s))

    async def job(self, job_id: str) -> dict[str, Any] | None:
        raw = await self._do(self.redis.get(K.reconcile_job_key(job_id)))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def pending_count(self, group: str) -> int:
        """Entries read by the group and not yet acknowledged, over every stream."""
        total = 0
        for key in self.streams:
            try:
                info = await self._do(self.redis.xpending(key, group))
            except StoreUnavailable as exc:
                if isinstance(exc.__cause__, ResponseError):  # no group yet
                    return 0
                raise
            total += int(info["pending"])
        return total

    async def lag(self, group: str) -> int:
        """Entries not yet delivered to the group (Redis 7: the group's ``lag``)."""
        total = 0
        for key in self.streams:
            try:
                groups: Sequence[Mapping[str, Any]] = await self._do(self.redis.xinfo_groups(key))
            except StoreUnavailable as exc:
                if isinstance(exc.__cause__, ResponseError):
                    continue
                raise
            for g in groups:
                if g.get("name") == group:
                    total += int(g.get("lag") or 0)
        return total
