"""Durability modes: what an acknowledged balance change survives (docs/operations.md).

* ``local``: the master's AOF, fsynced every second. A crash of the machine loses up to a
  second of acknowledged changes; a failover to a replica loses what had not reached it
  (Redis replication is asynchronous), typically milliseconds of writes.
* ``replica``: every script call is followed, in the same write, by ``WAIT 1 <timeout>``
  (one per write and node, not per request), and the request is answered only when a replica
  has the change. A single failure (the master, or its machine) loses nothing acknowledged:
  the replica that is promoted is the one that has it (Redis Cluster and Sentinel promote the
  replica with the largest replication offset). When no replica acknowledges in time the
  request is answered store-unavailable; a retry (same request key) replays the answer.
* ``fsync``: ``appendfsync always`` on the masters: a change is on the master's disk before
  the reply, so a crash and restart of the same node loses nothing; a failover to a replica
  still may (use ``replica`` for that).
* ``auto`` (the default): ``replica`` when every master has a connected replica, else
  ``local``: the mode that loses nothing on a single failure whenever replicas exist.
"""

from __future__ import annotations

import logging
from typing import Final

from ocs.store.cluster import ClusterRedis, HotRedis
from ocs.store.errors import StoreError
from ocs.store.redis_client import PipelinedRedis, RedisClientError

__all__ = ["MODES", "apply_durability", "replica_counts"]

log = logging.getLogger("ocs.store")

MODES: Final = ("auto", "local", "replica", "fsync")


def _masters(client: HotRedis) -> list[PipelinedRedis]:
    return client.masters() if isinstance(client, ClusterRedis) else [client]


def _info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value.strip()
    return out


async def replica_counts(client: HotRedis) -> list[int]:
    """Replicas of each master that are online (connected and synchronised)."""
    counts = []
    for node in _masters(client):
        info = _info(await node.execute("INFO", "replication", decode=True))
        # Online: past the initial sync (a replica still loading acknowledges nothing).
        online = sum(
            1 for name, value in info.items()
            if name.startswith("slave") and name[5:].isdigit() and "state=online" in value
        )  # fmt: skip
        counts.append(online)
    return counts


async def apply_durability(client: HotRedis, mode: str, timeout_ms: int) -> str:
    """Set the client (and, for fsync, the masters) up for ``mode``; returns the mode in
    force (``auto`` resolved).

    Raises:
        StoreError: ``fsync`` could not be configured (CONFIG is disabled, say).
    """
    if mode not in MODES:
        raise ValueError(f"durability mode {mode!r}: one of {', '.join(MODES)}")
    try:
        counts = await replica_counts(client)
        if mode == "auto":
            mode = "replica" if counts and min(counts) >= 1 else "local"
        if mode == "replica":
            if not counts or min(counts) < 1:
                log.warning(
                    "durability replica: a master has no connected replica: writes to it are "
                    "answered store-unavailable until one is connected"
                )
            client.set_wait(1, timeout_ms)
        else:
            client.set_wait(0, 0)
        if mode == "fsync":
            for node in _masters(client):
                await node.execute("CONFIG", "SET", "appendonly", "yes")
                await node.execute("CONFIG", "SET", "appendfsync", "always")
    except RedisClientError as exc:
        raise StoreError(f"durability {mode}: {exc}") from exc
    return mode
