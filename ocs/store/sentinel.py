"""Redis Sentinel: the hot-path client of a single master that sentinels watch, and its URL.

A Sentinel deployment is one master with replicas, and three (or more) ``redis-sentinel``
processes that agree when the master is down and promote a replica (docs/operations.md,
Failover). :class:`SentinelRedis` is :class:`PipelinedRedis` (one auto-pipelined
connection, one write per loop turn) whose address is not fixed:

* at every (re)connect it asks every sentinel ``SENTINEL GET-MASTER-ADDR-BY-NAME`` at once and
  takes the address most of them give (the first sentinel's on a tie), connects, and checks
  with ``ROLE`` that the node is a master (a sentinel may not know yet; a restarted old
  master is a master until the sentinels make it a replica): if not, the connect fails;
* while the master is down and no replica is promoted yet, every call fails at once with
  :class:`RedisUnavailable` (the store answers store-unavailable), exactly as for a lost
  single Redis, and the next call asks the sentinels again;
* a ``READONLY`` (or ``MASTERDOWN``) reply means the node was demoted under us: the
  connection is dropped (every call on it fails with :class:`ConnectionLost`) so that the
  next call asks the sentinels;
* while connected, the sentinels are asked every second (``watch_interval``) whether they
  still name the connected node: after a failover that left the old master running (a
  ``SENTINEL FAILOVER``, a partition) the sentinels demote it only when they next poll it, up
  to ~10 s later, and writes it takes meanwhile would be lost.

Off the hot path, redis-py's asyncio ``Sentinel`` is used (:func:`sentinel_admin_client`,
reached through :func:`ocs.store.cluster.admin_client`), with the same watch of the master.

URL: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/mastername[/db]``, the
credentials those of the master (and replicas); ``?sentinel_password=...`` (and
``sentinel_username``) when the sentinels themselves require AUTH.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import redis.asyncio
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from ocs.store.redis_client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    ConnectionLost,
    PipelinedRedis,
    RedisUnavailable,
    ReplyError,
    Timeout,
    _Connection,
    _pack,
)

__all__ = [
    "SENTINEL_SCHEME",
    "WATCH_INTERVAL",
    "SentinelAddress",
    "SentinelRedis",
    "is_sentinel_url",
    "parse_hosts",
    "parse_sentinel_url",
    "sentinel_admin_client",
]

SENTINEL_SCHEME: Final = "redis+sentinel"
#: Replies after which the connected node is no longer the master: ask the sentinels again.
_DEMOTED: Final = ("READONLY", "MASTERDOWN")
#: Seconds between two checks that the sentinels still name the connected master.
WATCH_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def parse_hosts(
    netloc: str, what: str, url: str
) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """``[[user]:password@]host:port[,host:port...]`` of a cluster or Sentinel ``url``: the
    user name, the password and the addresses (``what``: what the ValueError calls one)."""
    auth, _, hosts = netloc.rpartition("@")
    username = password = None
    if auth:
        user, colon, pw = auth.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"bad {what} {item!r} in {url!r} (host:port)")
        nodes.append((host.strip("[]"), int(port)))
    return username, password, tuple(nodes)


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0] == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelAddress:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/mastername[/db]``
    (query ``sentinel_password``, ``sentinel_username``); ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME or not sep:
        raise ValueError(f"not a Redis Sentinel URL: {url!r}")
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    netloc, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError(f"no master name in Redis Sentinel URL {url!r} (.../mastername[/db])")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"bad path in Redis Sentinel URL {url!r} (/mastername[/db])")
    username, password, sentinels = parse_hosts(netloc, "sentinel", url)
    return SentinelAddress(
        sentinels,
        unquote(parts[0]),
        int(parts[1]) if len(parts) == 2 else 0,
        username,
        password,
        query.get("sentinel_username") or None,
        query.get("sentinel_password"),
    )


class SentinelRedis(PipelinedRedis):
    """:class:`PipelinedRedis` to the master that the sentinels name (see the module).

    Args:
        address: the sentinels, the master's name, database and credentials.
        watch_interval: seconds between two checks, while connected, that the sentinels
            still name the connected node (0: no checks).
        kwargs: as for :class:`PipelinedRedis` (``timeout``, ``connect_timeout``,
            ``wait_replicas``...); ``connect_timeout`` also bounds each sentinel's answer.
    """

    def __init__(
        self, address: SentinelAddress, *, watch_interval: float = WATCH_INTERVAL, **kwargs: Any
    ) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        super().__init__(
            "",
            0,
            db=address.db,
            username=address.username,
            password=address.password,
            **kwargs,
        )
        if not address.sentinels:
            raise ValueError("a Sentinel deployment needs at least one sentinel address")
        self.address = address
        self._sentinels = [
            PipelinedRedis(
                host,
                port,
                username=address.sentinel_username,
                password=address.sentinel_password,
                timeout=self.connect_timeout,
                connect_timeout=self.connect_timeout,
            )
            for host, port in address.sentinels
        ]
        #: Times the sentinels were asked, and times the master's address changed (figures
        #: for tests and the chaos benchmark).
        self.discoveries = 0
        self.master_changes = 0
        self.watch_interval = watch_interval
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SentinelRedis:
        return cls(parse_sentinel_url(url), **kwargs)

    @property
    def where(self) -> str:
        at = f" at {self.host}:{self.port}" if self.port else ""
        return f"Sentinel master {self.address.master!r}{at}"

    async def connect(self) -> None:
        """Ask the sentinels and connect to the master now (see :meth:`PipelinedRedis.connect`).

        Raises:
            RedisUnavailable: no sentinel named a master that can be reached.
        """
        # Reopened after a close(); a sentinel that is down now is tried again at each ask.
        await asyncio.gather(*(s.connect() for s in self._sentinels), return_exceptions=True)
        await super().connect()

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait([watcher])
        await super().close()
        await asyncio.gather(*(s.close() for s in self._sentinels))

    async def master_address(self) -> tuple[str, int]:
        """Ask every sentinel at once for the master's address; the one most give wins.

        Raises:
            RedisUnavailable: no sentinel answered with an address.
        """
        self.discoveries += 1
        name = self.address.master
        replies = await asyncio.gather(
            *(s.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name, decode=True)
              for s in self._sentinels),
            return_exceptions=True,
        )  # fmt: skip
        votes: Counter[tuple[str, int]] = Counter()
        errors = []
        for (host, port), reply in zip(self.address.sentinels, replies, strict=True):
            if isinstance(reply, list) and len(reply) == 2:
                votes[(str(reply[0]), int(reply[1]))] += 1
            elif isinstance(reply, BaseException):
                if not isinstance(reply, Exception):
                    raise reply  # a cancellation
                errors.append(f"{host}:{port}: {reply}")
            else:
                errors.append(f"{host}:{port}: does not know {name!r}")
        if not votes:
            raise RedisUnavailable(
                f"no sentinel gave the address of master {name!r}: " + "; ".join(errors)
            )
        return votes.most_common(1)[0][0]

    async def _open(self) -> _Connection:
        address = await self.master_address()
        if self.port and address != (self.host, self.port):
            self.master_changes += 1
        self.host, self.port = address
        conn = await super()._open()
        if self._watcher is None and self.watch_interval > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return conn

    async def _watch(self) -> None:
        """While connected, ask the sentinels every ``watch_interval`` whether the node is
        still the master. After a failover the sentinels turn the old master into a replica
        only when they next look at it (up to ~10 s, Sentinel's INFO period); until then it
        takes writes that the promoted master never sees. A switch seen here drops the
        connection, so that the next call goes to the new master."""
        while True:
            await asyncio.sleep(self.watch_interval)
            if not self.connected:
                continue
            try:
                address = await self.master_address()
            except RedisUnavailable:
                continue
            if address != (self.host, self.port):
                self._demoted(f"is no longer the master (the sentinels name {address[0]}:"
                              f"{address[1]})")  # fmt: skip

    async def _handshake(self, conn: _Connection) -> None:
        await super()._handshake(conn)
        role = await conn.send(_pack(("ROLE",)), math.inf)
        kind = role[0].decode() if role and isinstance(role[0], bytes) else str(role[:1])
        if kind != "master":
            raise RedisUnavailable(
                f"{self.host}:{self.port}, named by the sentinels as master "
                f"{self.address.master!r}, is a {kind}"
            )

    async def _call(
        self,
        packed: bytes,
        decode: bool | None,
        timeout: Timeout,  # noqa: ASYNC109 (one watchdog per connection)
        route: str | bytes | None = None,
        *,
        durable: bool = False,
    ) -> Any:
        try:
            return await super()._call(packed, decode, timeout, route, durable=durable)
        except ReplyError as exc:
            if exc.message.startswith(_DEMOTED):
                self._demoted(f"answered {exc.message.split(' ', 1)[0]}")
            raise

    def _submit(
        self, packed: bytes, route: str | bytes | None = None
    ) -> asyncio.Future[Any] | None:
        # A script call's fast path (no _call): its reply is watched for a demotion the same way.
        fut = super()._submit(packed, route)
        if fut is not None:
            fut.add_done_callback(self._watch_reply)
        return fut

    def _watch_reply(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, ReplyError) and exc.message.startswith(_DEMOTED):
            self._demoted(f"answered {exc.message.split(' ', 1)[0]}")

    def _demoted(self, reason: str) -> None:
        """The node stopped being the master: drop its connection (the calls still on it
        fail) so that the next call asks the sentinels."""
        conn = self._conn
        if conn is not None and not conn.closed:
            text = f"{self.where} {reason}: asking the sentinels again"
            conn._drop(lambda _deadline: ConnectionLost(text))


class _SentinelMaster(redis.asyncio.Redis):
    """redis-py's client of the master, which also closes the sentinels' connections, and
    asks the sentinels every ``watch_interval`` whether they still name the master its
    connections go to, as :class:`SentinelRedis` does: redis-py asks only when it opens a
    connection, so after a failover that left the old master running its pooled connections
    would keep writing there (stream acknowledgements, trims) until the sentinels demote it,
    up to ~10 s later. A switch seen drops every connection of the pool (a command on one
    fails with a connection error, as when the master dies); the next asks the sentinels."""

    _ocs_sentinel: Sentinel
    _ocs_watch_interval: float = WATCH_INTERVAL
    _ocs_watcher: asyncio.Task[None] | None = None
    #: Times a switch of master was seen by the watch (a figure for tests).
    master_changes: int = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self._ocs_watcher is None and self._ocs_watch_interval > 0:
            self._ocs_watcher = asyncio.get_running_loop().create_task(self._ocs_watch())
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def _ocs_watch(self) -> None:
        pool = self.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        while True:
            await asyncio.sleep(self._ocs_watch_interval)
            before = pool.master_address
            if before is None:  # not connected yet: the first connection asks
                continue
            try:
                # Asks the sentinels and, on a switch, disconnects the idle connections.
                now = await pool.get_master_address()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                continue  # no sentinel answered: the connections' own errors will tell
            if now != before:
                self.master_changes += 1
                await pool.disconnect(inuse_connections=True)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        watcher, self._ocs_watcher = self._ocs_watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait([watcher])
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self._ocs_sentinel.aclose()


def sentinel_admin_client(
    url: str, *, watch_interval: float = WATCH_INTERVAL, **kwargs: Any
) -> redis.asyncio.Redis:
    """redis-py's client of the master named by a ``redis+sentinel://`` URL (it asks the
    sentinels at every new connection and retries on READONLY, and every ``watch_interval``
    seconds once connected, 0: never; see :class:`_SentinelMaster`); ``aclose()`` closes the
    sentinels' connections too. Other keyword arguments go to redis-py."""
    address = parse_sentinel_url(url)
    sentinel_kwargs = {}
    if address.sentinel_password is not None:
        sentinel_kwargs["password"] = address.sentinel_password
    if address.sentinel_username is not None:
        sentinel_kwargs["username"] = address.sentinel_username
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs=sentinel_kwargs or None,
        username=address.username,
        password=address.password,
        db=address.db,
    )
    client: _SentinelMaster = sentinel.master_for(
        address.master, redis_class=_SentinelMaster, **kwargs
    )
    client._ocs_sentinel = sentinel
    client._ocs_watch_interval = watch_interval
    return client
