"""The Diameter peer state machine (RFC 6733 §5.6) with the RFC 3539 watchdog, sans-IO.

One :class:`PeerMachine` per transport connection. It is given what happened (a message was
received, the timer fired, we want to stop, the peer disconnected) with the current time
(monotonic seconds), and returns a list of :data:`Action` for the transport to carry out in
order: :class:`Send` a message, :class:`Deliver` a message to the application, :class:`SetTimer`
(one timer per peer; a new one replaces the old), :class:`Opened` (the capabilities exchange
succeeded) and :class:`Close`. No sockets, no clock, no asyncio.

Every transition is in :data:`TRANSITIONS`, one table of (state, event) -> (next state, steps),
after h11's ``_state.py``. Received messages are first classified into an :class:`Event`
(``_classify``); the steps are small methods that build the answers.

Interpretations of the RFCs, each cited where it is applied:

* Only a CER may open a connection: in RFC 6733 §5.6 the responder's Closed state has no
  transition for anything but R-Conn-CER, so any other first message closes the connection
  without an answer. DIAMETER_UNKNOWN_PEER (3010) is what §7.1.3 reserves it for: a CER from a
  peer that is not allowed (``allowed_peers``).
* A CER with no application in common is answered with 5010 and the connection closed
  (RFC 6733 §5.3: "SHOULD disconnect").
* A received DPR is answered with a DPA and the machine waits in CLOSING for the peer to
  disconnect, closing itself after ``closing_timeout`` (RFC 6733 §5.6: R-Rcv-DPR ->
  R-Snd-DPA -> Closing; Closing: Rcv-DPA or Peer-Disc -> Closed, Timeout -> Closed).
* The watchdog follows RFC 3539 §3.4.1: after Tw (+-2 s jitter) of silence a DWR is sent; if
  the next expiry finds it unanswered the peer is SUSPECT (a client would fail over); the
  expiry after that closes the connection. Any message received rearms the timer; a DWA, or
  any message while SUSPECT, returns to OPEN.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, TypeAlias

from protocols.diameter.codec import (
    Avp,
    Identifiers,
    Item,
    Message,
    avp,
    error_answer,
    make_answer,
    make_request,
    validate,
)
from protocols.diameter.constants import (
    APP_CREDIT_CONTROL,
    APP_DIAMETER_COMMON_MESSAGES,
    APP_RELAY,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DEFAULT_CEA_TIMEOUT,
    DEFAULT_CER_TIMEOUT,
    DEFAULT_CLOSING_TIMEOUT,
    DEFAULT_WATCHDOG_INTERVAL,
    DIAMETER_NO_COMMON_APPLICATION,
    DIAMETER_SUCCESS,
    DIAMETER_UNKNOWN_PEER,
    FLAG_REQUEST,
    MIN_WATCHDOG_INTERVAL,
    VENDOR_3GPP,
    WATCHDOG_JITTER,
    DisconnectCause,
)
from protocols.diameter.errors import Problem

__all__ = [
    "TRANSITIONS",
    "Action",
    "Close",
    "Deliver",
    "Event",
    "LocalIdentity",
    "Opened",
    "PeerMachine",
    "PeerState",
    "RemotePeer",
    "Role",
    "Send",
    "SetTimer",
]


# --- identities ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """What we tell peers about ourselves in CER/CEA (RFC 6733 §5.3.1-5.3.2)."""

    origin_host: str
    origin_realm: str
    #: At least one; IPv4 or IPv6 text or ipaddress objects.
    host_ip_addresses: tuple[str | IPv4Address | IPv6Address, ...]
    product_name: str = "ocs"
    #: Our IANA enterprise number (0: none).
    vendor_id: int = 0
    auth_application_ids: tuple[int, ...] = (APP_CREDIT_CONTROL,)
    acct_application_ids: tuple[int, ...] = ()
    supported_vendor_ids: tuple[int, ...] = (VENDOR_3GPP,)
    origin_state_id: int | None = None
    firmware_revision: int | None = None

    def __post_init__(self) -> None:
        if not self.origin_host or not self.origin_realm:
            raise ValueError("origin_host and origin_realm must not be empty")
        if not self.host_ip_addresses:
            raise ValueError("host_ip_addresses needs at least one address (RFC 6733 §5.3.1)")
        for address in self.host_ip_addresses:
            ip_address(address)  # ValueError naming the bad one
        numbers = (
            self.vendor_id,
            *self.auth_application_ids,
            *self.acct_application_ids,
            *self.supported_vendor_ids,
        )
        if any(not 0 <= n <= 0xFFFFFFFF for n in numbers):
            raise ValueError("vendor and application ids are 32-bit unsigned")


@dataclass(frozen=True, slots=True)
class RemotePeer:
    """What the peer told us in its CER (or CEA)."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[IPv4Address | IPv6Address, ...]
    vendor_id: int
    product_name: str
    #: Auth- and Acct-Application-Ids, plain or inside Vendor-Specific-Application-Id.
    applications: frozenset[int]
    supported_vendor_ids: frozenset[int]
    origin_state_id: int | None = None


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send this message to the peer."""

    message: Message


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand this message to the application (a request to answer, an answer to match)."""

    message: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call ``timer_expired`` at ``deadline`` (monotonic seconds); replaces any earlier timer."""

    deadline: float


@dataclass(frozen=True, slots=True)
class Opened:
    """The capabilities exchange succeeded; application messages may flow."""

    peer: RemotePeer


@dataclass(frozen=True, slots=True)
class Close:
    """Close the transport connection (after sending what came before in the list)."""

    reason: str


Action: TypeAlias = Send | Deliver | SetTimer | Opened | Close


# --- states, events and the table ------------------------------------------------------------


class Role(Enum):
    """Who opened the connection."""

    RESPONDER = "RESPONDER"  # the peer connected to us: we wait for its CER
    INITIATOR = "INITIATOR"  # we connected: we send the CER


class PeerState(Enum):
    """RFC 6733 §5.6 states, with RFC 3539's OKAY split by whether a DWR is pending."""

    WAIT_CER = "WAIT_CER"  # responder, connection accepted
    WAIT_CEA = "WAIT_CEA"  # initiator, CER sent (Wait-I-CEA)
    OPEN = "OPEN"  # RFC 3539 OKAY, no DWR pending
    OPEN_DWR_PENDING = "OPEN_DWR_PENDING"  # OKAY, a DWR unanswered
    SUSPECT = "SUSPECT"  # RFC 3539 SUSPECT
    CLOSING = "CLOSING"  # DPR sent or answered
    CLOSED = "CLOSED"


#: States in which application messages flow.
OPEN_STATES: Final = frozenset({PeerState.OPEN, PeerState.OPEN_DWR_PENDING, PeerState.SUSPECT})


class Event(Enum):
    """What happened, as the table sees it."""

    START = "START"
    RCV_CER = "RCV_CER"  # valid, from an allowed peer, an application in common
    RCV_CER_NO_COMMON_APP = "RCV_CER_NO_COMMON_APP"
    RCV_CER_INVALID = "RCV_CER_INVALID"  # problems (5005, 5001...) or an unknown peer (3010)
    RCV_CEA_SUCCESS = "RCV_CEA_SUCCESS"
    RCV_CEA_FAILURE = "RCV_CEA_FAILURE"
    RCV_DWR = "RCV_DWR"
    RCV_DWA = "RCV_DWA"
    RCV_DPR = "RCV_DPR"
    RCV_DPA = "RCV_DPA"
    RCV_REQUEST = "RCV_REQUEST"  # any other request
    RCV_ANSWER = "RCV_ANSWER"  # any other answer
    TIMER = "TIMER"
    STOP = "STOP"  # we want to close: send DPR
    PEER_DISCONNECTED = "PEER_DISCONNECTED"


S = PeerState
E = Event
_RECEIVED: Final = tuple(e for e in Event if e.name.startswith("RCV_"))
_Row: TypeAlias = tuple[PeerState, tuple[str, ...]]


def _table() -> dict[tuple[PeerState, Event], _Row]:
    t: dict[tuple[PeerState, Event], _Row] = {}
    # Responder waiting for the CER (RFC 6733 §5.6 Closed + R-Conn-CER).
    t[S.WAIT_CER, E.START] = (S.WAIT_CER, ("arm_cer_timer",))
    for e in _RECEIVED:
        t[S.WAIT_CER, e] = (S.CLOSED, ("close_not_cer",))
    t[S.WAIT_CER, E.RCV_CER] = (S.OPEN, ("send_cea", "opened", "arm_watchdog"))
    t[S.WAIT_CER, E.RCV_CER_NO_COMMON_APP] = (S.CLOSED, ("send_cea_no_common_app", "close"))
    t[S.WAIT_CER, E.RCV_CER_INVALID] = (S.CLOSED, ("send_cea_error", "close"))
    t[S.WAIT_CER, E.TIMER] = (S.CLOSED, ("close_timeout",))
    t[S.WAIT_CER, E.STOP] = (S.CLOSED, ("close",))
    t[S.WAIT_CER, E.PEER_DISCONNECTED] = (S.CLOSED, ())
    # Initiator waiting for the CEA (Wait-I-CEA: I-Rcv-Non-CEA -> Error).
    t[S.WAIT_CEA, E.START] = (S.WAIT_CEA, ("send_cer", "arm_cea_timer"))
    for e in _RECEIVED:
        t[S.WAIT_CEA, e] = (S.CLOSED, ("close_not_cea",))
    t[S.WAIT_CEA, E.RCV_CEA_SUCCESS] = (S.OPEN, ("opened", "arm_watchdog"))
    t[S.WAIT_CEA, E.RCV_CEA_FAILURE] = (S.CLOSED, ("close_cea_failed",))
    t[S.WAIT_CEA, E.TIMER] = (S.CLOSED, ("close_timeout",))
    t[S.WAIT_CEA, E.STOP] = (S.CLOSED, ("close",))
    t[S.WAIT_CEA, E.PEER_DISCONNECTED] = (S.CLOSED, ())
    # Open (R-Open / I-Open), in the three watchdog states of RFC 3539 §3.4.1.
    for state in OPEN_STATES:
        # Any message but a DWA rearms the timer and leaves a pending DWR pending; from
        # SUSPECT it is a failback to OKAY with the DWR still pending.
        busy = S.OPEN_DWR_PENDING if state is not S.OPEN else S.OPEN
        t[state, E.RCV_REQUEST] = (busy, ("deliver", "arm_watchdog"))
        t[state, E.RCV_ANSWER] = (busy, ("deliver", "arm_watchdog"))
        t[state, E.RCV_DWR] = (busy, ("send_dwa", "arm_watchdog"))
        t[state, E.RCV_DWA] = (S.OPEN, ("arm_watchdog",))
        t[state, E.RCV_CER] = (busy, ("send_cea", "arm_watchdog"))
        t[state, E.RCV_CER_NO_COMMON_APP] = (S.CLOSED, ("send_cea_no_common_app", "close"))
        t[state, E.RCV_CER_INVALID] = (S.CLOSED, ("send_cea_error", "close"))
        t[state, E.RCV_CEA_SUCCESS] = (busy, ("arm_watchdog",))
        t[state, E.RCV_CEA_FAILURE] = (busy, ("arm_watchdog",))
        t[state, E.RCV_DPA] = (busy, ("arm_watchdog",))
        t[state, E.RCV_DPR] = (S.CLOSING, ("send_dpa", "arm_closing_timer"))
        t[state, E.STOP] = (S.CLOSING, ("send_dpr", "arm_closing_timer"))
        t[state, E.PEER_DISCONNECTED] = (S.CLOSED, ())
        t[state, E.START] = (state, ())
    t[S.OPEN, E.TIMER] = (S.OPEN_DWR_PENDING, ("send_dwr", "arm_watchdog"))
    t[S.OPEN_DWR_PENDING, E.TIMER] = (S.SUSPECT, ("arm_watchdog",))
    t[S.SUSPECT, E.TIMER] = (S.CLOSED, ("close_watchdog",))
    # Closing: answers and in-flight requests still pass; a DPA, the peer's disconnect or the
    # timeout ends it.
    for e in _RECEIVED:
        t[S.CLOSING, e] = (S.CLOSING, ())
    t[S.CLOSING, E.RCV_REQUEST] = (S.CLOSING, ("deliver",))
    t[S.CLOSING, E.RCV_ANSWER] = (S.CLOSING, ("deliver",))
    t[S.CLOSING, E.RCV_DWR] = (S.CLOSING, ("send_dwa",))
    t[S.CLOSING, E.RCV_DPR] = (S.CLOSING, ("send_dpa",))
    t[S.CLOSING, E.RCV_DPA] = (S.CLOSED, ("close",))
    t[S.CLOSING, E.TIMER] = (S.CLOSED, ("close_timeout",))
    t[S.CLOSING, E.STOP] = (S.CLOSING, ())
    t[S.CLOSING, E.START] = (S.CLOSING, ())
    t[S.CLOSING, E.PEER_DISCONNECTED] = (S.CLOSED, ())
    # Closed: nothing more happens.
    for e in Event:
        t[S.CLOSED, e] = (S.CLOSED, ())
    return t


#: (state, event) -> (next state, steps). Complete: every pair has a row.
TRANSITIONS: Final = _table()

#: The commands of the base protocol's peer messages, which ``_classify`` looks into; every
#: other message is RCV_REQUEST or RCV_ANSWER by its R-bit alone.
_PEER_COMMANDS: Final = frozenset(
    {CMD_CAPABILITIES_EXCHANGE, CMD_DEVICE_WATCHDOG, CMD_DISCONNECT_PEER}
)
#: The steps of an application message in an open state (the table's rows say so).
_DELIVER_AND_ARM: Final = ("deliver", "arm_watchdog")


# --- the machine -----------------------------------------------------------------------------


def _remote_peer(message: Message) -> RemotePeer:
    apps: set[int] = set()
    for a in message.avps:
        if a.vendor == 0 and a.code in (258, 259):  # Auth-/Acct-Application-Id
            apps.add(a.value)
        elif a.vendor == 0 and a.code == 260:  # Vendor-Specific-Application-Id
            apps.update(m.value for m in a.avps if m.vendor == 0 and m.code in (258, 259))
    addresses = tuple(
        v
        for a in message.find_all("Host-IP-Address")
        if isinstance(v := a.value, IPv4Address | IPv6Address)
    )
    return RemotePeer(
        origin_host=message.get_str("Origin-Host", default=""),
        origin_realm=message.get_str("Origin-Realm", default=""),
        host_ip_addresses=addresses,
        vendor_id=message.get_int("Vendor-Id", default=0),
        product_name=message.get_str("Product-Name", default=""),
        applications=frozenset(apps),
        supported_vendor_ids=frozenset(a.value for a in message.find_all("Supported-Vendor-Id")),
        origin_state_id=message.get_int("Origin-State-Id"),
    )


@dataclass(slots=True)
class _Context:
    now: float
    message: Message | None = None
    problems: list[Problem] = field(default_factory=list)
    cause: DisconnectCause = DisconnectCause.REBOOTING


class PeerMachine:
    """One connection's peer state: feed it events, carry out the actions it returns.

    ``allowed_peers``: Origin-Hosts allowed to connect (None: any), ``allowed_realms``
    likewise for Origin-Realms; ``admit``: a further check of the peer (None to admit it,
    else the reason it is refused); a CER refused by any of them is answered 3010 and the
    connection closed. ``rng`` draws the watchdog jitter and the first
    identifiers (pass a seeded one in tests).
    """

    def __init__(
        self,
        identity: LocalIdentity,
        *,
        role: Role = Role.RESPONDER,
        watchdog_interval: float = DEFAULT_WATCHDOG_INTERVAL,
        cer_timeout: float = DEFAULT_CER_TIMEOUT,
        cea_timeout: float = DEFAULT_CEA_TIMEOUT,
        closing_timeout: float = DEFAULT_CLOSING_TIMEOUT,
        allowed_peers: frozenset[str] | None = None,
        rng: random.Random | None = None,
        allowed_realms: frozenset[str] | None = None,
        admit: Callable[[RemotePeer], str | None] | None = None,
    ) -> None:
        if watchdog_interval < MIN_WATCHDOG_INTERVAL:
            raise ValueError(
                f"watchdog_interval must be at least {MIN_WATCHDOG_INTERVAL} s (RFC 3539 §3.4.1)"
            )
        if min(cer_timeout, cea_timeout, closing_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self.identity = identity
        self.role = role
        self.watchdog_interval = watchdog_interval
        self.cer_timeout = cer_timeout
        self.cea_timeout = cea_timeout
        self.closing_timeout = closing_timeout
        self.allowed_peers = allowed_peers
        self.allowed_realms = allowed_realms
        self.admit = admit
        self._rng = rng or random.Random()
        #: Identifiers for the requests we send on this connection (RAR and ASR too).
        self.ids = Identifiers(self._rng)
        self.state = PeerState.WAIT_CER if role is Role.RESPONDER else PeerState.WAIT_CEA
        #: The peer, once the capabilities exchange has succeeded.
        self.remote: RemotePeer | None = None
        #: When ``timer_expired`` should be called next (None: no timer).
        self.deadline: float | None = None
        self._local_apps = frozenset(identity.auth_application_ids) | frozenset(
            identity.acct_application_ids
        )
        self._capabilities = self._capability_avps()

    # --- what the transport calls ---

    @property
    def is_open(self) -> bool:
        """True when application messages may be exchanged."""
        return self.state in OPEN_STATES

    def start(self, now: float) -> list[Action]:
        """The connection is up: the responder arms its CER timer, the initiator sends CER."""
        return self._handle(Event.START, _Context(now))

    def receive(self, message: Message, now: float) -> list[Action]:
        """A message arrived from the peer."""
        if message.command_code not in _PEER_COMMANDS:
            # An application message, the common case: the table's row for it carried out
            # without a context and a call per step when it is deliver + arm_watchdog (the
            # same actions and the same watchdog jitter as ``_handle``).
            event = Event.RCV_REQUEST if message.flags & FLAG_REQUEST else Event.RCV_ANSWER
            next_state, steps = TRANSITIONS[self.state, event]
            if steps == _DELIVER_AND_ARM:
                jitter = self._rng.uniform(-WATCHDOG_JITTER, WATCHDOG_JITTER)
                deadline = self.deadline = now + self.watchdog_interval + jitter
                self.state = next_state
                return [Deliver(message), SetTimer(deadline)]
        context = _Context(now, message)
        return self._handle(self._classify(message, context), context)

    def timer_expired(self, now: float) -> list[Action]:
        """The timer set by the last :class:`SetTimer` fired (early calls are ignored)."""
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        return self._handle(Event.TIMER, _Context(now))

    def stop(self, now: float, cause: DisconnectCause = DisconnectCause.REBOOTING) -> list[Action]:
        """Close gracefully: send DPR and wait for the DPA (RFC 6733 §5.4)."""
        return self._handle(Event.STOP, _Context(now, cause=cause))

    def connection_lost(self, now: float) -> list[Action]:
        """The transport connection is gone."""
        return self._handle(Event.PEER_DISCONNECTED, _Context(now))

    # --- classification and dispatch ---

    def _classify(self, message: Message, context: _Context) -> Event:
        code = message.command_code
        if message.is_request:
            if code == CMD_CAPABILITIES_EXCHANGE:
                return self._classify_cer(message, context)
            if code == CMD_DEVICE_WATCHDOG:
                context.problems = validate(message)
                return Event.RCV_DWR
            if code == CMD_DISCONNECT_PEER:
                context.problems = validate(message)
                return Event.RCV_DPR
            return Event.RCV_REQUEST
        if code == CMD_CAPABILITIES_EXCHANGE:
            ok = not validate(message) and message.result_code == DIAMETER_SUCCESS
            return Event.RCV_CEA_SUCCESS if ok else Event.RCV_CEA_FAILURE
        if code == CMD_DEVICE_WATCHDOG:
            return Event.RCV_DWA
        if code == CMD_DISCONNECT_PEER:
            return Event.RCV_DPA
        return Event.RCV_ANSWER

    def _classify_cer(self, message: Message, context: _Context) -> Event:
        problems = validate(message)
        if problems:
            context.problems = problems
            return Event.RCV_CER_INVALID
        peer = _remote_peer(message)
        if self.allowed_peers is not None and peer.origin_host not in self.allowed_peers:
            context.problems = [
                Problem(DIAMETER_UNKNOWN_PEER, f"peer {peer.origin_host!r} is not allowed")
            ]
            return Event.RCV_CER_INVALID
        if self.allowed_realms is not None and peer.origin_realm not in self.allowed_realms:
            context.problems = [
                Problem(DIAMETER_UNKNOWN_PEER, f"realm {peer.origin_realm!r} is not allowed")
            ]
            return Event.RCV_CER_INVALID
        if self.admit is not None and (reason := self.admit(peer)) is not None:
            context.problems = [Problem(DIAMETER_UNKNOWN_PEER, reason)]
            return Event.RCV_CER_INVALID
        if not self._common_application(peer):
            return Event.RCV_CER_NO_COMMON_APP
        return Event.RCV_CER

    def _common_application(self, peer: RemotePeer) -> bool:
        # RFC 6733 §5.3: the base protocol (0) does not count; a relay (0xffffffff) shares all.
        theirs = peer.applications - {APP_DIAMETER_COMMON_MESSAGES}
        return APP_RELAY in theirs or bool(theirs & self._local_apps)

    def _handle(self, event: Event, context: _Context) -> list[Action]:
        next_state, steps = TRANSITIONS[self.state, event]
        actions: list[Action] = []
        for step in steps:
            actions.extend(self._STEPS[step](self, context))
        self.state = next_state
        return actions

    # --- steps ---

    def _capability_avps(self) -> list[Avp]:
        ident = self.identity
        items: list[Item] = [("Host-IP-Address", a) for a in ident.host_ip_addresses]
        items += [("Vendor-Id", ident.vendor_id), ("Product-Name", ident.product_name)]
        if ident.origin_state_id is not None:
            items.append(("Origin-State-Id", ident.origin_state_id))
        items += [("Supported-Vendor-Id", v) for v in ident.supported_vendor_ids]
        items += [("Auth-Application-Id", a) for a in ident.auth_application_ids]
        items += [("Acct-Application-Id", a) for a in ident.acct_application_ids]
        if ident.firmware_revision is not None:
            items.append(("Firmware-Revision", ident.firmware_revision))
        return [avp(*item) if isinstance(item, tuple) else item for item in items]

    def _answer(self, context: _Context, result_code: int, items: list[Item]) -> list[Action]:
        assert context.message is not None
        return [
            Send(
                make_answer(
                    context.message,
                    items,
                    result_code=result_code,
                    origin_host=self.identity.origin_host,
                    origin_realm=self.identity.origin_realm,
                )
            )
        ]

    def _error(self, context: _Context, items: list[Item]) -> list[Action]:
        assert context.message is not None
        return [
            Send(
                error_answer(
                    context.message,
                    context.problems,
                    origin_host=self.identity.origin_host,
                    origin_realm=self.identity.origin_realm,
                    items=items,
                )
            )
        ]

    def _request(self, context: _Context, command_code: int, items: list[Item]) -> Message:
        ident = self.identity
        base: list[Item] = [
            ("Origin-Host", ident.origin_host),
            ("Origin-Realm", ident.origin_realm),
        ]
        return make_request(
            command_code,
            APP_DIAMETER_COMMON_MESSAGES,
            base + items,
            hop_by_hop=self.ids.hop_by_hop(),
            # End-to-End wants wall-clock seconds; only their low 12 bits are used, so the
            # monotonic clock does as well for uniqueness (RFC 6733 §3).
            end_to_end=self.ids.end_to_end(context.now),
        )

    def _step_send_cea(self, context: _Context) -> list[Action]:
        return self._answer(context, DIAMETER_SUCCESS, list(self._capabilities))

    def _step_send_cea_no_common_app(self, context: _Context) -> list[Action]:
        items: list[Item] = [("Error-Message", "no application in common"), *self._capabilities]
        return self._answer(context, DIAMETER_NO_COMMON_APPLICATION, items)

    def _step_send_cea_error(self, context: _Context) -> list[Action]:
        return self._error(context, list(self._capabilities))

    def _step_send_cer(self, context: _Context) -> list[Action]:
        return [Send(self._request(context, CMD_CAPABILITIES_EXCHANGE, list(self._capabilities)))]

    def _step_opened(self, context: _Context) -> list[Action]:
        assert context.message is not None
        self.remote = _remote_peer(context.message)
        return [Opened(self.remote)]

    def _step_send_dwa(self, context: _Context) -> list[Action]:
        if context.problems:
            return self._error(context, [])
        return self._answer(context, DIAMETER_SUCCESS, [])

    def _step_send_dwr(self, context: _Context) -> list[Action]:
        items: list[Item] = []
        if self.identity.origin_state_id is not None:
            items.append(("Origin-State-Id", self.identity.origin_state_id))
        return [Send(self._request(context, CMD_DEVICE_WATCHDOG, items))]

    def _step_send_dpa(self, context: _Context) -> list[Action]:
        if context.problems:
            return self._error(context, [])
        return self._answer(context, DIAMETER_SUCCESS, [])

    def _step_send_dpr(self, context: _Context) -> list[Action]:
        return [
            Send(self._request(context, CMD_DISCONNECT_PEER, [("Disconnect-Cause", context.cause)]))
        ]

    def _step_deliver(self, context: _Context) -> list[Action]:
        assert context.message is not None
        return [Deliver(context.message)]

    def _set_timer(self, deadline: float) -> list[Action]:
        self.deadline = deadline
        return [SetTimer(deadline)]

    def _step_arm_watchdog(self, context: _Context) -> list[Action]:
        # RFC 3539 §3.4.1 SetWatchdog: Tw plus a jitter drawn from -2..+2 seconds.
        jitter = self._rng.uniform(-WATCHDOG_JITTER, WATCHDOG_JITTER)
        return self._set_timer(context.now + self.watchdog_interval + jitter)

    def _step_arm_cer_timer(self, context: _Context) -> list[Action]:
        return self._set_timer(context.now + self.cer_timeout)

    def _step_arm_cea_timer(self, context: _Context) -> list[Action]:
        return self._set_timer(context.now + self.cea_timeout)

    def _step_arm_closing_timer(self, context: _Context) -> list[Action]:
        return self._set_timer(context.now + self.closing_timeout)

    def _closed(self, reason: str) -> list[Action]:
        self.deadline = None
        return [Close(reason)]

    def _step_close(self, context: _Context) -> list[Action]:
        return self._closed(f"closed in state {self.state.value}")

    def _step_close_not_cer(self, context: _Context) -> list[Action]:
        name = context.message.name if context.message is not None else "?"
        return self._closed(f"{name} received before CER (RFC 6733 §5.6)")

    def _step_close_not_cea(self, context: _Context) -> list[Action]:
        name = context.message.name if context.message is not None else "?"
        return self._closed(f"{name} received while waiting for the CEA (RFC 6733 §5.6)")

    def _step_close_cea_failed(self, context: _Context) -> list[Action]:
        code = context.message.result_code if context.message is not None else None
        return self._closed(f"capabilities exchange failed (Result-Code {code})")

    def _step_close_timeout(self, context: _Context) -> list[Action]:
        return self._closed(f"timeout in state {self.state.value}")

    def _step_close_watchdog(self, context: _Context) -> list[Action]:
        return self._closed("watchdog: no answer from the peer (RFC 3539)")

    _STEPS: Final[dict[str, Callable[[PeerMachine, _Context], list[Action]]]] = {
        name[len("_step_") :]: function
        for name, function in list(vars().items())
        if name.startswith("_step_")
    }


def _check_table() -> None:
    # Every (state, event) pair has a row and every step exists: a typo fails at import.
    for state in PeerState:
        for event in Event:
            _, steps = TRANSITIONS[state, event]
            for step in steps:
                if step not in PeerMachine._STEPS:
                    raise AssertionError(f"unknown step {step!r} in the peer table")


_check_table()
