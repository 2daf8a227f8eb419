"""Redis Cluster: the hot-path client, URLs, and one factory for every component.

The keys of a subscriber carry the hash tag of its bucket (``{b<N>}``, :mod:`ocs.store.keys`),
so every script touches one slot and runs unchanged on a Redis Cluster. :class:`ClusterRedis`
is the hot-path client for one: it keeps the auto-pipelining of :class:`PipelinedRedis` (one
write per loop turn) per master, and routes each command by the slot of its key:

* the slot map comes from ``CLUSTER SLOTS`` (Redis 6.2 and 7.x), asked of any node known;
* one :class:`PipelinedRedis` (one connection) per master; a command goes to the master of
  its key's slot (CRC16 of the hash tag, cluster spec "Key distribution model");
* ``MOVED slot host:port``: the slot moved for good; the map is refreshed and the command
  resent there; ``ASK slot host:port``: the slot is being migrated and this key is already on
  the target: ``ASKING`` then the command, once, on the target's connection (same write);
* ``TRYAGAIN``: a script whose keys are split between the two nodes of a slot being migrated
  (the idempotency key of a new request never exists, so this is the common case during a
  reshard): retried with a short back-off until the call's deadline;
* a lost connection (a master died) fails the calls on it with :class:`ConnectionLost`, as
  on one Redis (the store answers store-unavailable), and refreshes the map in the background
  so that calls go to the promoted replica as soon as the cluster has promoted it;
* scripts are loaded on every master (``SCRIPT LOAD`` is sent to all), and again on NOSCRIPT
  (a promoted replica's script cache may be empty).

Off the hot path, redis-py's ``RedisCluster`` is used (:func:`admin_client`); the URL decides
which client every component gets (:func:`hot_client`, :func:`admin_client`).

URLs: ``redis://host:port/db`` (one Redis), ``redis+cluster://[user:pass@]host:port,
host:port/`` (a cluster: any of its nodes; the others are learned from the slot map) or
``redis+sentinel://[user:pass@]host:port,host:port/mastername[/db]`` (one master watched by
sentinels: :mod:`ocs.store.sentinel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ocs.lifecycle import AsyncConnection
from ocs.store.redis_client import (
    _DEFAULT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Arg,
    ClientClosed,
    ConnectionLost,
    PipelinedRedis,
    RedisUnavailable,
    ReplyError,
    Script,
    Timeout,
    _decode,
    _drop_result,
    _pack,
)
from ocs.store.sentinel import (
    SentinelRedis,
    is_sentinel_url,
    parse_hosts,
    sentinel_admin_client,
)
from ocs.tasks import SingleFlight

__all__ = [
    "CLUSTER_SCHEME",
    "SLOTS",
    "AdminRedis",
    "ClusterRedis",
    "HotRedis",
    "RedisAddress",
    "admin_client",
    "crc16",
    "hot_client",
    "is_cluster_url",
    "key_slot",
    "parse_cluster_url",
]

log = logging.getLogger("ocs.store.cluster")

#: Hash slots of a Redis Cluster.
SLOTS: Final = 16384
CLUSTER_SCHEME: Final = "redis+cluster"
#: Redirections (MOVED/ASK) followed for one call before giving up.
_MAX_REDIRECTS: Final = 5
#: TRYAGAIN back-off: first delay and cap, seconds.
_TRYAGAIN_FIRST: Final = 0.002
_TRYAGAIN_MAX: Final = 0.05
#: A map refresh is not started again sooner than this after the last one (seconds).
_REFRESH_INTERVAL: Final = 0.05

# Commands whose argument 1 is not a key (sent to one master, or to all: _BROADCAST).
_KEYLESS: Final = frozenset(
    b"PING ECHO INFO TIME CLUSTER CONFIG CLIENT COMMAND DBSIZE WAIT LASTSAVE BGREWRITEAOF "
    b"SLOWLOG LATENCY MEMORY HELLO READONLY READWRITE ASKING SCRIPT FUNCTION FLUSHALL "
    b"FLUSHDB".split()
)
_BROADCAST: Final = frozenset((b"SCRIPT", b"FUNCTION", b"FLUSHALL", b"FLUSHDB", b"PING"))
_EVAL: Final = frozenset((b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL"))
# Commands whose keys come after a STREAMS argument.
_STREAMS_LAST: Final = frozenset((b"XREAD", b"XREADGROUP"))


# -- slots ---------------------------------------------------------------------------------


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE: Final = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum of the cluster's key distribution model."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


_slot_cache: dict[bytes, int] = {}


def key_slot(key: str | bytes) -> int:
    """The hash slot of a key: CRC16 of its hash tag (the text between the first ``{`` and
    the next ``}``, if not empty), else of the whole key, mod 16384."""
    k = key.encode() if isinstance(key, str) else key
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    slot = _slot_cache.get(k)
    if slot is None:
        slot = crc16(k) % SLOTS
        if len(_slot_cache) >= 65536:
            _slot_cache.clear()
        _slot_cache[k] = slot
    return slot


# -- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """What a Redis URL names: nodes (one for a plain Redis), credentials, database."""

    nodes: tuple[tuple[str, int], ...]
    cluster: bool
    username: str | None = None
    password: str | None = None
    db: int = 0


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] == CLUSTER_SCHEME


def parse_cluster_url(url: str) -> RedisAddress:
    """``redis+cluster://[[user]:password@]host:port[,host:port...][/]``; other schemes are
    left to :meth:`PipelinedRedis.from_url` (raises ValueError naming what is wrong)."""
    scheme, sep, rest = url.partition("://")
    if scheme != CLUSTER_SCHEME or not sep:
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0: {url!r}")
    username, password, nodes = parse_hosts(netloc, "node", url)
    return RedisAddress(nodes, True, username, password)


# -- the hot-path cluster client ---------------------------------------------------------


class ClusterRedis(AsyncConnection):
    """An auto-pipelining Redis Cluster client: one :class:`PipelinedRedis` per master.

    It offers what the store needs of :class:`PipelinedRedis` (``execute``, ``evalsha``,
    ``send_nowait``, ``register_script``, ``connect``/``close``, ``writes``), and
    :meth:`masters` for per-node commands (INFO, CONFIG, SCAN). Keyless commands go to one
    master, except SCRIPT, FLUSHALL/FLUSHDB and PING, which go to all (PING answers PONG only
    when every master does). SCAN walks the masters one after the other (the cursor carries
    the master's index); a change of the map in the middle of a scan may skip or repeat keys.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, int]],
        *,
        username: str | None = None,
        password: str | None = None,
        decode: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        if not nodes:
            raise ValueError("a Redis Cluster needs at least one node address")
        self.startup_nodes = tuple(nodes)
        self.decode = decode
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._auth = (username, password)
        self._nodes: dict[tuple[str, int], PipelinedRedis] = {}
        self._slots: list[PipelinedRedis | None] = [None] * SLOTS
        self._masters: list[PipelinedRedis] = []
        #: The slot map's refresh: one at a time, however many callers want it.
        self._refreshing = SingleFlight(
            self._refresh, on_error=lambda exc: log.debug("slot map refresh failed: %s", exc)
        )
        self._refreshed_at = -math.inf
        self._retired_writes = 0
        self._closed = False
        #: Map refreshes so far, and redirections followed (test and benchmark figures).
        self.refreshes = 0
        self.redirects = 0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ClusterRedis:
        address = parse_cluster_url(url)
        return cls(address.nodes, username=address.username, password=address.password, **kwargs)

    def __repr__(self) -> str:
        where = ",".join(f"{n.host}:{n.port}" for n in self._masters) or "no map yet"
        return f"<ClusterRedis masters={where}>"

    @property
    def where(self) -> str:
        """The cluster's startup nodes, for messages."""
        return "cluster " + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    @property
    def writes(self) -> int:
        """Socket writes so far, over every node (a test and benchmark figure)."""
        return self._retired_writes + sum(n.writes for n in self._nodes.values())

    @property
    def connected(self) -> bool:
        return bool(self._masters) and all(m.connected for m in self._masters)

    def masters(self) -> list[PipelinedRedis]:
        """The client of every master, in slot order (as of the last map)."""
        return list(self._masters)

    def node_for(self, key: str | bytes) -> PipelinedRedis | None:
        """The client of the master now serving ``key``'s slot (None: none known)."""
        return self._slots[key_slot(key)]

    # Lifecycle

    async def connect(self) -> None:
        """Learn the slot map and connect to every master.

        Raises:
            RedisUnavailable: no node answered CLUSTER SLOTS, or a master cannot be reached.
        """
        self._closed = False
        await self.refresh()
        await asyncio.gather(*(m.connect() for m in self._masters))

    async def close(self) -> None:
        self._closed = True
        await self._refreshing.stop()
        nodes = list(self._nodes.values())
        await asyncio.gather(*(n.close() for n in nodes))

    # The slot map

    def _node(self, host: str, port: int) -> PipelinedRedis:
        node = self._nodes.get((host, port))
        if node is None:
            username, password = self._auth
            node = PipelinedRedis(
                host,
                port,
                username=username,
                password=password,
                timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                wait_replicas=self.wait_replicas,
                wait_timeout_ms=self.wait_timeout_ms,
            )
            self._nodes[(host, port)] = node
        return node

    async def refresh(self) -> None:
        """Ask the cluster for its slot map now (concurrent callers share one request)."""
        if self._closed:
            raise ClientClosed("the Redis client is closed")
        await self._refreshing()

    def _refresh_soon(self) -> None:
        """Refresh the map in the background (after a MOVED, a lost master, CLUSTERDOWN)."""
        if self._closed or self._refreshing.running:
            return
        if asyncio.get_running_loop().time() - self._refreshed_at < _REFRESH_INTERVAL:
            return
        self._refreshing.start()

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self._refreshed_at = loop.time()
        candidates = [(m.host, m.port) for m in self._masters]
        candidates += [a for a in self._nodes if a not in candidates]
        candidates += [a for a in self.startup_nodes if a not in candidates]
        errors = []
        for host, port in candidates:
            node = self._node(host, port)
            try:
                reply = await node.execute("CLUSTER", "SLOTS", timeout=self.connect_timeout)
            except (ConnectionLost, ReplyError, ClientClosed) as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            if reply:
                self._install(reply, host)
                self.refreshes += 1
                return
            errors.append(f"{host}:{port}: no slots assigned")
        raise RedisUnavailable("no Redis Cluster node gave a slot map: " + "; ".join(errors))

    def _install(self, reply: list[Any], asked: str) -> None:
        slots: list[PipelinedRedis | None] = [None] * SLOTS
        masters: list[PipelinedRedis] = []
        for start, end, master, *_replicas in sorted(reply, key=lambda r: int(r[0])):
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            node = self._node(host or asked, int(master[1]))
            if node not in masters:
                masters.append(node)
            slots[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
        self._slots = slots
        self._masters = masters
        # Connections to nodes that serve no slot any more (a replica now, or gone) are
        # closed; a call still waiting on one is answered by it or fails and routes again.
        for address, node in list(self._nodes.items()):
            if node not in masters:
                del self._nodes[address]
                self._retired_writes += node.writes
                task = asyncio.get_running_loop().create_task(node.close())
                task.add_done_callback(_drop_result)

    def _route(self, key: str | bytes | None) -> PipelinedRedis:
        if key is None:
            if not self._masters:
                raise RedisUnavailable("no Redis Cluster master known")
            return self._masters[0]
        node = self._slots[key_slot(key)]
        if node is None:
            self._refresh_soon()
            raise RedisUnavailable(f"no Redis Cluster master serves slot {key_slot(key)}")
        return node

    # Commands

    async def execute(
        self,
        *args: Arg,
        decode: bool | None = None,
        timeout: Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 (one watchdog per connection)
    ) -> Any:
        """Run one command on the master of its key (see the class for keyless commands)."""
        if not self._masters:
            await self.refresh()
        name = _name(args[0])
        if name == b"SCAN":
            return await self._scan(args, decode, timeout)
        if name in _BROADCAST:
            replies = await asyncio.gather(
                *(m.execute(*args, decode=decode, timeout=timeout) for m in self._masters)
            )
            if name == b"PING":
                pong = all(_name(r) == b"PONG" for r in replies)
                return replies[0] if pong else next(r for r in replies if _name(r) != b"PONG")
            return replies[0]
        return await self._call(_pack(args), decode, timeout, _key_of(name, args))

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str | bytes],
        args: Sequence[Arg],
        *,
        decode: bool | None = None,
        timeout: Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 (one watchdog per connection)
    ) -> Any:
        packed = _pack(("EVALSHA", sha, len(keys), *keys, *args))
        return await self._call(packed, decode, timeout, keys[0] if keys else None)

    def send_nowait(self, *args: Arg) -> bool:
        """Queue a command whose answer nobody waits for on its key's master (see
        :meth:`PipelinedRedis.send_nowait`); False if that master is not connected."""
        try:
            node = self._route(_key_of(_name(args[0]), args))
        except RedisUnavailable:
            return False
        return node.send_nowait(*args)

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    def _submit(
        self, packed: bytes, route: str | bytes | None = None
    ) -> asyncio.Future[Any] | None:
        """None: a script call on a cluster goes through :meth:`_call`, which follows
        redirections (MOVED, ASK) and retries TRYAGAIN."""
        return None

    def set_wait(self, replicas: int, timeout_ms: int) -> None:
        """See :meth:`PipelinedRedis.set_wait`; applies to every master, now and later."""
        self.wait_replicas = replicas
        self.wait_timeout_ms = timeout_ms
        for node in self._nodes.values():
            node.set_wait(replicas, timeout_ms)

    async def _scan(self, args: Sequence[Arg], decode: bool | None, timeout: Timeout) -> Any:  # noqa: ASYNC109
        n = len(self._masters)
        cursor = int(args[1])
        index, node_cursor = cursor % n, cursor // n
        nxt, found = await self._masters[index].execute(
            "SCAN", node_cursor, *args[2:], decode=decode, timeout=timeout
        )
        nxt = int(nxt)
        combined = nxt * n + index if nxt else (index + 1 if index + 1 < n else 0)
        return [str(combined) if decode or (decode is None and self.decode) else
                str(combined).encode(), found]  # fmt: skip

    async def _call(
        self,
        packed: bytes,
        decode: bool | None,
        timeout: Timeout,  # noqa: ASYNC109 (one watchdog per connection)
        route: str | bytes | None = None,
        *,
        durable: bool = False,
    ) -> Any:
        if self._closed:
            raise ClientClosed("the Redis client is closed")
        if not self._masters:
            await self.refresh()
        if decode is None:
            decode = self.decode
        node = self._route(route)
        loop = asyncio.get_running_loop()
        seconds = self.timeout if timeout is _DEFAULT_TIMEOUT else timeout
        give_up = math.inf if seconds is None else loop.time() + seconds
        asking = False
        redirects = 0
        delay = _TRYAGAIN_FIRST
        while True:
            left: Timeout = timeout if give_up == math.inf else max(give_up - loop.time(), 0.001)
            try:
                if asking:
                    # ASKING and the command leave in the same write on the target's
                    # connection: _call sends synchronously when the connection is open.
                    conn = await node._connection()
                    conn.send(_pack((b"ASKING",)), math.inf).add_done_callback(_drop_result)
                reply = await node._call(packed, False, left, durable=durable)
                return _decode(reply) if decode else reply
            except ReplyError as exc:
                kind = _name(exc.message.split(" ", 1)[0])
                if kind in (b"MOVED", b"ASK") and redirects < _MAX_REDIRECTS:
                    _kind, slot, address = exc.message.split(" ", 2)
                    host, _, port = address.rpartition(":")
                    target = self._node(host or node.host, int(port))
                    self.redirects += 1
                    redirects += 1
                    asking = kind == b"ASK"
                    if not asking:
                        self._slots[int(slot)] = target
                        if target not in self._masters:
                            self._masters.append(target)
                        self._refresh_soon()
                    node = target
                    continue
                if kind == b"TRYAGAIN" and loop.time() + delay < give_up:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _TRYAGAIN_MAX)
                    asking = False
                    node = self._route(route)
                    continue
                if kind in (b"CLUSTERDOWN", b"MASTERDOWN", b"READONLY"):
                    self._refresh_soon()
                raise
            except ClientClosed:
                # The node left the map (now a replica) while this call was on its way.
                if self._closed or redirects >= _MAX_REDIRECTS:
                    raise
                redirects += 1
                asking = False
                node = self._route(route)
            except ConnectionLost:
                self._refresh_soon()
                raise


def _name(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg.upper()
    return str(arg).upper().encode()


def _key_of(name: bytes, args: Sequence[Arg]) -> str | bytes | None:
    """The key a command is routed by (None: any master)."""
    if name in _EVAL:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None  # type: ignore[return-value]
    if name in _KEYLESS or len(args) < 2:
        return None
    if name in _STREAMS_LAST:
        # XREAD [COUNT n] [BLOCK ms] STREAMS key... id...: the keys follow STREAMS.
        for i, arg in enumerate(args):
            if _name(arg) == b"STREAMS" and i + 1 < len(args):
                key = args[i + 1]
                return str(key) if isinstance(key, int) else key
        return None
    key = args[1]
    return str(key) if isinstance(key, int) else key


# -- one factory for every component --------------------------------------------------

#: The hot-path client: one Redis or a cluster.
HotRedis: TypeAlias = PipelinedRedis | ClusterRedis
#: redis-py, for everything off the hot path (streams, consumer groups, admin).
AdminRedis: TypeAlias = "redis.asyncio.Redis | RedisCluster"


def hot_client(url: str, **kwargs: Any) -> HotRedis:
    """The auto-pipelining client for ``url`` (a cluster for ``redis+cluster://``, the
    master the sentinels name for ``redis+sentinel://``)."""
    if is_cluster_url(url):
        return ClusterRedis.from_url(url, **kwargs)
    if is_sentinel_url(url):
        return SentinelRedis.from_url(url, **kwargs)
    return PipelinedRedis.from_url(url, **kwargs)


def admin_client(url: str, **kwargs: Any) -> AdminRedis:
    """redis-py's client for ``url``: ``RedisCluster`` for ``redis+cluster://`` (it follows
    MOVED and ASK itself), the sentinels' master for ``redis+sentinel://``, else ``Redis``.
    Keyword arguments go to redis-py."""
    if is_sentinel_url(url):
        return sentinel_admin_client(url, **kwargs)
    if is_cluster_url(url):
        address = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in address.nodes],
            username=address.username,
            password=address.password,
            **kwargs,
        )
    return redis.asyncio.Redis.from_url(url, **kwargs)


async def broadcast(client: AdminRedis, *args: Any) -> list[Any]:
    """Run a command on every master (one Redis: on it), e.g. FLUSHALL, CONFIG SET."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # the node list is empty until the first command
        nodes = client.get_primaries()
        return [await client.execute_command(*args, target_nodes=n) for n in nodes]
    return [await client.execute_command(*args)]  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def admin(url: str, **kwargs: Any) -> Any:
    """``async with admin(url) as r:`` a redis-py client that is closed afterwards."""
    client = admin_client(url, **kwargs)
    try:
        yield client
    finally:
        await client.aclose()
