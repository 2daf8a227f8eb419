"""The Diameter Gy/Ro agent: Credit-Control-Requests in, charging engine verbs, answers out.

RFC 4006 (RFC 8506) credit control as 3GPP TS 32.299 uses it on Gy/Ro. The transport
(:mod:`protocols.diameter.server`) has already checked the request (required AVPs, unknown
M-bit AVPs...); this module decides what it means for the subscriber's balance.

How a CCR maps onto the engine:

* The subscriber is the first Subscription-Id of type END_USER_E164, else END_USER_IMSI.
* Every Multiple-Services-Credit-Control (MSCC) is a quota of its own: one engine session per
  (Session-Id, Rating-Group) -- ``"<Session-Id>#rg<N>"``, or ``#si<N>`` when only a
  Service-Identifier names it -- whose idempotency key is ``"<engine session>/<CC-Request-
  Number>"``. A repeated CCR (same Session-Id and number, T flag or not, here or at another
  OCS process) therefore gets the stored answer of every quota and is never charged twice.
  A CCR without MSCC uses the top-level Requested-/Used-Service-Unit as one quota,
  ``"<Session-Id>#ctx"``, of the service its Service-Context-Id names.
* INITIAL reserves; UPDATE commits the Used-Service-Unit and reserves the
  Requested-Service-Unit in one step (a quota not seen before is reserved); TERMINATION
  releases each reported quota with its final usage, and every other quota of the session
  still open; EVENT with Requested-Action DIRECT_DEBITING debits, REFUND_ACCOUNT credits the
  rated units back, CHECK_BALANCE answers Check-Balance-Result and PRICE_ENQUIRY
  Cost-Information.
* The service is the one of the subscriber's plan whose network ids hold the Rating-Group
  (with the Service-Context-Id if a service lists it), else the Service-Identifier, else the
  Service-Context-Id (``PlanVersion.service_for``); none: 5031 for that quota.
* Called-Party-Address (IMS-Information) or the SMS recipient (SMS-Information) is the
  destination; 3GPP-SGSN-MCC-MNC (PS-Information) the location.

Result codes: the Result-Code of each MSCC says how its quota went; the command-level one is
2001 when any quota succeeded (or none was asked for), otherwise the code of the first quota.
4011 (DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE) answers a quota whose usage the plan rates free
in every band (a free destination such as an emergency or toll-free number, or a free
service): RFC 4006 §9.1 defines it for "the service can be granted ... but no further credit
control is needed (e.g., service is free of charge)", so nothing is reserved and the gateway
sends no more reports for it. 5012 (store unavailable) carries Credit-Control-Failure-Handling
as configured (RFC 4006 §5.7), as does every successful CCA-INITIAL, so that the gateway
knows what to do if the OCS becomes unreachable later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ocs.charging.engine import ChargingEngine, wall_clock_ms
from ocs.charging.types import (
    ChargeResult,
    DebitRequest,
    Outcome,
    ReleaseRequest,
    SessionInfo,
)
from ocs.logs import SESSION_ID
from ocs.metrics import Metrics
from ocs.store.errors import StoreUnavailable
from ocs.tasks import cancel_all_and_wait
from protocols.diameter import (
    AnswerTemplate,
    Avp,
    Item,
    Message,
    Problem,
    RemotePeer,
    avp,
    error_answer,
    make_request,
)
from protocols.diameter import constants as c
from protocols.diameter.constants import (
    CcRequestType,
    CheckBalanceResult,
    CreditControlFailureHandling,
    FinalUnitAction,
    MultipleServicesIndicator,
    ReAuthRequestType,
    RequestedAction,
    SubscriptionIdType,
)
from protocols.diameter.dictionary import BY_NAME, AvpType
from tariffs import PlanVersion, RatingError
from tariffs.interface import UnitKind, UsageContext

__all__ = [
    "CCA_COPY",
    "PROTOCOL",
    "DiameterAgent",
    "GyConfig",
    "engine_session_id",
    "server_request",
]

log = logging.getLogger(__name__)

PROTOCOL: Final = "diameter"
#: AVPs every CCA copies from its CCR, error answers included (RFC 4006 §3.2).
CCA_COPY: Final = ("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number")

_VERBS: Final = {
    CcRequestType.INITIAL_REQUEST: "CCR-I",
    CcRequestType.UPDATE_REQUEST: "CCR-U",
    CcRequestType.TERMINATION_REQUEST: "CCR-T",
    CcRequestType.EVENT_REQUEST: "CCR-E",
}

#: CC-Request-Type by value (validate() let only these through); an enum call per request is
#: a lookup of its own.
_REQUEST_TYPES: Final = {t.value: t for t in CcRequestType}

_RESULT_CODES: Final = {
    Outcome.SUCCESS: c.DIAMETER_SUCCESS,
    Outcome.CREDIT_LIMIT_REACHED: c.DIAMETER_CREDIT_LIMIT_REACHED,
    Outcome.USER_UNKNOWN: c.DIAMETER_USER_UNKNOWN,
    Outcome.SERVICE_DENIED: c.DIAMETER_END_USER_SERVICE_DENIED,
    Outcome.RATING_FAILED: c.DIAMETER_RATING_FAILED,
    Outcome.UNKNOWN_SESSION: c.DIAMETER_UNKNOWN_SESSION_ID,
    Outcome.INVALID_REQUEST: c.DIAMETER_INVALID_AVP_VALUE,
    Outcome.STORE_UNAVAILABLE: c.DIAMETER_UNABLE_TO_COMPLY,
}

#: The charging outcome a Result-Code stands for: the metrics' ``outcome`` label, in the
#: native agent's words (one vocabulary for every protocol, a bounded set). The reverse of
#: _RESULT_CODES, and the codes answered without the engine: a free service (4011) is a
#: success, a malformed or unsupported request the client's error. :func:`outcome_of` takes
#: any other code by its class (RFC 6733, 7.1).
_OUTCOMES: Final[dict[int, str]] = {
    **{code: outcome.value for outcome, code in _RESULT_CODES.items()},
    c.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE: Outcome.SUCCESS.value,
    c.DIAMETER_MISSING_AVP: Outcome.INVALID_REQUEST.value,
    c.DIAMETER_COMMAND_UNSUPPORTED: Outcome.INVALID_REQUEST.value,
}


def outcome_of(result_code: int) -> str:
    """The ``outcome`` label of an answer with ``result_code`` (0: none): an Outcome value,
    or ``other`` for a transient failure (4xxx) the engine never answers."""
    found = _OUTCOMES.get(result_code)
    if found is not None:
        return found
    kind = result_code // 1000
    if kind == 2:
        return Outcome.SUCCESS.value
    if kind in (3, 5):  # protocol errors, permanent failures: the request cannot be served
        return Outcome.INVALID_REQUEST.value
    return "other"


#: The Granted-/Requested-/Used-Service-Unit member that counts each kind of unit.
_UNIT_AVP: Final = {
    UnitKind.SECONDS: "CC-Time",
    UnitKind.OCTETS: "CC-Total-Octets",
    UnitKind.EVENTS: "CC-Service-Specific-Units",
}
_UNIT_AVPS: Final = ("CC-Time", "CC-Total-Octets", "CC-Service-Specific-Units")

#: ISO 4217 numeric codes for Currency-Code (RFC 4006 §8.11), for the currencies plans use.
CURRENCY_CODES: Final = {
    "EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "SEK": 752, "NOK": 578, "DKK": 208,
    "PLN": 985, "CZK": 203, "HUF": 348, "RON": 946, "BGN": 975, "TRY": 949, "JPY": 392,
    "CNY": 156, "INR": 356, "AUD": 36, "CAD": 124, "ZAR": 710, "NGN": 566, "KES": 404,
    "GHS": 936, "EGP": 818, "MAD": 504, "AED": 784, "SAR": 682, "BRL": 986, "MXN": 484,
    "IDR": 360, "PHP": 608, "PKR": 586, "BDT": 50, "XOF": 952, "XAF": 950,
}  # fmt: skip

#: Gateways' open sessions remembered per process (beyond it the cache starts afresh; the
#: store still knows every session).
_SESSION_CACHE: Final = 200_000


def engine_session_id(
    session_id: str, rating_group: int | None, service_identifier: int | None
) -> str:
    """The engine session of one quota of a Diameter session."""
    if rating_group is not None:
        return f"{session_id}#rg{rating_group}"
    if service_identifier is not None:
        return f"{session_id}#si{service_identifier}"
    return f"{session_id}#ctx"


@dataclass(frozen=True, slots=True)
class GyConfig:
    """What the agent says about itself and its failure handling."""

    origin_host: str
    origin_realm: str
    #: Credit-Control-Failure-Handling sent with 5012 and with every successful CCA-I.
    failure_handling: CreditControlFailureHandling = (
        CreditControlFailureHandling.RETRY_AND_TERMINATE
    )
    #: Per service (by name) overrides of ``failure_handling``.
    failure_handling_by_service: Mapping[str, CreditControlFailureHandling] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class _Quota:
    """One MSCC (or the top level of a CCR without MSCC) and what became of it."""

    key: str
    rating_group: int | None
    service_identifier: int | None
    #: A Requested-Service-Unit was present (empty: the server decides).
    requested: bool
    requested_units: int | None
    used: int
    has_used: bool
    #: The unit AVP the gateway used (CC-Time...), None when it named none.
    unit_avp: str | None
    service: str | None = None
    # -- the answer
    result_code: int = c.DIAMETER_SUCCESS
    granted: int = 0
    final: bool = False
    validity: int = 0
    #: The AVP the grant is counted in (CC-Time...).
    grant_avp: str = "CC-Time"
    #: Released because the CCR-T did not report it: not answered.
    hidden: bool = False


@dataclass(slots=True)
class _GySession:
    """What this process knows of a gateway's open session."""

    subscriber: str
    plan: str
    #: The gateway's Origin-Host and Origin-Realm (where a RAR or an ASR goes).
    peer: str
    #: Engine session id -> service, for the quotas open now.
    quotas: dict[str, str]
    realm: str = ""


#: How the agent sends a request of its own (RAR, ASR): (peer Origin-Host, request) -> answer;
#: ConnectionError when the peer is not connected here, TimeoutError when it does not answer.
Sender = Callable[[str, Message], Awaitable[Message]]

#: Barring levels, to tell a bar from a lift.
_BAR_LEVEL: Final = {"none": 0, "outgoing": 1, "all": 2}


def server_request(
    command: int, sid: str, origin_host: str, origin_realm: str, peer: str, peer_realm: str
) -> Message:
    """A Re-Auth-Request (``c.CMD_RE_AUTH``: RFC 6733 §8.3, RFC 4006 §5.5, AUTHORIZE_ONLY) or
    an Abort-Session-Request (``c.CMD_ABORT_SESSION``: RFC 6733 §8.5) for a Gy session."""
    items: list[Item] = [
        ("Session-Id", sid),
        ("Origin-Host", origin_host),
        ("Origin-Realm", origin_realm),
        ("Destination-Realm", peer_realm),
        ("Destination-Host", peer),
        ("Auth-Application-Id", c.APP_CREDIT_CONTROL),
    ]
    if command == c.CMD_RE_AUTH:
        items.append(("Re-Auth-Request-Type", ReAuthRequestType.AUTHORIZE_ONLY))
    return make_request(
        command, c.APP_CREDIT_CONTROL, items, hop_by_hop=0, end_to_end=0, proxiable=True
    )


class _Ccr:
    """What the agent reads of a CCR's top level, found in one pass by code (the request has
    passed validate(): each AVP is of its type and size)."""

    __slots__ = ("context", "kind", "msccs", "number", "service_information", "session_id",
                 "subscription_ids")  # fmt: skip

    def __init__(self, request: Message) -> None:
        self.session_id: str | None = None
        self.kind = 0
        self.number = 0
        self.msccs: list[Avp] = []
        self.subscription_ids: list[Avp] = []
        self.service_information: Avp | None = None
        self.context = ""
        kind = number = context = sid = False
        for a in request.avps:
            code = a.code
            if a.vendor:
                if (
                    code == _SERVICE_INFORMATION
                    and a.vendor == _SERVICE_INFORMATION_VENDOR
                    and self.service_information is None
                ):
                    self.service_information = a
            elif code == _MSCC:
                self.msccs.append(a)
            elif code == _SUBSCRIPTION_ID:
                self.subscription_ids.append(a)
            elif code == _SESSION_ID_CODE:
                if not sid:
                    sid = True
                    value = a.value
                    self.session_id = value if type(value) is str else None
            elif code == _CC_REQUEST_TYPE:
                if not kind:
                    kind = True
                    self.kind = int.from_bytes(a.data, "big", signed=True)
            elif code == _CC_REQUEST_NUMBER:
                if not number:
                    number = True
                    self.number = int.from_bytes(a.data, "big")
            elif code == _SERVICE_CONTEXT_ID and not context:
                context = True
                value = a.value
                self.context = value if type(value) is str else ""


class _Answer(Exception):
    """Stop handling a CCR: answer with this Result-Code (and Failed-AVP bytes)."""

    def __init__(self, result_code: int, detail: str = "", failed_avp: bytes | None = None) -> None:
        super().__init__(detail)
        self.problem = Problem(result_code, detail, failed_avp)


def _subscriber(subscription_ids: Sequence[Avp]) -> str | None:
    """The first END_USER_E164 Subscription-Id-Data, else the first END_USER_IMSI one."""
    # (by code, in one pass: the request has passed validate(), so each member's value is of
    # its type and size; an Enumerated is a signed 32-bit number)
    imsi: str | None = None
    for sub in subscription_ids:
        kind = data = None
        for a in sub.avps:
            if a.vendor:
                continue
            if a.code == _SUBSCRIPTION_ID_TYPE and kind is None:
                kind = int.from_bytes(a.data, "big", signed=True)
            elif a.code == _SUBSCRIPTION_ID_DATA and data is None:
                data = a.value
        if data:
            if kind == SubscriptionIdType.END_USER_E164:
                return data  # type: ignore[no-any-return]
            if kind == SubscriptionIdType.END_USER_IMSI and imsi is None:
                imsi = data
    return imsi


def _number(address: str) -> str:
    """'tel:+4930123;phone-context=x', 'sip:+4930123@ims.example;user=phone' -> '+4930123'."""
    a = address.strip()
    for scheme in ("tel:", "sip:", "sips:"):
        if a.lower().startswith(scheme):
            a = a[len(scheme) :]
            break
    return a.split("@", 1)[0].split(";", 1)[0]


def _session_info(si: Avp | None) -> SessionInfo:
    """The rating inputs a Service-Information holds, read once per distinct AVP."""
    if si is None:
        return _NO_INFO
    key = (_SERVICE_INFORMATION, si.data)
    found = _READ.get(key)
    if found is None:
        found = _remember_read(key, _read_session_info(si))
    return found  # type: ignore[no-any-return]


def _read_session_info(si: Avp) -> SessionInfo:
    destination = si.get_str("IMS-Information", "Called-Party-Address") or ""
    if not destination:
        sms = si.find("SMS-Information")
        if sms is not None:
            destination = (
                sms.get_str("Recipient-Info", "Recipient-Address", "Address-Data")
                or sms.get_str("Recipient-Address", "Address-Data")
                or ""
            )
    location = si.get_str("PS-Information", "3GPP-SGSN-MCC-MNC") or ""
    return SessionInfo(_number(destination) if destination else "", location)


#: Codes (vendor 0) of the unit AVPs, in the order ``_units`` prefers them, and of the
#: members ``_quota`` reads.
_UNIT_CODES: Final = tuple(BY_NAME[n].code for n in _UNIT_AVPS)
_UNIT_RANK: Final = {code: i for i, code in enumerate(_UNIT_CODES)}
_INPUT_OCTETS: Final = BY_NAME["CC-Input-Octets"].code
_OUTPUT_OCTETS: Final = BY_NAME["CC-Output-Octets"].code
_RATING_GROUP: Final = BY_NAME["Rating-Group"].code
_SERVICE_IDENTIFIER: Final = BY_NAME["Service-Identifier"].code
_RSU: Final = BY_NAME["Requested-Service-Unit"].code
_USU: Final = BY_NAME["Used-Service-Unit"].code
_MSCC: Final = BY_NAME["Multiple-Services-Credit-Control"].code
_SUBSCRIPTION_ID: Final = BY_NAME["Subscription-Id"].code
_SUBSCRIPTION_ID_TYPE: Final = BY_NAME["Subscription-Id-Type"].code
_SUBSCRIPTION_ID_DATA: Final = BY_NAME["Subscription-Id-Data"].code
_CC_REQUEST_TYPE: Final = BY_NAME["CC-Request-Type"].code
_CC_REQUEST_NUMBER: Final = BY_NAME["CC-Request-Number"].code
_SERVICE_CONTEXT_ID: Final = BY_NAME["Service-Context-Id"].code
_SESSION_ID_CODE: Final = BY_NAME["Session-Id"].code
_SERVICE_INFORMATION: Final = BY_NAME["Service-Information"].code
_SERVICE_INFORMATION_VENDOR: Final = BY_NAME["Service-Information"].vendor
_CCFH: Final = BY_NAME["Credit-Control-Failure-Handling"].code


def _int(found: Avp) -> int:
    value = found.value
    if type(value) is not int:
        raise TypeError(f"{found.name} is not an integer AVP")
    return value


#: The Unsigned32/64 members ``_quota`` reads: their value is their data as a big-endian
#: number (the decoder has checked each one's size: a message where one is wrong never gets
#: here), read without a decode per AVP.
_UNSIGNED_CODES: Final = frozenset(
    BY_NAME[n].code
    for n in (*_UNIT_AVPS, "CC-Input-Octets", "CC-Output-Octets", "Rating-Group",
              "Service-Identifier")
    if BY_NAME[n].type in (AvpType.UNSIGNED32, AvpType.UNSIGNED64) and not BY_NAME[n].vendor
)  # fmt: skip


def _uint(found: Avp) -> int:
    if found.code in _UNSIGNED_CODES and found.definition is not None:
        return int.from_bytes(found.data, "big")
    return _int(found)


def _units(unit: Avp | None) -> tuple[int | None, str | None]:
    """The amount and AVP name of the first unit type a *-Service-Unit holds (CC-Time, else
    CC-Total-Octets, else CC-Service-Specific-Units, else CC-Input- plus CC-Output-Octets; the
    first instance of each), in one pass over its members."""
    if unit is None:
        return None, None
    rank, best = len(_UNIT_CODES), None
    inputs = outputs = None
    for a in unit.avps:
        if a.vendor:
            continue
        code = a.code
        r = _UNIT_RANK.get(code)
        if r is not None:
            if r < rank:
                rank, best = r, a
        elif code == _INPUT_OCTETS and inputs is None:
            inputs = a
        elif code == _OUTPUT_OCTETS and outputs is None:
            outputs = a
    if best is not None:
        return _uint(best), _UNIT_AVPS[rank]
    if inputs is not None or outputs is not None:
        total = (0 if inputs is None else _uint(inputs)) + (
            0 if outputs is None else _uint(outputs)
        )
        return total, "CC-Total-Octets"
    return None, None


#: What the agent read of an AVP, by (its code, its data): a gateway sends the same MSCC (the
#: same Requested-Service-Unit and Rating-Group) and Service-Information again and again, and
#: the decoder hands the same bytes in (often the same object, docs/diameter.md, Speed).
#: Bounded: emptied when full.
_READ: dict[tuple[int, bytes], Any] = {}
_READ_SIZE: Final = 8192
_NO_INFO: Final = SessionInfo()


def _remember_read(key: tuple[int, bytes], value: Any) -> Any:
    if len(_READ) >= _READ_SIZE:
        _READ.clear()
    _READ[key] = value
    return value


def _mscc_quota(session_id: str, mscc: Avp) -> _Quota:
    """The quota of one MSCC (its members read once per distinct MSCC)."""
    key = (_MSCC, mscc.data)
    found = _READ.get(key)
    if found is None:
        q = _quota("", mscc, False)
        found = _remember_read(
            key,
            (q.rating_group, q.service_identifier, q.requested, q.requested_units, q.used,
             q.has_used, q.unit_avp),
        )  # fmt: skip
    rg, si, requested, requested_units, used, has_used, unit_avp = found
    return _Quota(engine_session_id(session_id, rg, si), rg, si, requested, requested_units,
                  used, has_used, unit_avp)  # fmt: skip


def _quota(session_id: str, where: Message | Avp, top_level: bool) -> _Quota:
    rg_avp = si_avp = rsu = None
    usus: list[Avp] = []
    # One pass over the members (the first Rating-Group, Service-Identifier and
    # Requested-Service-Unit, every Used-Service-Unit), instead of one find per AVP.
    for a in where.avps:
        if a.vendor:
            continue
        code = a.code
        if code == _USU:
            usus.append(a)
        elif code == _RSU:
            if rsu is None:
                rsu = a
        elif code == _RATING_GROUP:
            if rg_avp is None:
                rg_avp = a
        elif code == _SERVICE_IDENTIFIER and si_avp is None:
            si_avp = a
    rg = None if top_level or rg_avp is None else _uint(rg_avp)
    si = None if top_level or si_avp is None else _uint(si_avp)
    requested_units, unit_avp = _units(rsu)
    used, has_used = 0, False
    for usu in usus:
        n, name = _units(usu)
        if n is not None:
            used += n
            has_used = True
            unit_avp = unit_avp or name
    return _Quota(
        engine_session_id(session_id, rg, si),
        rg,
        si,
        rsu is not None,
        requested_units or None,
        used,
        has_used,
        unit_avp,
    )


async def _nothing() -> None:
    return None


def _failed(name: str, value: Item | None = None) -> bytes:
    """An example AVP for Failed-AVP (RFC 6733 §7.5)."""
    definition = BY_NAME[name]
    if value is None:
        return Avp(definition.code, definition.flags, definition.vendor, bytes(4),
                   definition).to_bytes()  # fmt: skip
    return avp(*value).to_bytes() if isinstance(value, tuple) else value.to_bytes()


def _unit_value(micro: int) -> list[Item]:
    """Unit-Value (RFC 4006 §8.8) of an amount of micro-units, trailing zeros folded."""
    digits, exponent = micro, -6
    while digits and digits % 10 == 0 and exponent < 0:
        digits //= 10
        exponent += 1
    return [("Value-Digits", digits), ("Exponent", exponent)]


#: Answer AVPs built once and shared (an Avp is immutable): (name, value) or a grouped key.
_AVP_CACHE: dict[Any, Avp] = {}
_AVP_CACHE_SIZE: Final = 4096


def _cached(name: str, value: int) -> Avp:
    """The AVP ``name`` with the integer ``value``, built once."""
    key = (name, value)
    found = _AVP_CACHE.get(key)
    if found is None:
        if len(_AVP_CACHE) >= _AVP_CACHE_SIZE:
            _AVP_CACHE.clear()
        found = _AVP_CACHE[key] = avp(name, value)
    return found


def _gsu(unit_avp: str, granted: int) -> Avp:
    """Granted-Service-Unit holding ``granted`` in ``unit_avp`` (CC-Time...)."""
    key = ("GSU", unit_avp, granted)
    found = _AVP_CACHE.get(key)
    if found is None:
        if len(_AVP_CACHE) >= _AVP_CACHE_SIZE:
            _AVP_CACHE.clear()
        found = _AVP_CACHE[key] = avp("Granted-Service-Unit", [(unit_avp, granted)])
    return found


#: Final-Unit-Indication with Final-Unit-Action TERMINATE.
_FUI: Final = avp("Final-Unit-Indication", [("Final-Unit-Action", FinalUnitAction.TERMINATE)])


def _mscc(q: _Quota) -> Avp:
    """The answer's Multiple-Services-Credit-Control for one quota."""
    validity = q.validity if q.granted else 0
    key = ("MSCC", q.granted, q.grant_avp, q.service_identifier, q.rating_group, validity,
           q.result_code, q.final)  # fmt: skip
    found = _AVP_CACHE.get(key)
    if found is not None:
        return found
    m: list[Item] = []
    if q.granted:
        m.append(_gsu(q.grant_avp, q.granted))
    if q.service_identifier is not None:
        m.append(("Service-Identifier", q.service_identifier))
    if q.rating_group is not None:
        m.append(("Rating-Group", q.rating_group))
    if validity:
        m.append(("Validity-Time", validity))
    m.append(("Result-Code", q.result_code))
    if q.final:
        m.append(_FUI)
    found = avp("Multiple-Services-Credit-Control", m)
    if len(_AVP_CACHE) >= _AVP_CACHE_SIZE:
        _AVP_CACHE.clear()
    _AVP_CACHE[key] = found
    return found


class DiameterAgent:
    """The handler the Diameter server calls for each application request."""

    def __init__(
        self,
        engine: ChargingEngine,
        plans: Callable[[str, int], PlanVersion],
        config: GyConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.engine = engine
        self.plans = plans
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._sessions: dict[str, _GySession] = {}
        #: Subscriber -> the Session-Ids of theirs open here (for RAR and ASR).
        self._by_subscriber: dict[str, set[str]] = {}
        #: Sends RAR and ASR; set by the owner of the Diameter server (ocs/service.py).
        self.sender: Sender | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._services: dict[tuple[str, int, int | None, int | None, str], str | None] = {}
        self._answers = AnswerTemplate(config.origin_host, config.origin_realm, CCA_COPY)

    # -- entry ----------------------------------------------------------------------------------

    async def __call__(self, request: Message, peer: RemotePeer) -> Message:
        if request.command_code != c.CMD_CREDIT_CONTROL:
            return self._error(
                request,
                Problem(c.DIAMETER_COMMAND_UNSUPPORTED, f"{request.name} is not supported"),
            )
        t0 = time.perf_counter()
        ccr = _Ccr(request)
        kind = _REQUEST_TYPES[ccr.kind]  # (validated: known)
        try:
            # (the CCR handled here, not in a coroutine of its own: docs/diameter.md, Speed)
            sid = ccr.session_id
            assert sid is not None  # validated by the server (5005 otherwise)
            SESSION_ID.set(sid)
            number = ccr.number
            msccs = ccr.msccs
            quotas = [_mscc_quota(sid, m) for m in msccs]
            if not msccs and not self._multiple_services(request, kind):
                quotas = [_quota(sid, request, True)]
            subscriber = _subscriber(ccr.subscription_ids)
            items: list[Item] = []
            if kind is CcRequestType.INITIAL_REQUEST:
                await self._initial(ccr, sid, number, subscriber, quotas, peer)
                items.append(_cached("Credit-Control-Failure-Handling",
                                     self._failure_handling(quotas)))  # fmt: skip
            elif kind is CcRequestType.UPDATE_REQUEST:
                await self._update(ccr, sid, number, subscriber, quotas, peer)
            elif kind is CcRequestType.TERMINATION_REQUEST:
                await self._termination(sid, number, subscriber, quotas)
            else:
                items += await self._event(request, sid, number, subscriber, quotas)
            answer = self._cca(request, quotas, top_level=not msccs, items=items)
        except _Answer as exc:
            answer = self._error(request, exc.problem)
        except StoreUnavailable as exc:
            answer = self._error(request, Problem(c.DIAMETER_UNABLE_TO_COMPLY, str(exc)),
                                 failure=True)  # fmt: skip
        if self.metrics is not None:
            code = answer.result_code or 0
            self.metrics.observe(PROTOCOL, _VERBS[kind], outcome_of(code),
                                 time.perf_counter() - t0)  # fmt: skip
            if code == c.DIAMETER_UNABLE_TO_COMPLY:
                self.metrics.redis_error()
        return answer

    def _error(self, request: Message, problem: Problem, *, failure: bool = False) -> Message:
        items: list[Item] = []
        if failure or problem.result_code == c.DIAMETER_UNABLE_TO_COMPLY:
            items.append(("Credit-Control-Failure-Handling", self.config.failure_handling))
        return error_answer(
            request,
            problem,
            origin_host=self.config.origin_host,
            origin_realm=self.config.origin_realm,
            copy=CCA_COPY,
            items=items,
        )

    # -- CCR --------------------------------------------------------------------------------

    @staticmethod
    def _multiple_services(request: Message, kind: CcRequestType) -> bool:
        # RFC 4006 §5.1.2: a client that supports MSCC may open the session without one and
        # ask for quotas later; only the top-level units of a CCR-I or CCR-E need a service.
        msi = request.get_int("Multiple-Services-Indicator")
        return msi == MultipleServicesIndicator.MULTIPLE_SERVICES_SUPPORTED and not (
            request.find("Requested-Service-Unit") or request.find("Used-Service-Unit")
        )

    def _failure_handling(self, quotas: Sequence[_Quota]) -> CreditControlFailureHandling:
        by_service = self.config.failure_handling_by_service
        for q in quotas:
            if q.service is not None and q.service in by_service:
                return by_service[q.service]
        return self.config.failure_handling

    # -- services -------------------------------------------------------------------------------

    async def _plan(self, subscriber: str | None) -> str:
        if subscriber is None:
            raise _Answer(
                c.DIAMETER_MISSING_AVP,
                "no Subscription-Id of type END_USER_E164 or END_USER_IMSI",
                _failed(
                    "Subscription-Id",
                    ("Subscription-Id", [("Subscription-Id-Type", 0),
                                         ("Subscription-Id-Data", "")]),
                ),
            )  # fmt: skip
        plan = await self.engine.plan_of(subscriber)
        if plan is None:
            raise _Answer(c.DIAMETER_USER_UNKNOWN, f"unknown subscriber {subscriber}")
        return plan

    def _service(self, plan: str, now: int, q: _Quota, context: str) -> str | None:
        try:
            version = self.plans(plan, now)
        except RatingError:
            return None
        key = (version.name, version.version, q.rating_group, q.service_identifier, context)
        if key in self._services:
            return self._services[key]
        found: str | None = None
        if q.rating_group is not None:
            found = version.service_for(
                rating_group=q.rating_group, service_context=context
            ) or version.service_for(rating_group=q.rating_group)
        if found is None and q.service_identifier is not None:
            found = version.service_for(service_identifier=q.service_identifier)
        if found is None and q.rating_group is None and q.service_identifier is None:
            found = version.service_for(service_context=context)
        if len(self._services) > 10_000:
            self._services.clear()
        self._services[key] = found
        return found

    def _free(self, plan: str, subscriber: str, q: _Quota, info: SessionInfo, now: int) -> bool:
        assert q.service is not None
        ctx = UsageContext(plan=plan, service=q.service, subscriber=subscriber, started_at=now,
                           destination=info.destination, location=info.location)  # fmt: skip
        rater = self.engine.rater
        try:
            return rater.service(ctx).free
        finally:
            rater.forget(ctx)

    def _unit_avp(self, q: _Quota, plan: str | None, now: int) -> str:
        """The AVP a grant is counted in: the service's unit, else what the gateway used."""
        if q.service is not None and plan is not None:
            try:
                unit = self.plans(plan, now).services[q.service].unit
            except (RatingError, KeyError):
                pass
            else:
                return _UNIT_AVP[unit]
        return q.unit_avp or ("CC-Total-Octets" if q.rating_group is not None else "CC-Time")

    def _requested(
        self, q: _Quota, plan: str | None, now: int, unit: str | None = None
    ) -> int | None:
        """Units asked for in the service's unit (None: the server decides); ``unit``: that
        unit's AVP when the caller has it already (``_unit_avp``)."""
        if q.requested_units is None:
            return None
        if q.unit_avp != (unit if unit is not None else self._unit_avp(q, plan, now)):
            return None
        return q.requested_units

    # -- sessions -------------------------------------------------------------------------------

    def _remember(self, sid: str, session: _GySession) -> None:
        if sid not in self._sessions and len(self._sessions) >= _SESSION_CACHE:
            self._sessions.clear()
            self._by_subscriber.clear()
        self._sessions[sid] = session
        self._by_subscriber.setdefault(session.subscriber, set()).add(sid)

    def _forget(self, sid: str) -> _GySession | None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            sids = self._by_subscriber.get(session.subscriber)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._by_subscriber[session.subscriber]
        return session

    async def _recover(self, sid: str, subscriber: str | None) -> _GySession | None:
        """A session this process has not seen (failover): its open quotas from the store."""
        if subscriber is None:
            return None
        acct = await self.engine.store.get_account(subscriber)
        if acct is None:
            return None
        prefix = f"{sid}#"
        quotas = {s.session_id: s.service for s in acct.sessions
                  if s.session_id.startswith(prefix)}  # fmt: skip
        if not quotas:
            return None
        return _GySession(subscriber, acct.plan, "", quotas)

    # -- requests we originate: RAR and ASR ------------------------------------------------------

    def on_notification(self, fields: Mapping[str, str]) -> None:
        """A change to an account that its open sessions here must hear of (from the
        notification stream): a top-up or a lifted bar means more may be used (RAR: the
        gateway asks again with CCR-UPDATE); a bar on outgoing service, less (RAR: the
        gateway's next CCR-UPDATE is refused); a bar on all service or a suspension ends the
        sessions (ASR: the gateway sends CCR-TERMINATION)."""
        sids = self._by_subscriber.get(fields.get("sub", ""))
        if not sids or self.sender is None:
            return
        kind = fields.get("t")
        if kind == "barring":
            bar, was = fields.get("bar", "none"), fields.get("was", "none")
            if _BAR_LEVEL.get(bar, 0) == _BAR_LEVEL.get(was, 0):
                return  # a crossing that changes nothing (a "notify" threshold)
            command = c.CMD_ABORT_SESSION if bar == "all" else c.CMD_RE_AUTH
        elif kind == "credit":
            command = c.CMD_RE_AUTH
        else:
            return
        for sid in list(sids):
            self._spawn(self._server_request(sid, command))

    def on_plans_changed(self, names: Collection[str]) -> None:
        """New tariffs: every open session here on one of these plans re-authorises (RAR)."""
        if self.sender is None:
            return
        for sid, session in list(self._sessions.items()):
            if session.plan in names:
                self._spawn(self._server_request(sid, c.CMD_RE_AUTH))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the RARs and ASRs still waiting for their answers."""
        try:
            await cancel_all_and_wait(list(self._tasks))
        except Exception:  # (one RAR's failure is not the shutdown's)
            log.exception("diameter: a RAR/ASR task failed")

    async def _server_request(self, sid: str, command: int) -> None:
        session = self._sessions.get(sid)
        if session is None or not session.peer or self.sender is None:
            return
        request = server_request(
            command, sid, self.config.origin_host, self.config.origin_realm, session.peer,
            session.realm or self.config.origin_realm,
        )  # fmt: skip
        verb = "rar" if command == c.CMD_RE_AUTH else "asr"
        t0 = time.perf_counter()
        try:
            answer = await self.sender(session.peer, request)
        except (ConnectionError, TimeoutError) as exc:
            # The gateway is not connected here (it may be at another OCS process) or does
            # not answer: forget it here; the store releases what it holds at expiry.
            log.info("%s for %s not delivered: %s", verb.upper(), sid, exc or "timeout")
            self._forget(sid)
            outcome = "undelivered"
        else:
            outcome = outcome_of(answer.result_code or 0)
            if answer.result_code == c.DIAMETER_UNKNOWN_SESSION_ID:
                await self._gone(sid)
        if self.metrics is not None:
            self.metrics.observe(PROTOCOL, verb, outcome, time.perf_counter() - t0)

    async def _gone(self, sid: str) -> None:
        """The gateway no longer knows the session: release what it holds (no usage)."""
        session = self._forget(sid)
        if session is None:
            return
        for key in list(session.quotas):
            with contextlib.suppress(StoreUnavailable):  # (expiry releases it then)
                await self.engine.release(
                    ReleaseRequest(key, f"{key}/gone", used=0), subscriber=session.subscriber
                )

    # -- the request types ----------------------------------------------------------------------

    async def _initial(
        self,
        ccr: _Ccr,
        sid: str,
        number: int,
        subscriber: str | None,
        quotas: list[_Quota],
        peer: RemotePeer,
    ) -> None:
        plan = await self._plan(subscriber)
        assert subscriber is not None
        now = self.clock()
        info = _session_info(ccr.service_information)
        context = ccr.context
        session = self._sessions.get(sid) or _GySession(
            subscriber, plan, peer.origin_host, {}, peer.origin_realm
        )
        self._remember(sid, session)
        await self._each(
            [self._reserve(q, sid, number, subscriber, plan, context, info, now, session)
             for q in quotas]
        )  # fmt: skip

    async def _reserve(
        self,
        q: _Quota,
        sid: str,
        number: int,
        subscriber: str,
        plan: str,
        context: str,
        info: SessionInfo,
        now: int,
        session: _GySession,
    ) -> None:
        q.service = self._service(plan, now, q, context)
        if q.service is None:
            q.result_code = c.DIAMETER_RATING_FAILED
            return
        try:
            free = self._free(plan, subscriber, q, info, now)
        except RatingError:
            q.result_code = c.DIAMETER_RATING_FAILED
            return
        if free:
            q.result_code = c.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE
            return
        q.grant_avp = self._unit_avp(q, plan, now)
        r = await self.engine.reserve_units(
            # (at=now: the rating context _free built is the engine's too, priced once)
            q.key, subscriber, q.service, f"{q.key}/{number}",
            self._requested(q, plan, now, q.grant_avp),
            info.destination, info.location, now, PROTOCOL,
        )  # fmt: skip
        self._settled(q, r)
        if r.ok:
            session.quotas[q.key] = q.service

    async def _update(
        self,
        ccr: _Ccr,
        sid: str,
        number: int,
        subscriber: str | None,
        quotas: list[_Quota],
        peer: RemotePeer,
    ) -> None:
        session = self._sessions.get(sid)
        if subscriber is None and session is not None:
            subscriber = session.subscriber
        now = self.clock()
        plan = session.plan if session is not None else None
        if plan is None and subscriber is not None:
            plan = await self.engine.plan_of(subscriber)
        known = session.quotas if session is not None else {}
        jobs = []
        for q in quotas:
            q.service = known.get(q.key)
            if q.has_used or q.key in known:
                jobs.append(self._commit(q, number, subscriber, plan, now))
                continue
            # A quota not seen before: the session must exist (here, or in the store after a
            # failover) for it to be opened by an UPDATE.
            if session is None:
                session = await self._recover(sid, subscriber)
                if session is not None:
                    session.peer, session.realm = peer.origin_host, peer.origin_realm
                    self._remember(sid, session)
            if session is None or subscriber is None or plan is None:
                jobs.append(self._commit(q, number, subscriber, plan, now))
                continue
            jobs.append(self._reserve(q, sid, number, subscriber, plan, ccr.context,
                                      _session_info(ccr.service_information), now,
                                      session))  # fmt: skip
        await self._each(jobs)
        if (
            session is None
            and subscriber is not None
            and plan is not None
            and any(q.result_code == c.DIAMETER_SUCCESS for q in quotas)
        ):
            session = _GySession(subscriber, plan, peer.origin_host, {}, peer.origin_realm)
            self._remember(sid, session)
        if session is not None:
            for q in quotas:
                if q.result_code == c.DIAMETER_UNKNOWN_SESSION_ID:
                    session.quotas.pop(q.key, None)
                elif q.result_code == c.DIAMETER_SUCCESS and q.key not in session.quotas:
                    session.quotas[q.key] = q.service or ""

    async def _commit(
        self, q: _Quota, number: int, subscriber: str | None, plan: str | None, now: int
    ) -> None:
        q.grant_avp = self._unit_avp(q, plan, now)
        if not q.requested:
            next_units: int | None = 0
        else:
            next_units = self._requested(q, plan, now, q.grant_avp)
        r = await self.engine.settle(
            q.key,
            f"{q.key}/{number}",
            q.used,
            subscriber,
            next_units=next_units,
            end=False,
            protocol=PROTOCOL,
        )
        self._settled(q, r)

    async def _termination(
        self, sid: str, number: int, subscriber: str | None, quotas: list[_Quota]
    ) -> None:
        session = self._forget(sid)
        if session is None:
            session = await self._recover(sid, subscriber)
        if subscriber is None and session is not None:
            subscriber = session.subscriber
        reported = {q.key for q in quotas}
        # Quotas the gateway did not report are released with no usage (RFC 4006 §5.2.2: the
        # CCR-T ends every quota of the session).
        others = [] if session is None else [k for k in session.quotas if k not in reported]
        if not quotas and not others:
            raise _Answer(c.DIAMETER_UNKNOWN_SESSION_ID, f"no open session {sid!r}")
        for key in others:
            quotas.append(_Quota(key, None, None, False, None, 0, False, None, hidden=True))
        await self._each([self._release(q, number, subscriber) for q in quotas])

    async def _release(self, q: _Quota, number: int, subscriber: str | None) -> None:
        r = await self.engine.settle(
            q.key, f"{q.key}/{number}", q.used, subscriber, next_units=0, end=True
        )
        self._settled(q, r)

    async def _event(
        self,
        request: Message,
        sid: str,
        number: int,
        subscriber: str | None,
        quotas: list[_Quota],
    ) -> list[Item]:
        plan = await self._plan(subscriber)
        assert subscriber is not None
        now = self.clock()
        info = _session_info(request.find("Service-Information"))
        context = request.get_str("Service-Context-Id", default="")
        action = request.get_int("Requested-Action", default=RequestedAction.DIRECT_DEBITING)
        for q in quotas:
            q.service = self._service(plan, now, q, context)
            if q.service is None:
                q.result_code = c.DIAMETER_RATING_FAILED
        rateable = [q for q in quotas if q.service is not None]
        if action in (RequestedAction.DIRECT_DEBITING, RequestedAction.REFUND_ACCOUNT):
            refund = action == RequestedAction.REFUND_ACCOUNT
            await self._each(
                [self._debit(q, number, subscriber, plan, info, now, refund) for q in rateable]
            )
            if refund:
                total = sum(q.granted for q in rateable if q.result_code == c.DIAMETER_SUCCESS)
                for q in rateable:
                    q.granted = 0
                return self._cost_information(plan, now, total)
            return []
        # CHECK_BALANCE and PRICE_ENQUIRY: nothing changes, no quota is answered.
        cost = 0
        for q in rateable:
            units = self._requested(q, plan, now) or q.used or 1
            ctx = UsageContext(plan=plan, service=q.service or "", subscriber=subscriber,
                               started_at=now, destination=info.destination,
                               location=info.location)  # fmt: skip
            try:
                cost += self.engine.rater.cost(ctx, units)
            except RatingError as exc:
                raise _Answer(c.DIAMETER_RATING_FAILED, str(exc)) from exc
            finally:
                self.engine.rater.forget(ctx)
        if rateable != quotas:
            raise _Answer(c.DIAMETER_RATING_FAILED, "no service for the request")
        quotas.clear()
        if action == RequestedAction.PRICE_ENQUIRY:
            return self._cost_information(plan, now, cost)
        balance = await self.engine.balance(subscriber)
        if balance.outcome is not Outcome.SUCCESS:
            raise _Answer(_RESULT_CODES[balance.outcome], balance.detail)
        enough = balance.state not in ("barred-all", "suspended") and (
            balance.available + balance.credit_limit >= cost
        )
        result = CheckBalanceResult.ENOUGH_CREDIT if enough else CheckBalanceResult.NO_CREDIT
        return [("Check-Balance-Result", result)]

    def _cost_information(self, plan: str, now: int, micro: int) -> list[Item]:
        try:
            currency = self.plans(plan, now).currency
        except RatingError:
            currency = ""
        items: list[Item] = [("Unit-Value", _unit_value(micro))]
        code = CURRENCY_CODES.get(currency.upper())
        items.append(("Currency-Code", code if code is not None else 0))
        return [("Cost-Information", items)]

    async def _debit(
        self,
        q: _Quota,
        number: int,
        subscriber: str,
        plan: str,
        info: SessionInfo,
        now: int,
        refund: bool,
    ) -> None:
        assert q.service is not None
        q.grant_avp = self._unit_avp(q, plan, now)
        units = self._requested(q, plan, now, q.grant_avp) or q.used or 1
        req = DebitRequest(subscriber, q.service, f"{q.key}/{number}", units=units, info=info)
        if refund:
            r = await self.engine.refund(req)
            self._settled(q, r)
            q.granted = r.charged  # the amount credited back, for Cost-Information
            return
        if not self._free(plan, subscriber, q, info, now):
            r = await self.engine.debit(req)
            self._settled(q, r)
            if r.ok:
                q.granted = units
            return
        q.result_code = c.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _each(jobs: list[Coroutine[Any, Any, None]]) -> Awaitable[Any]:
        # One job (the common case) is awaited as it is: no coroutine around it.
        if len(jobs) == 1:
            return jobs[0]
        if not jobs:
            return _nothing()
        return asyncio.gather(*jobs)

    @staticmethod
    def _settled(q: _Quota, r: ChargeResult) -> None:
        q.result_code = _RESULT_CODES[r.outcome]
        q.granted = r.granted
        q.final = r.final and r.granted > 0
        q.validity = r.validity

    def _cca(
        self, request: Message, quotas: list[_Quota], *, top_level: bool, items: list[Item]
    ) -> Message:
        shown = [q for q in quotas if not q.hidden]
        body: list[Item] = []
        if top_level:
            if shown:
                q = shown[0]
                if q.granted:
                    body.append(_gsu(q.grant_avp, q.granted))
                body += items
                if q.final:
                    body.append(_FUI)
                if q.granted and q.validity:
                    body.append(_cached("Validity-Time", q.validity))
            else:
                body += items
        else:
            for q in shown:
                body.append(_mscc(q))
            body += items
        code = self._command_result(shown)
        if code == c.DIAMETER_UNABLE_TO_COMPLY and not any(
            (type(i) is Avp and i.code == _CCFH and not i.vendor)
            or (isinstance(i, tuple) and i[0] == "Credit-Control-Failure-Handling")
            for i in items
        ):
            body.append(_cached("Credit-Control-Failure-Handling",
                                self._failure_handling(shown)))  # fmt: skip
        # (the CCA's byte template: make_answer's answer, encoded with it)
        return self._answers.answer(request, code, body)

    @staticmethod
    def _command_result(quotas: Sequence[_Quota]) -> int:
        if not quotas:
            return c.DIAMETER_SUCCESS
        codes = [q.result_code for q in quotas]
        if c.DIAMETER_SUCCESS in codes:
            return c.DIAMETER_SUCCESS
        if c.DIAMETER_UNABLE_TO_COMPLY in codes:
            return c.DIAMETER_UNABLE_TO_COMPLY
        return codes[0]
