"""Configuration: one frozen dataclass, built once at the entry point from the environment
(``OCS_*``) and an optional TOML file, checked at start-up with messages that name the setting.
Nothing below the entry point reads ``os.environ``.

Precedence: command-line flags > environment > config file > defaults. The file holds the same
settings as the environment, lower-cased and without the ``OCS_`` prefix::

    redis_url = "redis://127.0.0.1:6379/0"
    native_port = 3869
    http_port = 8080
    validity = 300
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ocs.auth.diameter import DiameterAdmission, PeerListError, parse_peers
from ocs.charging.types import ChargingConfig
from ocs.constants import (
    DEFAULT_VALIDITY,
    DIAMETER_PORT,
    DURATION_TOLERANCE,
    EXPIRY_GRACE,
    HTTP_BODY_TIMEOUT,
    HTTP_IDLE_TIMEOUT,
    HTTP_PORT,
    IDEMPOTENCY_TTL_REFERENCE,
    IDEMPOTENCY_TTL_SESSION,
    MAX_CALL_DURATION,
    NATIVE_PORT,
)
from ocs.money import MoneyFormatError, parse_money
from ocs.store.redis_client import parse_url
from protocols.diameter.constants import (
    DEFAULT_CER_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_MESSAGE_LENGTH_FIELD,
    MIN_MAX_MESSAGE_SIZE,
    MIN_WATCHDOG_INTERVAL,
)
from protocols.diameter.constants import DEFAULT_FRAME_TIMEOUT as DIAMETER_FRAME_TIMEOUT
from protocols.native.constants import DEFAULT_FRAME_TIMEOUT as NATIVE_FRAME_TIMEOUT
from protocols.native.constants import DEFAULT_IDLE_TIMEOUT as NATIVE_IDLE_TIMEOUT
from protocols.sigtran.admission import PeerList
from protocols.sigtran.constants import M3UA_PORT, SCTP_UDP_PORT
from tariffs.digits import ascii_float, ascii_int


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    #: None: start an embedded redis-server with its data under ``data_dir``.
    redis_url: str | None = None
    #: A Redis Cluster's nodes, "host:port,host:port" (any of them; the others are learned):
    #: the same as ``redis_url = "redis+cluster://host:port,host:port/"``.
    redis_cluster_nodes: str = ""
    #: What a balance change survives before it is acknowledged (docs/operations.md):
    #: local (Redis's AOF, fsync every second), replica (WAIT for one replica after each
    #: write), fsync (appendfsync always), or auto: replica when every master has a replica,
    #: else local.
    durability: str = "auto"
    #: Milliseconds a write waits for its replica (durability replica) before the request is
    #: answered store-unavailable.
    durability_timeout: int = 1000
    #: Seconds to wait at start for Redis to answer (it may start after the OCS).
    redis_wait: float = 15.0
    data_dir: str = ".ocs"
    #: AOF fsync policy of the embedded Redis: everysec (default) or always.
    appendfsync: str = "everysec"
    bind: str = "127.0.0.1"
    native_port: int = NATIVE_PORT
    http_port: int = HTTP_PORT
    diameter_port: int = DIAMETER_PORT
    #: Seconds before a stalled client is closed (docs/native-protocol.md, docs/diameter.md,
    #: docs/api.md; 0 turns the frame, idle and HTTP idle timeouts off): a native frame or a
    #: Diameter message started and not finished; a native connection silent with nothing in
    #: flight; a Diameter connection that sends no CER; an HTTP connection without a complete
    #: request (from its start or its last answer); an HTTP body that does not arrive.
    native_frame_timeout: float = NATIVE_FRAME_TIMEOUT
    native_idle_timeout: float = NATIVE_IDLE_TIMEOUT
    diameter_cer_timeout: float = DEFAULT_CER_TIMEOUT
    diameter_frame_timeout: float = DIAMETER_FRAME_TIMEOUT
    http_idle_timeout: float = HTTP_IDLE_TIMEOUT
    http_body_timeout: float = HTTP_BODY_TIMEOUT
    #: Our Diameter identity (Origin-Host, Origin-Realm in every message we send).
    diameter_host: str = "ocs.localdomain"
    diameter_realm: str = "localdomain"
    #: RFC 3539 Tw in seconds (at least 6).
    diameter_watchdog: float = 30.0
    #: Largest Diameter message accepted, in bytes.
    diameter_max_message: int = DEFAULT_MAX_MESSAGE_SIZE
    #: The Diameter peers admitted (ocs.auth.diameter): Origin-Hosts, each optionally bound to
    #: addresses (``pgw1@10.0.0.0/24``), or ``*`` for any; empty: only peers with a client
    #: certificate when TLS requires one, else none.
    diameter_peers: str = ""
    #: Answer requests for another Destination-Realm (or Destination-Host) with 3003 (3002).
    diameter_realm_check: bool = False
    #: TLS on the Diameter listener (RFC 6733 §13: TLS from the first byte, as on port 5868):
    #: a PEM certificate chain and its key; with a CA file, peers must present a certificate
    #: it signed.
    diameter_tls_cert: str = ""
    diameter_tls_key: str = ""
    diameter_tls_ca: str = ""
    #: Credit-Control-Failure-Handling sent to gateways: TERMINATE, CONTINUE or
    #: RETRY_AND_TERMINATE, optionally followed by per-service overrides
    #: ("RETRY_AND_TERMINATE,data=CONTINUE").
    diameter_failure_handling: str = "RETRY_AND_TERMINATE"
    #: OCS processes `ocs serve` runs (sharing the ports under one supervisor).
    workers: int = 1
    #: Seconds a grant is valid, and seconds past it before an unreported grant is released.
    validity: int = DEFAULT_VALIDITY
    grace: int = EXPIRY_GRACE
    #: Seconds idempotency answers are kept: session requests, and references (top-ups).
    session_ttl: int = IDEMPOTENCY_TTL_SESSION
    reference_ttl: int = IDEMPOTENCY_TTL_REFERENCE
    #: Extra directory of TOML plans, loaded beside the shipped ones.
    plans_dir: str | None = None
    sweep_interval: float = 1.0
    #: The provisioning gateway (or ``ocs hlr-sim``) that bars subscribers in the HLR; empty:
    #: no barring commands are sent (they wait in the notification streams).
    provisioning_url: str = ""
    #: HMAC-SHA256 key signing commands and checking callbacks (and webhooks, unless
    #: ``webhook_secret`` is set).
    provisioning_secret: str = ""
    #: An Authorization header value sent with every command (e.g. "Bearer ...").
    provisioning_auth: str = ""
    #: Seconds to wait for the gateway's answer.
    provisioning_timeout: float = 5.0
    #: Attempts per command before it is dead-lettered, and the first retry's delay in
    #: seconds (doubling each time, at most a minute, with jitter).
    provisioning_retries: int = 8
    provisioning_backoff: float = 0.5
    #: HLR queries at once while reconciling (POST /v1/provisioning/reconcile).
    provisioning_reconcile_concurrency: int = 16
    #: Where the gateway sends its callbacks (default: this OCS's admin API).
    provisioning_callback_url: str = ""
    #: Comma-separated URLs told of every threshold crossing and barring change.
    webhook_urls: str = ""
    webhook_secret: str = ""
    log_level: str = "INFO"
    #: "text" or "json" (one JSON object per line: ocs/logs.py).
    log_format: str = "text"
    #: Hot billing (docs/hot-billing.md): seconds between polls of a CDR source, debits in
    #: flight, the Parquet warehouse, the retention archive and its AES-256 key (64 hex
    #: digits; empty: none configured).
    mediation_poll: float = 1.0
    mediation_window: int = 256
    #: Records not believed (rejected with the reason, not charged): a call longer than this
    #: many seconds, or whose callDuration differs from releaseTime - answerTime by more.
    mediation_max_call_duration: int = MAX_CALL_DURATION
    mediation_duration_tolerance: int = DURATION_TOLERANCE
    warehouse_dir: str = ".ocs/warehouse"
    archive_dir: str = ".ocs/archive"
    archive_key: str = field(default="", repr=False)
    #: CAMEL (docs/camel.md): the gsmSCF listener's transport, "" (none), "sctp" (the
    #: kernel's) or "sctp-udp" (SCTP over UDP through libusrsctp, RFC 6951); its SCTP port
    #: (on ``bind``) and UDP encapsulation port; our point code, global title and M3UA
    #: routing context (0: none); the TC timer (seconds without a message before a dialogue
    #: is aborted); what unknown subscribers get ("release" or "continue"); the Q.850 cause
    #: of ReleaseCall when credit runs out.
    camel_transport: str = ""
    camel_port: int = M3UA_PORT
    camel_udp_port: int = SCTP_UDP_PORT
    camel_point_code: int = 1
    camel_gt: str = ""
    camel_routing_context: int = 0
    camel_dialogue_timeout: float = 60.0
    camel_unknown: str = "release"
    camel_release_cause: int = 31
    #: Where a call that the subscriber's credit cannot start is sent instead of released
    #: (CAP Connect to these E.164 digits, e.g. a top-up announcement); empty: ReleaseCall.
    camel_redirect: str = ""
    #: The SSFs admitted (protocols/sigtran/admission.py): "pc:N" / "gt:DIGITS[*]", comma-
    #: separated; empty: any peer (with a warning at start).
    camel_peers: str = ""
    #: Security (docs/security.md). The bootstrap admin bearer token; empty: none.
    admin_token: str = field(default="", repr=False)
    #: The master secret the JWT and audit keys derive from; empty: one generated by the
    #: first process and kept in Redis (set one in production).
    secret_key: str = field(default="", repr=False)
    #: Seconds an access token (JWT) and a refresh token are valid.
    token_ttl: int = 900
    refresh_ttl: int = 7 * 86_400
    #: Failed authentications one client may make per window (seconds) before 429.
    auth_fail_limit: int = 10
    auth_fail_window: int = 60
    #: Serve /metrics without a credential (a scraper on a private network).
    metrics_public: bool = False
    #: A TOML access policy replacing the shipped one (ocs/auth/policy.toml).
    policy_file: str = ""
    #: The operator role's largest top-up per request (a decimal string); empty: the policy's
    #: (500.00 in the shipped one).
    operator_max_topup: str = ""
    #: Native protocol: shared secrets of network elements, "id:secret,id2:secret2" (the
    #: hello handshake); "required" (default) or "off" (no handshake; only on a trusted
    #: network); TLS with client certificates (the handshake is then not needed).
    native_keys: str = field(default="", repr=False)
    native_auth: str = "required"
    native_tls_cert: str = ""
    native_tls_key: str = ""
    native_tls_ca: str = ""
    #: Comma-separated Origin-Realms allowed to connect over Diameter; empty: any.
    diameter_realms: str = ""
    #: HTTPS on the admin API: a PEM certificate chain and its key.
    http_tls_cert: str = ""
    http_tls_key: str = ""
    #: OpenLineage records: a directory (the file sink), and an HTTP endpoint when set.
    lineage_dir: str = ".ocs/lineage"
    lineage_url: str = ""
    #: Enterprise billing (docs/billing.md): run its outbox consumer and API in ``ocs serve``
    #: (the ``ocs billing`` commands work either way); its database (empty: SQLite in
    #: ``data_dir``/billing.db; or postgresql+psycopg://...); the HMAC key of the feeds'
    #: webhooks; the directory the feeds drop files in.
    billing: bool = False
    billing_db_url: str = ""
    billing_feed_secret: str = field(default="", repr=False)
    billing_feeds_dir: str = ".ocs/feeds"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def billing_url(self) -> str:
        """The billing database's URL (the SQLite file under ``data_dir`` by default)."""
        return self.billing_db_url or f"sqlite:///{Path(self.data_dir) / 'billing.db'}"

    @property
    def charging(self) -> ChargingConfig:
        return ChargingConfig(validity=self.validity, grace=self.grace)

    @property
    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    @property
    def diameter_admission(self) -> DiameterAdmission:
        """Which Diameter peers are admitted (OCS_DIAMETER_PEERS, OCS_DIAMETER_TLS_CA)."""
        return parse_peers(self.diameter_peers, certified=bool(self.diameter_tls_ca))

    @property
    def diameter_allowed_realms(self) -> frozenset[str] | None:
        """Origin-Realms allowed to connect, or None for any."""
        realms = frozenset(p.strip() for p in self.diameter_realms.split(",") if p.strip())
        return realms or None

    @property
    def native_key_map(self) -> dict[str, bytes]:
        """Native handshake secrets by key id."""
        out = {}
        for part in self.native_keys.split(","):
            key_id, _, secret = part.strip().partition(":")
            if key_id:
                out[key_id] = secret.encode()
        return out

    @property
    def diameter_failure_handling_parsed(self) -> tuple[str, dict[str, str]]:
        """(default, per-service overrides) of ``diameter_failure_handling``."""
        return _failure_handling(self.diameter_failure_handling, "diameter_failure_handling")


_INT = {"native_port", "http_port", "diameter_port", "validity", "grace", "session_ttl",
        "reference_ttl", "mediation_window", "provisioning_retries", "workers",
        "mediation_max_call_duration", "mediation_duration_tolerance",
        "provisioning_reconcile_concurrency", "durability_timeout", "camel_port",
        "camel_udp_port", "token_ttl", "refresh_ttl", "auth_fail_limit",
        "auth_fail_window"}  # fmt: skip
#: Secrets that may also come from a file: OCS_<NAME>_FILE (docker secrets, a vault agent).
SECRET_FILES = ("admin_token", "secret_key", "native_keys", "archive_key",
                "provisioning_secret", "webhook_secret", "billing_feed_secret")  # fmt: skip
_PORTS = {"native_port", "http_port", "diameter_port", "camel_port", "camel_udp_port"}
#: CAMEL integers and their ranges: a 14-bit ITU point code, a 32-bit routing context, a
#: Q.850 cause value.
_CAMEL_INT = {"camel_point_code": (0, 0x3FFF), "camel_routing_context": (0, 0xFFFFFFFF),
              "camel_release_cause": (1, 127)}  # fmt: skip
_URLS = {"provisioning_url", "provisioning_callback_url"}


#: What OCS_LOG_LEVEL may be (any case): the logging module's level names.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: OCS_DURABILITY values (docs/operations.md, Durability modes).
DURABILITY = ("auto", "local", "replica", "fsync")

#: Credit-Control-Failure-Handling values (RFC 4006 §8.14).
FAILURE_HANDLING = ("TERMINATE", "CONTINUE", "RETRY_AND_TERMINATE")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _failure_handling(value: str, where: str) -> tuple[str, dict[str, str]]:
    default = "RETRY_AND_TERMINATE"
    overrides: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in value.split(",")):
        service, sep, handling = part.rpartition("=")
        handling = handling.strip().upper()
        if handling not in FAILURE_HANDLING:
            raise ConfigError(
                f"{where}: {part!r}: must be one of {', '.join(FAILURE_HANDLING)}"
                " (optionally service=VALUE after the default)"
            )
        if sep:
            if not service.strip():
                raise ConfigError(f"{where}: {part!r}: missing service name")
            overrides[service.strip()] = handling
        elif i == 0:
            default = handling
        else:
            raise ConfigError(f"{where}: only the first value may omit the service name")
    return default, overrides


def _seconds(value: object, where: str) -> float:
    """A duration setting (seconds; a timer, never money): a finite number, or a decimal
    string of ASCII digits ("2", "0.5"; not "nan", "1e3" or "２")."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return ascii_float(value.strip())
    raise ConfigError(f"{where}: must be a number of seconds, got {value!r}")


def _coerce(name: str, value: object, source: str) -> object:
    where = source
    if name == "diameter_max_message":
        v = _coerce("validity", value, source)
        assert isinstance(v, int)
        if not MIN_MAX_MESSAGE_SIZE <= v <= MAX_MESSAGE_LENGTH_FIELD:
            raise ConfigError(
                f"{where}: must be {MIN_MAX_MESSAGE_SIZE}..{MAX_MESSAGE_LENGTH_FIELD}, got {v}"
            )
        return v
    if name == "diameter_watchdog":
        w = _seconds(value, where)
        if w < MIN_WATCHDOG_INTERVAL:
            raise ConfigError(f"{where}: must be at least {MIN_WATCHDOG_INTERVAL} s (RFC 3539)")
        return w
    if name == "operator_max_topup" and str(value).strip():
        try:
            parse_money(str(value).strip(), allow_negative=False)
        except MoneyFormatError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return str(value).strip()
    if name == "diameter_peers":
        try:
            parse_peers(str(value))
        except PeerListError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return str(value)
    if name == "log_level":
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"{where}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return level
    if name == "log_format" and value not in ("text", "json"):
        raise ConfigError(f"{where}: must be text or json, got {value!r}")
    if name == "native_auth" and value not in ("required", "off"):
        raise ConfigError(f"{where}: must be required or off, got {value!r}")
    if name == "native_keys":
        for part in str(value).split(","):
            key_id, sep, secret = part.strip().partition(":")
            if part.strip() and (not sep or not key_id or len(secret) < 16):
                raise ConfigError(f"{where}: must be id:secret pairs (secrets of 16+ characters)")
        return str(value)
    if (
        name == "billing_db_url"
        and value
        and not str(value).startswith(("sqlite:///", "postgresql+psycopg://"))
    ):
        raise ConfigError(f"{where}: must be sqlite:///PATH or postgresql+psycopg://..., got "
                          f"{value!r}")  # fmt: skip
    if name in ("diameter_realm_check", "billing", "metrics_public"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: must be on or off, got {value!r}")
    if name == "diameter_failure_handling":
        _failure_handling(str(value), where)
        return str(value)
    if name in ("diameter_host", "diameter_realm") and (
        not isinstance(value, str) or not value.strip() or " " in value.strip()
    ):
        raise ConfigError(f"{where}: must be a DiameterIdentity (a host name), got {value!r}")
    if name in _CAMEL_INT:
        low, high = _CAMEL_INT[name]
        try:
            number = ascii_int(str(value).strip())
        except ValueError:
            number = -1
        if isinstance(value, bool) or not low <= number <= high:
            raise ConfigError(f"{where}: must be an integer {low}..{high}, got {value!r}")
        return number
    if name == "camel_transport" and value not in ("", "sctp", "sctp-udp"):
        raise ConfigError(f"{where}: must be sctp or sctp-udp (or empty: no CAMEL), got {value!r}")
    if name == "camel_unknown" and value not in ("release", "continue"):
        raise ConfigError(f"{where}: must be release or continue, got {value!r}")
    if name == "camel_gt" and value != "" and not (str(value).isascii() and str(value).isdigit()):
        raise ConfigError(f"{where}: must be the E.164 digits of a global title, got {value!r}")
    if (
        name == "camel_redirect"
        and value != ""
        and not (str(value).isascii() and str(value).isdigit() and len(str(value)) <= 15)
    ):
        raise ConfigError(f"{where}: must be the E.164 digits (at most 15) of the number calls "
                          f"are redirected to, got {value!r}")  # fmt: skip
    if name == "camel_peers" and str(value).strip():
        try:
            PeerList.parse(str(value))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if name == "camel_dialogue_timeout":
        v = _seconds(value, where)
        if v <= 0:
            raise ConfigError(f"{where}: must be > 0")
        return v
    if name in _INT:
        if isinstance(value, str):
            try:
                value = ascii_int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: must be an integer, got {value!r}") from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        low = 0 if name in _PORTS else 1
        if value < low or (name in _PORTS and value > 65535):
            raise ConfigError(f"{where}: out of range: {value}")
        return value
    if name in _URLS and value and not str(value).startswith(("http://", "https://")):
        raise ConfigError(f"{where}: must be an http:// or https:// URL, got {value!r}")
    if name == "webhook_urls":
        for url in str(value).split(","):
            if url.strip() and not url.strip().startswith(("http://", "https://")):
                raise ConfigError(f"{where}: {url.strip()!r} is not an http(s):// URL")
        return str(value)
    if name in ("native_frame_timeout", "native_idle_timeout", "diameter_frame_timeout",
                "http_idle_timeout"):  # fmt: skip
        v = _seconds(value, where)
        if v < 0:
            raise ConfigError(f"{where}: must be >= 0 (0: no timeout)")
        return v
    if name in ("sweep_interval", "mediation_poll", "provisioning_timeout", "provisioning_backoff",
                "diameter_cer_timeout", "http_body_timeout"):  # fmt: skip
        v = _seconds(value, where)
        if v <= 0:
            raise ConfigError(f"{where}: must be > 0")
        return v
    if name == "redis_wait":
        v = _seconds(value, where)
        if v < 0:
            raise ConfigError(f"{where}: must be >= 0 seconds")
        return v
    if name == "archive_key":
        text = str(value).strip()
        if text and (len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text)):
            raise ConfigError(f"{where}: must be 64 hex digits (a 256-bit AES key)")
        return text
    if name == "appendfsync" and value not in ("everysec", "always", "no"):
        raise ConfigError(f"{where}: must be everysec, always or no, got {value!r}")
    if name == "durability" and value not in DURABILITY:
        raise ConfigError(f"{where}: must be one of {', '.join(DURABILITY)}, got {value!r}")
    if name == "redis_cluster_nodes" and str(value).strip():
        _cluster_url(str(value), where)
    if name == "redis_url":
        if value in ("", None):
            return None
        if not isinstance(value, str):
            raise ConfigError(
                f"{where}: must be a redis://, rediss://, unix://, redis+cluster:// or "
                "redis+sentinel:// URL"
            )
        if value.startswith("redis+cluster://"):
            return _cluster_url(value, where)
        if value.startswith("redis+sentinel://"):
            return _sentinel_url(value, where)
        try:
            parse_url(value)  # what the hot-path client will make of it, checked now
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value


def _cluster_url(value: str, where: str) -> str:
    """A ``redis+cluster://`` URL from itself or from a node list (ConfigError if bad)."""
    from ocs.store.cluster import CLUSTER_SCHEME, parse_cluster_url

    url = value if "://" in value else f"{CLUSTER_SCHEME}://{value.strip()}/"
    try:
        parse_cluster_url(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return url


def _sentinel_url(value: str, where: str) -> str:
    """A ``redis+sentinel://`` URL, checked (ConfigError if bad)."""
    from ocs.store.sentinel import parse_sentinel_url

    try:
        parse_sentinel_url(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value


def load_settings(
    env: Mapping[str, str],
    config_file: str | Path | None = None,
    overrides: Mapping[str, object] | None = None,
    sources: dict[str, str] | None = None,
) -> Settings:
    """Settings from a config file (``config_file`` or ``OCS_CONFIG``), the environment and
    explicit overrides (command-line flags, None meaning "not given").

    With ``sources``, it is filled with where each setting that is not its default came from
    (``env OCS_X``, ``config file P``, ``--flag``...; ``ocs config show``)."""
    names = {f.name for f in fields(Settings)} - {"extra"}
    values: dict[str, object] = {}
    where: dict[str, str] = {} if sources is None else sources
    path = config_file or env.get("OCS_CONFIG")
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {p}: cannot read: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p}: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config file {p}: nested too deep to be settings") from None
        for k, v in data.items():
            if k not in names:
                raise ConfigError(f"config file {p}: unknown setting {k!r}")
            values[k] = _coerce(k, v, f"config file {p}: {k}")
            where[k] = f"config file {p}"
    for k in SECRET_FILES:
        file = env.get(f"OCS_{k.upper()}_FILE")
        if file and env.get(f"OCS_{k.upper()}") is None:
            try:
                secret = Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"OCS_{k.upper()}_FILE: cannot read {file}: {exc.strerror}"
                ) from None
            values[k] = _coerce(k, secret, f"OCS_{k.upper()}_FILE")
            where[k] = f"env OCS_{k.upper()}_FILE"
    for k in names:
        v = env.get(f"OCS_{k.upper()}")
        if v is not None:
            values[k] = _coerce(k, v, f"OCS_{k.upper()}")
            where[k] = f"env OCS_{k.upper()}"
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = _coerce(k, v, f"--{k.replace('_', '-')}")
            where[k] = f"--{k.replace('_', '-')}"
    nodes = str(values.get("redis_cluster_nodes", "")).strip()
    if nodes:
        if values.get("redis_url"):
            raise ConfigError("OCS_REDIS_URL and OCS_REDIS_CLUSTER_NODES: give one of them")
        values["redis_url"] = _cluster_url(nodes, "OCS_REDIS_CLUSTER_NODES")
        where["redis_url"] = where.get("redis_cluster_nodes", "OCS_REDIS_CLUSTER_NODES")
    return replace(Settings(), **values)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """True when a listener bound to ``host`` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
