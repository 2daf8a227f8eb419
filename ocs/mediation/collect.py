"""Collecting CDR files: sources (a local directory, an FTP server), the order files are taken
in, and the ledger that makes sure no file is charged twice.

A source is polled: its incoming directory is listed, files still being written (``*.tmp``,
:func:`ocs.mediation.naming.is_closed`) are left alone, and, with ``stable_size``, a closed
name must also show the same size in two polls running (for switches that write under the
final name). The files of one switch are taken in the order the switch closed them (TS 32.297
running count, split parts in order: ``CdrFileName.sort_key``); a file is held back while an
earlier file of its switch is not ready yet.

After a file is charged the source moves it to ``done/`` (beside it, ``<name>.rejected`` when
records were rejected). On FTP the file is renamed into ``done/`` on the server. A file that
shows up again after it was charged (the ledger says done), or whose content (SHA-256) is that
of a file charged before under another name, is moved to ``duplicates/`` unchanged, not
charged, and the ledger keeps it as a duplicate of the first.

The ledger is kept in Redis (keys ``ocs:med:{ledger}:*``, one hash tag so its scripts run on a
Redis Cluster too): per file its state (``collected`` -> ``charging`` -> ``done``), switch,
size, times and, once done, its counts; a set of files not yet done, a sorted set of files by
collection time, and running totals. Done entries expire after ``ledger_ttl`` seconds.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import heapq
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import unquote, urlsplit

import aioftp

from ocs.mediation.naming import TEMP_SUFFIX, CdrFileName, parse_name
from ocs.store.cluster import HotRedis
from ocs.store.redis_client import RedisClientError

log = logging.getLogger(__name__)

DONE_DIR: Final = "done"
DUPLICATES_DIR: Final = "duplicates"
REJECTED_SUFFIX: Final = ".rejected"
#: Ledger keys: one hash tag, so the ledger scripts work on a Redis Cluster.
LEDGER_PREFIX: Final = "ocs:med:{ledger}"
#: Seconds a done file stays in the ledger (duplicates arriving later than this are charged
#: again unless the debits' idempotency answers, kept OCS_REFERENCE_TTL, still exist).
LEDGER_TTL: Final = 35 * 86_400


class SourceUnavailable(Exception):
    """The source cannot be listed, read or updated right now; the next poll tries again."""


# -- sources -----------------------------------------------------------------------------------


class Source(abc.ABC):
    """Where a switch's closed files are found, and where they go once charged."""

    #: Names the source in logs and in the ledger (no password).
    label: str

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:  # noqa: B027 (optional to override)
        """Release connections."""

    async def check(self) -> None:  # noqa: B027 (optional to override)
        """At start: SourceUnavailable when the source cannot work at all (a directory that
        does not exist), rather than polling nothing for ever. (An FTP server that does not
        answer yet is retried at each poll, loudly.)"""

    @abc.abstractmethod
    async def listing(self) -> dict[str, int]:
        """The regular files of the incoming directory: name -> size."""

    @abc.abstractmethod
    async def read(self, name: str) -> bytes:
        """The whole content of an incoming file."""

    @abc.abstractmethod
    async def finish(self, name: str, rejected: bytes | None) -> None:
        """Move a charged file to ``done/``, writing ``<name>.rejected`` beside it first
        (when given). Safe to repeat."""

    @abc.abstractmethod
    async def set_aside(self, name: str, *, duplicate: bool = False) -> str:
        """A file the ledger says is done is in the incoming directory again: move it to
        ``done/`` if it is not there (a crash came between the ledger and the move), else to
        ``duplicates/``; with ``duplicate`` (a copy of another file) to ``duplicates/``
        always. Returns the directory it went to."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class DirectorySource(Source):
    """A local directory the switch (or an FTP push) writes into. Layout::

    <dir>/<name>                   incoming, closed files (``*.tmp`` while written)
    <dir>/done/<name>              charged
    <dir>/done/<name>.rejected     its rejected records, if any
    <dir>/duplicates/<name>.<ms>   arrived again after it was charged; not charged again
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done = self.path / DONE_DIR
        self.duplicates = self.path / DUPLICATES_DIR
        self.label = f"dir:{self.path}"

    async def check(self) -> None:
        if not self.path.is_dir():
            what = "is not a directory" if self.path.exists() else "does not exist"
            raise SourceUnavailable(f"{self.label}: {what}")
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise SourceUnavailable(f"{self.label}: cannot be read (permission denied)")
        if not os.access(self.path, os.W_OK):
            raise SourceUnavailable(
                f"{self.label}: cannot be written (charged files are moved to {DONE_DIR}/)"
            )

    async def listing(self) -> dict[str, int]:
        try:
            with os.scandir(self.path) as it:
                return {
                    e.name: e.stat().st_size
                    for e in it
                    if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
                }
        except FileNotFoundError:
            raise SourceUnavailable(f"{self.label}: the directory is gone") from None
        except OSError as exc:
            raise SourceUnavailable(f"{self.label}: {exc}") from exc

    async def read(self, name: str) -> bytes:
        try:
            return await asyncio.to_thread((self.path / name).read_bytes)
        except OSError as exc:
            raise SourceUnavailable(f"{self.label}: {exc}") from exc

    def _finish(self, name: str, rejected: bytes | None) -> None:
        self.done.mkdir(exist_ok=True)
        if rejected is not None:
            _atomic_write(self.done / f"{name}{REJECTED_SUFFIX}", rejected)
        with contextlib.suppress(FileNotFoundError):  # a repeat: moved already
            os.replace(self.path / name, self.done / name)

    async def finish(self, name: str, rejected: bytes | None) -> None:
        try:
            await asyncio.to_thread(self._finish, name, rejected)
        except OSError as exc:
            raise SourceUnavailable(f"{self.label}: {exc}") from exc

    def _set_aside(self, name: str, stamp: int, duplicate: bool) -> str:
        if not duplicate and not (self.done / name).exists():
            self.done.mkdir(exist_ok=True)
            os.replace(self.path / name, self.done / name)
            return DONE_DIR
        self.duplicates.mkdir(exist_ok=True)
        os.replace(self.path / name, self.duplicates / f"{name}.{stamp}")
        return DUPLICATES_DIR

    async def set_aside(self, name: str, *, duplicate: bool = False) -> str:
        try:
            return await asyncio.to_thread(self._set_aside, name, _now_ms(), duplicate)
        except OSError as exc:
            raise SourceUnavailable(f"{self.label}: {exc}") from exc


class FtpSource(Source):
    """A directory on an FTP server, polled with aioftp: ``ftp://user:password@host:port/path``.

    Files are downloaded whole into memory (a minute of records is a few megabytes at most),
    renamed into ``<path>/done/`` on the server once charged, with ``<name>.rejected`` uploaded
    beside them. The connection is kept between polls and reopened after an error.
    """

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ftp" or not parts.hostname:
            raise ValueError(f"not an ftp:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or aioftp.DEFAULT_PORT
        self.user = unquote(parts.username) if parts.username else aioftp.DEFAULT_USER
        self.password = unquote(parts.password) if parts.password else aioftp.DEFAULT_PASSWORD
        self.path = PurePosixPath(unquote(parts.path) or "/")
        self.done = self.path / DONE_DIR
        self.duplicates = self.path / DUPLICATES_DIR
        self.timeout = timeout
        self.label = f"ftp://{self.host}:{self.port}{self.path}"
        self._client: aioftp.Client | None = None
        self._made: set[PurePosixPath] = set()

    async def _connect(self) -> aioftp.Client:
        if self._client is None:
            client = aioftp.Client(socket_timeout=self.timeout, connection_timeout=self.timeout,
                                   path_timeout=self.timeout)  # fmt: skip
            try:
                await client.connect(self.host, self.port)
                await client.login(self.user, self.password)
            except BaseException:
                client.close()
                raise
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.quit(), 2.0)
            except (OSError, TimeoutError, aioftp.AIOFTPException):
                pass
            finally:
                client.close()

    async def _do(self, what: str, work: Any) -> Any:
        """Run ``work(client)``; FTP and socket errors drop the connection and become
        SourceUnavailable (the next poll reconnects)."""
        try:
            return await work(await self._connect())
        except (OSError, TimeoutError, aioftp.AIOFTPException) as exc:
            client, self._client = self._client, None
            if client is not None:
                client.close()
            raise SourceUnavailable(f"{self.label}: {what}: {exc}") from exc

    async def listing(self) -> dict[str, int]:
        async def work(c: aioftp.Client) -> dict[str, int]:
            return {
                p.name: int(info.get("size", 0))
                for p, info in await c.list(self.path)
                if info.get("type") == "file" and not p.name.startswith(".")
            }

        found: dict[str, int] = await self._do("list", work)
        return found

    async def read(self, name: str) -> bytes:
        async def work(c: aioftp.Client) -> bytes:
            chunks = []
            async with c.download_stream(self.path / name) as stream:
                async for block in stream.iter_by_block():
                    chunks.append(block)
            return b"".join(chunks)

        data: bytes = await self._do(f"read {name}", work)
        return data

    async def _mkdir(self, c: aioftp.Client, path: PurePosixPath) -> None:
        if path not in self._made:
            await c.make_directory(path)
            self._made.add(path)

    async def finish(self, name: str, rejected: bytes | None) -> None:
        async def work(c: aioftp.Client) -> None:
            await self._mkdir(c, self.done)
            if rejected is not None:
                tmp = self.done / f".{name}{REJECTED_SUFFIX}.tmp"
                async with c.upload_stream(tmp) as stream:
                    await stream.write(rejected)
                await c.rename(tmp, self.done / f"{name}{REJECTED_SUFFIX}")
            if await c.exists(self.path / name):
                await c.rename(self.path / name, self.done / name)

        await self._do(f"finish {name}", work)

    async def set_aside(self, name: str, *, duplicate: bool = False) -> str:
        async def work(c: aioftp.Client) -> str:
            if not duplicate and not await c.exists(self.done / name):
                await self._mkdir(c, self.done)
                await c.rename(self.path / name, self.done / name)
                return DONE_DIR
            await self._mkdir(c, self.duplicates)
            await c.rename(self.path / name, self.duplicates / f"{name}.{_now_ms()}")
            return DUPLICATES_DIR

        where: str = await self._do(f"set aside {name}", work)
        return where


def open_source(spec: str | Path) -> Source:
    """A source from ``--source``: an ``ftp://`` URL or a local directory."""
    text = str(spec)
    if text.startswith("ftp://"):
        return FtpSource(text)
    if "://" in text:
        raise ValueError(f"unsupported source {text!r}: a directory or ftp://user:pass@host/path")
    return DirectorySource(text)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- which files, in which order -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A closed file ready to be charged."""

    name: CdrFileName
    size: int

    @property
    def file(self) -> str:
        return self.name.name

    @property
    def switch(self) -> str:
        return self.name.node


def charging_order(files: Iterable[Candidate]) -> list[Candidate]:
    """Each switch's files in the order it closed them (``sort_key``: running count, split
    parts in order), the switches interleaved by closing time."""
    by_switch: dict[str, list[Candidate]] = {}
    for f in files:
        by_switch.setdefault(f.switch, []).append(f)
    lanes = [sorted(v, key=lambda c: c.name.sort_key) for _, v in sorted(by_switch.items())]
    return list(heapq.merge(*lanes, key=lambda c: c.name.closed_at))


class Collector:
    """Turns successive listings of a source into the closed files to charge, in order."""

    def __init__(self, source: Source, *, stable_size: bool = False) -> None:
        self.source = source
        self.stable_size = stable_size
        self._last: dict[str, int] = {}
        self._warned: set[str] = set()

    def select(self, listing: Mapping[str, int]) -> list[Candidate]:
        """The files of ``listing`` to take now (pure apart from remembering the listing)."""
        by_switch: dict[str, list[tuple[Candidate, bool]]] = {}
        for name, size in listing.items():
            try:
                parsed = parse_name(name)
            except ValueError as exc:  # (what is wrong with the name, e.g. a short count)
                if not name.endswith(TEMP_SUFFIX) and name not in self._warned:
                    self._warned.add(name)
                    log.warning("%s: ignoring %s", self.source.label, exc)
                continue
            ready = not self.stable_size or self._last.get(name) == size
            by_switch.setdefault(parsed.node, []).append((Candidate(parsed, size), ready))
        self._last = dict(listing)
        taken: list[Candidate] = []
        for files in by_switch.values():
            files.sort(key=lambda x: x[0].name.sort_key)
            for cand, ready in files:
                if not ready:
                    break  # an earlier file of this switch first
                taken.append(cand)
        return charging_order(taken)

    async def poll(self) -> list[Candidate]:
        return self.select(await self.source.listing())


# -- the ledger ----------------------------------------------------------------------------------


class FileState(StrEnum):
    COLLECTED = "collected"
    CHARGING = "charging"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    name: str
    state: FileState
    source: str = ""
    switch: str = ""
    size: int = 0
    #: Times (Unix ms) it was first collected, started charging and was done.
    collected_at: int = 0
    charging_at: int = 0
    done_at: int = 0
    #: How many times it was collected: more than 1 means it was resumed after a stop.
    attempts: int = 0
    records: int = 0
    charged: int = 0
    rejected: int = 0
    #: Money debited for the file, micro-units.
    amount: int = 0
    #: Records charged before by another file (same identity): not charged again.
    repeated: int = 0
    #: SHA-256 of the content (hex), once done.
    digest: str = ""
    #: The file charged before with the same content (this one was not charged).
    duplicate_of: str = ""

    @classmethod
    def from_flat(cls, flat: Sequence[Any]) -> LedgerEntry:
        f = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}

        def num(k: str) -> int:
            v = f.get(k)
            return int(v) if v else 0

        return cls(
            name=f.get("name", ""),
            state=FileState(f.get("state", "collected")),
            source=f.get("source", ""),
            switch=f.get("switch", ""),
            size=num("size"),
            collected_at=num("collected_at"),
            charging_at=num("charging_at"),
            done_at=num("done_at"),
            attempts=num("attempts"),
            records=num("records"),
            charged=num("charged"),
            rejected=num("rejected"),
            amount=num("amount"),
            repeated=num("repeated"),
            digest=f.get("digest", ""),
            duplicate_of=f.get("duplicate_of", ""),
        )


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# KEYS: file hash, files by time (zset), open files (set). ARGV: name, now, source, switch, size.
_COLLECT = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', 'collected', 'collected_at', ARGV[2],
    'source', ARGV[3], 'switch', ARGV[4], 'size', ARGV[5], 'attempts', 1)
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
elseif st ~= 'done' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: file hash, open files (set), totals (hash), the content digest's key.
# ARGV: name, now, records, charged, rejected, amount, ttl seconds, digest, repeated.
_DONE = """
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'done' then
  return 0
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', 'done', 'done_at', ARGV[2],
  'records', ARGV[3], 'charged', ARGV[4], 'rejected', ARGV[5], 'amount', ARGV[6],
  'digest', ARGV[8], 'repeated', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[7], 'NX')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'files', 1)
redis.call('HINCRBY', KEYS[3], 'records', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'charged', ARGV[4])
redis.call('HINCRBY', KEYS[3], 'rejected', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'amount', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'repeated', ARGV[9])
return 1
"""


# KEYS: file hash, files by time (zset), totals (hash).
# ARGV: name, now, source, switch, size, digest, the first file's name, ttl seconds.
_DUPLICATE = """
if redis.call('HGET', KEYS[1], 'state') == 'done' then
  return 0
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', 'done', 'collected_at', ARGV[2],
  'done_at', ARGV[2], 'source', ARGV[3], 'switch', ARGV[4], 'size', ARGV[5], 'digest', ARGV[6],
  'duplicate_of', ARGV[7], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
return 1
"""


class LedgerUnavailable(Exception):
    """Redis did not answer a ledger command."""


class Ledger:
    """Which files were collected, are being charged, are done (Redis)."""

    def __init__(self, client: HotRedis, *, ttl: int = LEDGER_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._collect = client.register_script(_COLLECT)
        self._done = client.register_script(_DONE)
        self._duplicate = client.register_script(_DUPLICATE)

    @staticmethod
    def _file(name: str) -> str:
        return f"{LEDGER_PREFIX}:file:{name}"

    @staticmethod
    def _digest(digest: str) -> str:
        return f"{LEDGER_PREFIX}:sha256:{digest}"

    _FILES: Final = f"{LEDGER_PREFIX}:files"
    _OPEN: Final = f"{LEDGER_PREFIX}:open"
    _TOTALS: Final = f"{LEDGER_PREFIX}:totals"

    async def _run(self, work: Any) -> Any:
        try:
            return await work
        except (RedisClientError, OSError, TimeoutError) as exc:
            raise LedgerUnavailable(f"ledger: {exc or type(exc).__name__}") from exc

    async def get(self, name: str) -> LedgerEntry | None:
        flat = await self._run(self.client.execute("HGETALL", self._file(name)))
        return LedgerEntry.from_flat(flat) if flat else None

    async def collected(
        self, name: str, *, source: str, switch: str, size: int, now: int
    ) -> LedgerEntry:
        """Record that a file was taken (once; a later call counts an attempt); its entry."""
        keys = [self._file(name), self._FILES, self._OPEN]
        flat = await self._run(self._collect(keys, [name, now, source, switch, size]))
        return LedgerEntry.from_flat(flat)

    async def charging(self, name: str, now: int) -> None:
        await self._run(self.client.execute("HSET", self._file(name), "state", "charging",
                                            "charging_at", now))  # fmt: skip

    async def done(
        self,
        name: str,
        *,
        now: int,
        records: int,
        charged: int,
        rejected: int,
        amount: int,
        digest: str = "",
        repeated: int = 0,
    ) -> bool:
        """Mark a file done with its counts (totals counted once) and remember its content's
        ``digest`` (SHA-256, hex) as charged; False if it already was."""
        keys = [self._file(name), self._OPEN, self._TOTALS, self._digest(digest)]
        args: list[str | int] = [name, now, records, charged, rejected, amount, self.ttl, digest,
                                 repeated]  # fmt: skip
        return bool(await self._run(self._done(keys, args)))

    async def charged_as(self, digest: str) -> str | None:
        """The name of the file whose content (SHA-256, hex) was charged, if one was."""
        found = await self._run(self.client.execute("GET", self._digest(digest)))
        return None if found is None else _s(found)

    async def duplicate(
        self, name: str, *, of: str, source: str, switch: str, size: int, digest: str, now: int
    ) -> bool:
        """Record that ``name`` holds what ``of`` held and was not charged (state done,
        ``duplicate_of``; counted in the totals' ``duplicates``); False if it already was."""
        keys = [self._file(name), self._FILES, self._TOTALS]
        args: list[str | int] = [name, now, source, switch, size, digest, of, self.ttl]
        return bool(await self._run(self._duplicate(keys, args)))

    async def recent(self, limit: int = 20) -> list[LedgerEntry]:
        """The files collected last, newest first (those still in the ledger)."""
        names = await self._run(self.client.execute("ZREVRANGE", self._FILES, 0, limit - 1))
        out = []
        for n in names:
            e = await self.get(_s(n))
            if e is not None:
                out.append(e)
        return out

    async def open_files(self) -> list[str]:
        """Files collected and not yet done (being charged, or interrupted)."""
        names = await self._run(self.client.execute("SMEMBERS", self._OPEN))
        return sorted(_s(n) for n in names)

    async def totals(self) -> dict[str, int]:
        """Done files, records, charged, rejected, amount (micro-units), records charged
        before by another file, and duplicate files (not charged) since the start."""
        flat = await self._run(self.client.execute("HGETALL", self._TOTALS))
        got = {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return {k: got.get(k, 0) for k in ("files", "records", "charged", "rejected", "amount",
                                           "repeated", "duplicates")}  # fmt: skip

    async def forget_expired(self, now: int) -> None:
        """Trim the index of entries whose hash has expired."""
        cutoff = now - self.ttl * 1000
        await self._run(self.client.execute("ZREMRANGEBYSCORE", self._FILES, "-inf", cutoff))
