"""Redis key names. The only module that knows them (docs/architecture.md, Layers: nothing
above ocs/store knows a Redis key).

Every key of a subscriber carries the hash tag of its bucket, ``{b<N>}``, so the account, its
sessions (and the answers of its session requests, fields of the same hash), its idempotency
answers of one-shot requests, and the bucket's outbox stream and expiry index share one
Redis Cluster slot and one Lua script can touch them all atomically.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

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


def thresholds_key(bucket: int) -> str:
    """The bucket's copy of every plan's balance thresholds (hash: plan -> spec), so a script
    reads them from its own slot."""
    return f"{KEY_PREFIX}:{tag(bucket)}:thr"


def notify_key(bucket: int) -> str:
    """The bucket's notification stream: barring changes and threshold crossings, read by the
    provisioning worker, the webhooks and the Diameter agent (consumer groups / XREAD)."""
    return f"{KEY_PREFIX}:{tag(bucket)}:ntf"


def dead_letter_key() -> str:
    """Provisioning commands and webhooks that failed for good (a stream; replayable)."""
    return f"{KEY_PREFIX}:prov:dead"


def hlr_state_key(msisdn: str) -> str:
    """What the provisioning worker knows of the HLR's barring of a subscriber (a hash). In
    the subscriber's slot, with its history, so one script writes both."""
    return f"{KEY_PREFIX}:{tag(bucket_of(msisdn))}:prov:hlr:{msisdn}"


def hlr_history_key(msisdn: str) -> str:
    """The subscriber's last provisioning commands, newest first (a capped list of JSON)."""
    return f"{KEY_PREFIX}:{tag(bucket_of(msisdn))}:prov:hist:{msisdn}"


def hlr_command_key(command_id: str) -> str:
    """A command awaiting the provisioning system's callback (a hash, expiring)."""
    return f"{KEY_PREFIX}:prov:cmd:{command_id}"


def reconcile_job_key(job_id: str) -> str:
    """A reconciliation job's progress and result (JSON, expiring), for any process to read."""
    return f"{KEY_PREFIX}:prov:job:{job_id}"


def leader_key(group: str) -> str:
    """The lease that makes one process the consumer of a notification group."""
    return f"{KEY_PREFIX}:lease:{group}"


def session_index_key(session_id: str) -> str:
    """Where a session's subscriber is found when a request names only the session."""
    return f"{KEY_PREFIX}:sidx:{session_id}"


def session_answers_since_key() -> str:
    """When (Unix ms; 0: never) this store first ran scripts that keep session answers in
    the sessions hash: until a session TTL later they also read the keys of before."""
    return f"{KEY_PREFIX}:store:session-answers-since"


def thresholds_pass_key(generation: str) -> str:
    """Held by the process that brings every account up to date with a generation of the
    published thresholds."""
    return f"{KEY_PREFIX}:thr:pass:{generation}"


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
    thresholds: str
    notify: str
    #: The six above from ``account`` on, as a session script's KEYS (built once).
    script_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, msisdn: str) -> SubscriberKeys:
        """The keys of a subscriber (remembered: they are needed on every request)."""
        keys = _cache.get(msisdn)
        if keys is None:
            b = bucket_of(msisdn)
            t = tag(b)
            six = (
                f"{KEY_PREFIX}:{t}:acct:{msisdn}",
                f"{KEY_PREFIX}:{t}:sess:{msisdn}",
                outbox_key(b),
                expiry_key(b),
                thresholds_key(b),
                notify_key(b),
            )
            keys = cls(msisdn, b, *six, script_keys=six)
            if len(_cache) >= _CACHE_SIZE:
                _cache.clear()
            _cache[msisdn] = keys
        return keys

    def idempotency(self, namespace: str, request_key: str) -> str:
        """Where a one-shot script (debit, credit, upsert) keeps its answer to a request: per
        subscriber and per script, so a top-up reference can never replay a debit's answer.
        (Session scripts keep theirs in the sessions hash: :data:`SESSION_ANSWER_MARK`.)"""
        return f"{KEY_PREFIX}:{tag(self.bucket)}:idem:{self.msisdn}:{namespace}:{request_key}"

    def for_script(
        self, namespace: str, request_key: str | None, legacy: bool = False
    ) -> tuple[str, ...]:
        """KEYS of a script; ``legacy``: a session script is also given the key under which
        an earlier version kept the request's answer (read, never written)."""
        if request_key is not None and (legacy or namespace not in SESSION_SCRIPTS):
            return (*self.script_keys, self.idempotency(namespace, request_key))
        return self.script_keys


#: The scripts whose answers are fields of the subscriber's sessions hash, not keys.
SESSION_SCRIPTS: Final = frozenset(("reserve", "commit", "release"))

#: The first byte of a session answer's field in the sessions hash (then the script's letter
#: and the request key; scripts/lib.lua, session_lookup). Session ids are UTF-8 text, which
#: never holds this byte, so a reader of the sessions hash tells them apart by it.
SESSION_ANSWER_MARK: Final = b"\xff"


def is_session_field(field: bytes) -> bool:
    """Whether a field of a sessions hash is a session (else: a session answer)."""
    return not field.startswith(SESSION_ANSWER_MARK)


_CACHE_SIZE = 500_000
_cache: dict[str, SubscriberKeys] = {}


def msisdn_of_account_key(key: str) -> str:
    return key.rsplit(":acct:", 1)[1]


# -- security (ocs/store/security.py): credentials and the audit chain ---------------------

KEY_PREFIX_AUTH: Final = f"{KEY_PREFIX}:auth"
#: The audit chain (a stream) and its head: "<seq> <hash>" (a string), with its signature.
#: One hash tag, so the script that appends writes all three in one slot on a Redis Cluster.
AUDIT_STREAM: Final = f"{KEY_PREFIX}:{{audit}}"
AUDIT_HEAD: Final = f"{KEY_PREFIX}:{{audit}}:head"
AUDIT_HEAD_SIGNATURE: Final = f"{KEY_PREFIX}:{{audit}}:head:sig"
#: The last record exported to files (ocs audit export).
AUDIT_EXPORT_CURSOR: Final = f"{KEY_PREFIX}:audit:export"
#: The JWT signing key, when the deployment gave none (created once, shared by processes).
GENERATED_SECRET: Final = f"{KEY_PREFIX_AUTH}:generated-secret"


def api_key_key(key_id: str) -> str:
    return f"{KEY_PREFIX_AUTH}:key:{key_id}"


def api_key_index() -> str:
    return f"{KEY_PREFIX_AUTH}:keys"


def user_key(name: str) -> str:
    return f"{KEY_PREFIX_AUTH}:user:{name}"


def user_index() -> str:
    return f"{KEY_PREFIX_AUTH}:users"


def refresh_key(digest: str) -> str:
    return f"{KEY_PREFIX_AUTH}:refresh:{digest}"


def auth_failures_key(client: str) -> str:
    """The failed authentications of ``client`` (an address) in the current window, counted
    by every OCS process (ocs.auth.http.FailureBudget)."""
    return f"{KEY_PREFIX_AUTH}:failures:{client}"
