"""Redis key names. The only module that knows them (DESIGN.md: nothing above ocs/store knows
a Redis key).

Every key of a subscriber carries the hash tag of its bucket, ``{b<N>}``, so the account, its
sessions, its idempotency answers, and the bucket's outbox stream and expiry index share one
Redis Cluster slot and one Lua script can touch them all atomically.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ocs.constants import BUCKET_COUNT, KEY_PREFIX


def bucket_of(msisdn: str) -> int:
    """A stable bucket for a subscriber (CRC-32, the same in every process and release)."""
    return zlib.crc32(msisdn.encode()) % BUCKET_COUNT


def tag(bucket: int) -> str:
    return f"{{b{bucket}}}"


def outbox_key(bucket: int) -> str:
    return f"{KEY_PREFIX}:{tag(bucket)}:outbox"


def expiry_key(bucket: int) -> str:
    return f"{KEY_PREFIX}:{tag(bucket)}:exp"


def session_index_key(session_id: str) -> str:
    """Where a session's subscriber is found when a request names only the session."""
    return f"{KEY_PREFIX}:sidx:{session_id}"


def plans_key() -> str:
    """Tariff plan sources loaded at run time, by "name@version"."""
    return f"{KEY_PREFIX}:tariffs"


def plans_revision_key() -> str:
    return f"{KEY_PREFIX}:tariffs:rev"


def account_pattern() -> str:
    return f"{KEY_PREFIX}:{{b*}}:acct:*"


@dataclass(frozen=True, slots=True)
class SubscriberKeys:
    """The keys one script needs, in KEYS order (see scripts/lib.lua)."""

    msisdn: str
    bucket: int
    account: str
    sessions: str
    outbox: str
    expiry: str

    @classmethod
    def of(cls, msisdn: str) -> SubscriberKeys:
        """The keys of a subscriber (remembered: they are needed on every request)."""
        keys = _cache.get(msisdn)
        if keys is None:
            b = bucket_of(msisdn)
            t = tag(b)
            keys = cls(
                msisdn,
                b,
                f"{KEY_PREFIX}:{t}:acct:{msisdn}",
                f"{KEY_PREFIX}:{t}:sess:{msisdn}",
                outbox_key(b),
                expiry_key(b),
            )
            if len(_cache) >= _CACHE_SIZE:
                _cache.clear()
            _cache[msisdn] = keys
        return keys

    def idempotency(self, namespace: str, request_key: str) -> str:
        """Where a script keeps its answer to a request: per subscriber and per script, so a
        top-up reference can never replay a debit's answer."""
        return f"{KEY_PREFIX}:{tag(self.bucket)}:idem:{self.msisdn}:{namespace}:{request_key}"

    def for_script(self, namespace: str, request_key: str | None) -> list[str]:
        keys = [self.account, self.sessions, self.outbox, self.expiry]
        if request_key is not None:
            keys.append(self.idempotency(namespace, request_key))
        return keys


_CACHE_SIZE = 500_000
_cache: dict[str, SubscriberKeys] = {}


def msisdn_of_account_key(key: str) -> str:
    return key.rsplit(":acct:", 1)[1]
