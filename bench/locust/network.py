"""Calls, data sessions and SMS as a network element runs them, over the native protocol or
Diameter Gy, every request reported with its message type and result code.

A request's outcome is one of three:

* ``ok``: answered and done (native ``success``; Diameter 2001, or 4011 for a free service);
* ``business``: answered with a refusal that is the OCS doing its job (native
  ``credit-limit-reached`` or ``service-denied``; Diameter 4012 or 4010): a success for the load
  test;
* ``failed``: an error answer (any other result code), a timeout, or a lost connection.

A session whose request fails is ended with a release (CCR-T) of no usage, as a gateway would
after an error; when that fails too, the session is left to the OCS's expiry and its engine
session ids are recorded as abandoned, so that the invariant check after the run knows why it
is still open. Money the OCS said it charged (native replies carry it) and subscribers whose
requests went unanswered (so whose charges are not known) go into the ledger.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import gevent.lock

from bench.locust.clients import DiameterConnection, NativeConnection
from bench.locust.traffic import (
    DESTINATIONS,
    LOCATIONS,
    RATING_GROUP,
    RECIPIENTS,
    SERVICE_CONTEXT,
    TEL_URI,
    Traffic,
    pick,
    slice_plan,
)
from protocols.diameter import Item, Message, make_request
from protocols.diameter import constants as c
from protocols.native.codec import Reply

OK: Final = "ok"
BUSINESS: Final = "business"
FAILED: Final = "failed"

#: Native results that are business outcomes, not failures.
NATIVE_BUSINESS: Final = frozenset({"credit-limit-reached", "service-denied"})
#: Diameter Result-Codes that are business outcomes.
DIAMETER_BUSINESS: Final = frozenset(
    {c.DIAMETER_CREDIT_LIMIT_REACHED, c.DIAMETER_END_USER_SERVICE_DENIED}
)
#: Diameter units by kind (RFC 4006 §8.17-8.21).
UNIT_AVP: Final = {
    "voice": "CC-Time",
    "data": "CC-Total-Octets",
    "sms": "CC-Service-Specific-Units",
}


class Reporter(Protocol):
    """Where each request's measurement goes (the locustfile fires Locust's request event)."""

    def request(self, name: str, started: float, code: str, outcome: str, detail: str = "") -> None:
        """``started``: ``time.perf_counter()`` before the request was sent."""

    def charged(self, msisdn: str, amount: int) -> None:
        """The OCS said it debited ``amount`` micro-units from ``msisdn``."""

    def uncertain(self, msisdn: str) -> None:
        """A request of ``msisdn`` went unanswered: what it charged is not known."""

    def abandoned(self, engine_sessions: list[str]) -> None:
        """Sessions left open at the OCS (their end could not be reported)."""


@dataclass(slots=True)
class Answer:
    """What a session needs from an answer."""

    answered: bool
    granted: int = 0
    final: bool = False
    validity: int = 0
    #: No more credit control for this session (a refusal, or a free service: 4011).
    stop: bool = False


UNANSWERED: Final = Answer(False, stop=True)


@dataclass(slots=True)
class Session:
    id: str
    msisdn: str
    kind: str
    destination: str = ""
    location: str = ""
    seq: int = 0


class Network(Protocol):
    """One network element's charging link (native or Diameter)."""

    protocol: str
    reporter: Reporter

    def open(self, s: Session) -> Answer: ...
    def update(self, s: Session, used: int) -> Answer: ...
    def close(self, s: Session, used: int, *, cleanup: bool = False) -> Answer: ...
    def event(self, msisdn: str, key: str, destination: str) -> Answer: ...
    def engine_sessions(self, s: Session) -> list[str]: ...
    def shutdown(self) -> None: ...


def _failure(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else "connection-error"


class _Link:
    """Reconnects lazily (one greenlet at a time) when the connection has gone."""

    def __init__(self, connect: Callable[[], NativeConnection | DiameterConnection]) -> None:
        self._connect = connect
        self._lock = gevent.lock.Semaphore()
        self._conn: NativeConnection | DiameterConnection | None = None

    def get(self) -> NativeConnection | DiameterConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        with self._lock:
            if self._conn is None or self._conn.closed:
                try:
                    self._conn = self._connect()
                except OSError as exc:  # refused, reset, timed out: ConnectionError to callers
                    raise ConnectionError(f"cannot connect: {exc}") from exc
            return self._conn

    def current(self) -> NativeConnection | DiameterConnection | None:
        return self._conn


class NativeNetwork:
    """Sessions over the native protocol: reserve, commit, release, and debit for events."""

    protocol = "native"

    def __init__(
        self, host: str, port: int, reporter: Reporter, *, timeout: float = 5.0,
        key: tuple[str, bytes] | None = None,
    ) -> None:  # fmt: skip
        self.reporter = reporter
        self._link = _Link(lambda: NativeConnection(host, port, timeout=timeout, key=key))

    def _conn(self) -> NativeConnection:
        conn = self._link.get()
        assert isinstance(conn, NativeConnection)
        return conn

    def _send(
        self,
        name: str,
        msisdn: str,
        call: Callable[[NativeConnection], Reply],
        cleanup: bool = False,
    ) -> Answer:
        t0 = time.perf_counter()
        try:
            r = call(self._conn())
        except (TimeoutError, ConnectionError) as exc:
            self.reporter.request(name, t0, _failure(exc), FAILED, str(exc))
            self.reporter.uncertain(msisdn)
            return UNANSWERED
        if r.ok or (cleanup and r.result == "unknown-session"):
            outcome = OK
        elif r.result in NATIVE_BUSINESS:
            outcome = BUSINESS
        else:
            outcome = FAILED
        self.reporter.request(name, t0, r.result, outcome, r.detail)
        if r.charged:
            self.reporter.charged(msisdn, r.charged)
        return Answer(True, r.granted, r.final, r.validity, stop=not r.ok)

    def open(self, s: Session) -> Answer:
        seq, s.seq = s.seq, s.seq + 1
        return self._send(
            "reserve",
            s.msisdn,
            lambda c: c.reserve(s.id, s.msisdn, s.kind, seq, None, s.destination, s.location),
        )

    def update(self, s: Session, used: int) -> Answer:
        seq, s.seq = s.seq, s.seq + 1
        return self._send("commit", s.msisdn, lambda c: c.commit(s.id, seq, used, None, s.msisdn))

    def close(self, s: Session, used: int, *, cleanup: bool = False) -> Answer:
        seq, s.seq = s.seq, s.seq + 1
        return self._send(
            "release", s.msisdn, lambda c: c.release(s.id, seq, used, s.msisdn), cleanup
        )

    def event(self, msisdn: str, key: str, destination: str) -> Answer:
        return self._send("event", msisdn, lambda c: c.debit(msisdn, "sms", key, 1, destination))

    def engine_sessions(self, s: Session) -> list[str]:
        return [s.id]

    def shutdown(self) -> None:
        conn = self._link.current()
        if conn is not None:
            conn.close()


class GyNetwork:
    """Sessions over Diameter Gy: CCR-INITIAL, -UPDATE, -TERMINATION, and -EVENT for SMS, one
    Multiple-Services-Credit-Control per request (the kind's rating group)."""

    protocol = "diameter"

    def __init__(
        self,
        host: str,
        port: int,
        reporter: Reporter,
        *,
        origin_host: str,
        origin_realm: str = "load.test",
        timeout: float = 5.0,
        watchdog: float = 30.0,
    ) -> None:
        self.reporter = reporter
        self.origin_host = origin_host
        self._link = _Link(
            lambda: DiameterConnection(
                host,
                port,
                origin_host=origin_host,
                origin_realm=origin_realm,
                timeout=timeout,
                watchdog=watchdog,
            )
        )

    def _conn(self) -> DiameterConnection:
        conn = self._link.get()
        assert isinstance(conn, DiameterConnection)
        return conn

    def _ccr(
        self,
        conn: DiameterConnection,
        sid: str,
        kind: str,
        request_type: int,
        number: int,
        msisdn: str,
        mscc: list[Item],
        extra: list[Item],
    ) -> Message:
        items: list[Item] = [
            ("Session-Id", sid),
            *conn.base(),
            ("Destination-Realm", conn.peer_realm or "localdomain"),
            ("Auth-Application-Id", c.APP_CREDIT_CONTROL),
            ("Service-Context-Id", SERVICE_CONTEXT[kind]),
            ("CC-Request-Type", request_type),
            ("CC-Request-Number", number),
            ("Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", msisdn)]),
            *extra,
            ("Multiple-Services-Credit-Control", [*mscc, ("Rating-Group", RATING_GROUP[kind])]),
        ]
        return make_request(
            c.CMD_CREDIT_CONTROL,
            c.APP_CREDIT_CONTROL,
            items,
            hop_by_hop=0,
            end_to_end=0,
            proxiable=True,
        )

    def _send(
        self,
        name: str,
        s: Session,
        request_type: int,
        mscc: list[Item],
        extra: Sequence[Item] = (),
        cleanup: bool = False,
    ) -> Answer:
        number, s.seq = s.seq, s.seq + 1
        t0 = time.perf_counter()
        try:
            conn = self._conn()
            a = conn.request(
                self._ccr(conn, s.id, s.kind, request_type, number, s.msisdn, mscc, list(extra))
            )
        except (TimeoutError, ConnectionError) as exc:
            self.reporter.request(name, t0, _failure(exc), FAILED, str(exc))
            self.reporter.uncertain(s.msisdn)
            return UNANSWERED
        found = a.find("Multiple-Services-Credit-Control")
        code = a.result_code
        if found is not None and found.get_int("Result-Code") is not None:
            code = found.get_int("Result-Code")
        if code in (c.DIAMETER_SUCCESS, c.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE) or (
            cleanup and code == c.DIAMETER_UNKNOWN_SESSION_ID
        ):
            outcome = OK
        elif code in DIAMETER_BUSINESS:
            outcome = BUSINESS
        else:
            outcome = FAILED
        self.reporter.request(name, t0, str(code), outcome)
        if found is None:
            return Answer(True, stop=code != c.DIAMETER_SUCCESS)
        granted = found.get_int("Granted-Service-Unit", UNIT_AVP[s.kind]) or 0
        return Answer(
            True,
            granted,
            found.find("Final-Unit-Indication") is not None,
            found.get_int("Validity-Time") or 0,
            stop=code != c.DIAMETER_SUCCESS,
        )

    @staticmethod
    def _information(s: Session) -> list[Item]:
        if s.kind == "voice" and s.destination:
            called = TEL_URI.get(s.destination, s.destination)
            return [
                ("Service-Information", [("IMS-Information", [("Called-Party-Address", called)])])
            ]
        if s.kind == "data" and s.location:
            return [
                ("Service-Information", [("PS-Information", [("3GPP-SGSN-MCC-MNC", s.location)])])
            ]
        if s.kind == "sms" and s.destination:
            return [
                (
                    "Service-Information",
                    [
                        (
                            "SMS-Information",
                            [
                                (
                                    "Recipient-Info",
                                    [("Recipient-Address", [("Address-Data", s.destination)])],
                                )
                            ],
                        )
                    ],
                )
            ]
        return []

    def open(self, s: Session) -> Answer:
        # An empty Requested-Service-Unit: the OCS decides (the service's default quota).
        return self._send("ccr-i", s, 1, [("Requested-Service-Unit", [])], self._information(s))

    def update(self, s: Session, used: int) -> Answer:
        mscc: list[Item] = [
            ("Requested-Service-Unit", []),
            ("Used-Service-Unit", [(UNIT_AVP[s.kind], used)]),
        ]
        return self._send("ccr-u", s, 2, mscc)

    def close(self, s: Session, used: int, *, cleanup: bool = False) -> Answer:
        mscc: list[Item] = [("Used-Service-Unit", [(UNIT_AVP[s.kind], used)])]
        return self._send("ccr-t", s, 3, mscc, [("Termination-Cause", 1)], cleanup)

    def event(self, msisdn: str, key: str, destination: str) -> Answer:
        s = Session(f"{self.origin_host};{key}", msisdn, "sms", destination)
        mscc: list[Item] = [("Requested-Service-Unit", [(UNIT_AVP["sms"], 1)])]
        return self._send("event", s, 4, mscc, [("Requested-Action", 0), *self._information(s)])

    def engine_sessions(self, s: Session) -> list[str]:
        # ocs/agents/diameter.py: one engine session per (Session-Id, Rating-Group).
        return [f"{s.id}#rg{RATING_GROUP[s.kind]}"]

    def shutdown(self) -> None:
        conn = self._link.current()
        if isinstance(conn, DiameterConnection):
            conn.disconnect()


#: Waits ``seconds`` real seconds, or less when the run is draining; returns seconds waited.
Wait = Callable[[float], float]


class Caller:
    """Runs sessions and events of one network element with its traffic model."""

    def __init__(
        self, net: Network, traffic: Traffic, rng: random.Random, wait: Wait, prefix: str
    ) -> None:
        self.net, self.traffic, self.rng, self.wait = net, traffic, rng, wait
        self.prefix = prefix
        self._ids = itertools.count(1)
        self._open: dict[str, Session] = {}

    def new_id(self) -> str:
        return f"{self.prefix};{next(self._ids)}"

    def open_sessions(self) -> list[Session]:
        """Sessions that have a grant now (those a drain that times out leaves open)."""
        return list(self._open.values())

    def session(self, msisdn: str, kind: str) -> None:
        """One call or data session, from its first reservation to its last report."""
        s = self._new_session(msisdn, kind)
        try:
            self._run(s)
        finally:
            self._open.pop(s.id, None)

    def _new_session(self, msisdn: str, kind: str) -> Session:
        if kind == "voice":
            return Session(self.new_id(), msisdn, kind, pick(self.rng, DESTINATIONS))
        return Session(self.new_id(), msisdn, kind, location=pick(self.rng, LOCATIONS))

    def _run(self, s: Session) -> None:
        rng, tf = self.rng, self.traffic.time_factor
        rate = 1 if s.kind == "voice" else self.traffic.data_rate(rng)
        left = float(self.traffic.holding(rng))
        a = self.net.open(s)
        if not a.answered:
            self._end_after_failure(s)
            return
        if not a.granted or a.stop:
            return  # refused, or free of credit control (nothing is held)
        self._open[s.id] = s
        while True:
            used, seconds, ends = slice_plan(a.granted, round(left), a.validity, rate)
            if tf > 0:
                waited = self.wait(seconds * tf) / tf
                if waited < seconds * 0.999:  # the run is draining: report what was used
                    used, ends = min(a.granted, round(waited * rate)), True
                    seconds = waited
            left -= seconds
            if ends or a.final or left <= 0:
                if not self.net.close(s, used).answered:
                    self._abandon(s)
                return
            a = self.net.update(s, used)
            if not a.answered:
                self._end_after_failure(s)
                return
            if not a.granted or a.stop:
                # No next slice (out of credit, barred): the usage is debited; end it.
                if not self.net.close(s, 0).answered:
                    self._abandon(s)
                return

    def sms(self, msisdn: str) -> None:
        self.net.event(msisdn, self.new_id().replace(";", "-"), pick(self.rng, RECIPIENTS))

    def _end_after_failure(self, s: Session) -> None:
        if not self.net.close(s, 0, cleanup=True).answered:
            self._abandon(s)

    def _abandon(self, s: Session) -> None:
        self.net.reporter.abandoned(self.net.engine_sessions(s))
