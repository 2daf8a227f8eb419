"""What the security layer keeps in Redis: API keys, users, refresh tokens and the audit
chain.

Why Redis: it is already everywhere the OCS runs, durable through its AOF, shared by every
OCS process (a key revoked through one process is refused by all at once), and nothing here
depends on the billing database that may not be deployed. docs/security.md says more.

Only hashes of secrets are stored: an API key's SHA-256 (keys are 256-bit random, so a fast
hash is enough), a password's argon2id hash, a refresh token's SHA-256.

The audit log is one stream (``ocs:{audit}``). A record carries the hash of the one before; the
append is one script that adds the record only if the chain's head is still the one the
record was chained to (compare and set), so records from several processes form one chain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ocs.store.cluster import HotRedis
from ocs.store.errors import StoreUnavailable
from ocs.store.keys import (
    AUDIT_EXPORT_CURSOR,
    AUDIT_HEAD,
    AUDIT_HEAD_SIGNATURE,
    AUDIT_STREAM,
    GENERATED_SECRET,
    api_key_index,
    api_key_key,
    auth_failures_key,
    refresh_key,
    user_index,
    user_key,
)
from ocs.store.redis_client import (
    ConnectionLost,
    RedisClientError,
    ReplyError,
)

__all__ = ["ApiKeyRecord", "AuditEntry", "SecurityStore", "UserRecord"]

R = TypeVar("R")

# Append a record to the chain if the head is still ARGV[1] (compare and set): new head,
# signature, record. Answers the new sequence number, or the current head on a conflict.
_APPEND: Final = """
local head = redis.call('GET', KEYS[1]) or ''
if head ~= ARGV[1] then
  return {0, head}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(fields))
return {1, ARGV[2]}
"""

# Count one failed authentication in a fixed window of ARGV[1] ms: the count and the window's
# remaining ms.
_FAILURE: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    role: str
    agency: str | None
    digest: str
    #: Unix ms; 0: never.
    expires_at: int
    created_at: int
    revoked_at: int
    last_used_at: int
    label: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: str
    agency: str | None
    password_hash: str
    disabled: bool
    created_at: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record of the audit stream as stored: its stream id and fields."""

    id: str
    fields: Mapping[str, str]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(raw: Sequence[Any]) -> dict[str, str]:
    return {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}


class SecurityStore:
    """Typed access to the credentials and the audit chain; every method raises
    StoreUnavailable when Redis cannot answer."""

    def __init__(self, client: HotRedis) -> None:
        self.client = client
        self._append = client.register_script(_APPEND)
        self._failure = client.register_script(_FAILURE)

    async def _do(self, *args: str | int) -> Any:
        try:
            return await self.client.execute(*args)
        except ReplyError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        except (RedisClientError, ConnectionLost, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc or type(exc).__name__}") from exc

    async def _script(self, script: Any, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await script(keys, args)
        except (RedisClientError, ConnectionLost, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc or type(exc).__name__}") from exc

    async def _hash(self, key: str) -> dict[str, str]:
        return _pairs(await self._do("HGETALL", key))

    async def _members(self, index: str, get: Callable[[str], Awaitable[R | None]]) -> list[R]:
        """Every record named in the set ``index``, in name order."""
        out = []
        for name in sorted(_s(x) for x in await self._do("SMEMBERS", index)):
            record = await get(name)
            if record is not None:
                out.append(record)
        return out

    # -- failed authentications -------------------------------------------------------------

    async def count_failure(self, client: str, window_ms: int) -> tuple[int, int]:
        """Count a failed authentication of ``client`` in the window every process shares:
        the failures so far and the ms until the window ends."""
        n, ttl = await self._script(self._failure, [auth_failures_key(client)], [window_ms])
        return int(n), int(ttl)

    # -- API keys -----------------------------------------------------------------------------

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self._do(
            "HSET", api_key_key(record.id),
            "role", record.role, "agency", record.agency or "", "digest", record.digest,
            "expires_at", record.expires_at, "created_at", record.created_at,
            "revoked_at", 0, "last_used_at", 0, "label", record.label,
        )  # fmt: skip
        await self._do("SADD", api_key_index(), record.id)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        h = await self._hash(api_key_key(key_id))
        if not h:
            return None
        return ApiKeyRecord(
            id=key_id,
            role=h.get("role", ""),
            agency=h.get("agency") or None,
            digest=h.get("digest", ""),
            expires_at=int(h.get("expires_at", "0") or 0),
            created_at=int(h.get("created_at", "0") or 0),
            revoked_at=int(h.get("revoked_at", "0") or 0),
            last_used_at=int(h.get("last_used_at", "0") or 0),
            label=h.get("label", ""),
        )

    async def api_keys(self) -> list[ApiKeyRecord]:
        return await self._members(api_key_index(), self.api_key)

    async def revoke_api_key(self, key_id: str, now: int) -> bool:
        if not await self._do("EXISTS", api_key_key(key_id)):
            return False
        await self._do("HSET", api_key_key(key_id), "revoked_at", now)
        return True

    def touch_api_key(self, key_id: str, now: int) -> None:
        """Record the key's last use (a hint: sent with the next write, no round trip)."""
        self.client.send_nowait("HSET", api_key_key(key_id), "last_used_at", now)

    # -- users --------------------------------------------------------------------------------

    async def put_user(self, record: UserRecord) -> None:
        await self._do(
            "HSET", user_key(record.name),
            "role", record.role, "agency", record.agency or "", "hash", record.password_hash,
            "disabled", int(record.disabled), "created_at", record.created_at,
        )  # fmt: skip
        await self._do("SADD", user_index(), record.name)

    async def user(self, name: str) -> UserRecord | None:
        h = await self._hash(user_key(name))
        if not h:
            return None
        return UserRecord(
            name=name,
            role=h.get("role", ""),
            agency=h.get("agency") or None,
            password_hash=h.get("hash", ""),
            disabled=h.get("disabled") == "1",
            created_at=int(h.get("created_at", "0") or 0),
        )

    async def users(self) -> list[UserRecord]:
        return await self._members(user_index(), self.user)

    async def set_user_field(self, name: str, field: str, value: str | int) -> bool:
        if not await self._do("EXISTS", user_key(name)):
            return False
        await self._do("HSET", user_key(name), field, value)
        return True

    # -- refresh tokens -----------------------------------------------------------------------

    async def put_refresh(self, digest: str, username: str, ttl_ms: int) -> None:
        await self._do("SET", refresh_key(digest), username, "PX", ttl_ms)

    async def take_refresh(self, digest: str) -> str | None:
        """The user a refresh token was issued to, and the token is used up (one use each)."""
        raw = await self._do("GETDEL", refresh_key(digest))
        return None if raw is None else _s(raw)

    # -- the generated secret -----------------------------------------------------------------

    async def generated_secret(self, candidate: str) -> str:
        """The secret the first process generated (``candidate`` if this one is first)."""
        await self._do("SET", GENERATED_SECRET, candidate, "NX")
        return _s(await self._do("GET", GENERATED_SECRET))

    # -- the audit chain ----------------------------------------------------------------------

    async def audit_head(self) -> tuple[str, str]:
        """(head, its signature): head is "<seq> <hash>", "" for an empty chain."""
        head = await self._do("GET", AUDIT_HEAD)
        sig = await self._do("GET", AUDIT_HEAD_SIGNATURE)
        return ("" if head is None else _s(head)), ("" if sig is None else _s(sig))

    async def append_audit(
        self, expected_head: str, new_head: str, signature: str, fields: Mapping[str, str]
    ) -> tuple[bool, str]:
        """Append ``fields`` if the head is still ``expected_head``: (appended, the head)."""
        args: list[str | int] = [expected_head, new_head, signature]
        for k, v in fields.items():
            args += [k, v]
        ok, head = await self._script(
            self._append, [AUDIT_HEAD, AUDIT_HEAD_SIGNATURE, AUDIT_STREAM], args
        )
        return bool(int(ok)), _s(head)

    async def audit_export_cursor(self) -> str:
        raw = await self._do("GET", AUDIT_EXPORT_CURSOR)
        return "-" if raw is None else _s(raw)

    async def set_audit_export_cursor(self, entry_id: str) -> None:
        await self._do("SET", AUDIT_EXPORT_CURSOR, entry_id)

    async def audit_entries(
        self, *, after: str = "-", count: int = 1000, reverse: bool = False
    ) -> list[AuditEntry]:
        """Up to ``count`` records after the stream id ``after`` (exclusive unless "-"),
        oldest first; ``reverse``: newest first, before ``after`` ("+" for the newest)."""
        if reverse:
            end = after if after in ("+", "-") else f"({after}"
            raw = await self._do("XREVRANGE", AUDIT_STREAM, "+" if end == "-" else end, "-",
                                 "COUNT", count)  # fmt: skip
        else:
            start = after if after == "-" else f"({after}"
            raw = await self._do("XRANGE", AUDIT_STREAM, start, "+", "COUNT", count)
        return [AuditEntry(_s(entry_id), _pairs(fields)) for entry_id, fields in raw]
