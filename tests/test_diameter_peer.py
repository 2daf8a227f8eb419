"""The peer state machine's table: CER/CEA, 5010, requests before CER, watchdog, DPR both ways.

Two machines talk to each other through bytes (our codec), like h11's ConnectionPair: no
sockets, no clock; the time is a number the test moves.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from protocols.diameter import (
    Close,
    Deliver,
    LocalIdentity,
    Message,
    Opened,
    PeerMachine,
    PeerState,
    Role,
    Send,
    SetTimer,
    avp,
    decode,
    make_answer,
    make_request,
)
from protocols.diameter import constants as c
from protocols.diameter.peer import TRANSITIONS, Event, _Context

OCS = LocalIdentity("ocs.example", "example", ("192.0.2.1",), product_name="ocs")
GATEWAY = LocalIdentity("pgw.example", "example", ("192.0.2.2",), product_name="pgw")
TW = 30.0


def machine(identity: LocalIdentity = OCS, **kwargs: Any) -> PeerMachine:
    return PeerMachine(identity, watchdog_interval=TW, rng=random.Random(7), **kwargs)


def sent(actions: list[Any]) -> list[Message]:
    """The messages sent, through bytes (so that every one is valid on the wire)."""
    return [decode(a.message.to_bytes()) for a in actions if isinstance(a, Send)]


def kinds(actions: list[Any]) -> list[str]:
    return [type(a).__name__ for a in actions]


def cer(identity: LocalIdentity = GATEWAY, **extra: Any) -> Message:
    items: list[Any] = [
        ("Origin-Host", identity.origin_host),
        ("Origin-Realm", identity.origin_realm),
        ("Host-IP-Address", identity.host_ip_addresses[0]),
        ("Vendor-Id", 0),
        ("Product-Name", identity.product_name),
        ("Supported-Vendor-Id", c.VENDOR_3GPP),
    ]
    items += extra.get("apps", [("Auth-Application-Id", c.APP_CREDIT_CONTROL)])
    return decode(make_request(257, 0, items, hop_by_hop=1, end_to_end=2).to_bytes())


def ccr(hop: int = 10) -> Message:
    items = [
        ("Session-Id", "pgw;1"),
        ("Origin-Host", "pgw.example"),
        ("Origin-Realm", "example"),
        ("Destination-Realm", "example"),
        ("Auth-Application-Id", 4),
        ("Service-Context-Id", "32251@3gpp.org"),
        ("CC-Request-Type", 1),
        ("CC-Request-Number", 0),
    ]
    return decode(make_request(272, 4, items, hop_by_hop=hop, end_to_end=hop).to_bytes())


def opened() -> PeerMachine:
    peer = machine()
    peer.start(0.0)
    actions = peer.receive(cer(), 1.0)
    assert peer.state is PeerState.OPEN
    assert kinds(actions) == ["Send", "Opened", "SetTimer"]
    return peer


def answer_to(request: Message, identity: LocalIdentity = GATEWAY) -> Message:
    answer = make_answer(
        request,
        result_code=c.DIAMETER_SUCCESS,
        origin_host=identity.origin_host,
        origin_realm=identity.origin_realm,
    )
    return decode(answer.to_bytes())


def test_the_table_is_complete() -> None:
    assert {(s, e) for s in PeerState for e in Event} == set(TRANSITIONS)


def test_cer_cea_opens_the_connection() -> None:
    peer = machine()
    assert peer.start(0.0) == [SetTimer(c.DEFAULT_CER_TIMEOUT)]
    actions = peer.receive(cer(), 1.0)
    (cea,) = sent(actions)
    assert cea.name == "CEA" and cea.result_code == c.DIAMETER_SUCCESS
    assert (cea.hop_by_hop, cea.end_to_end) == (1, 2)
    assert not cea.is_proxiable and not cea.is_error
    assert cea.get_str("Origin-Host") == "ocs.example"
    assert cea.get_int("Auth-Application-Id") == c.APP_CREDIT_CONTROL
    assert cea.get_int("Supported-Vendor-Id") == c.VENDOR_3GPP
    assert cea.get_str("Product-Name") == "ocs"
    opened_action = actions[1]
    assert isinstance(opened_action, Opened)
    assert opened_action.peer.origin_host == "pgw.example"
    assert opened_action.peer.applications == {4}
    assert peer.remote == opened_action.peer and peer.is_open
    timer = actions[2]
    assert isinstance(timer, SetTimer)
    # RFC 3539 §3.4.1: Tw with jitter of +-2 s.
    assert 1.0 + TW - 2 <= timer.deadline <= 1.0 + TW + 2


def test_vendor_specific_application_id_and_relay_count_as_common() -> None:
    vsai = [("Vendor-Specific-Application-Id", [("Vendor-Id", 10415), ("Auth-Application-Id", 4)])]
    for apps in (vsai, [("Acct-Application-Id", 3), ("Auth-Application-Id", c.APP_RELAY)]):
        peer = machine()
        peer.start(0.0)
        peer.receive(cer(apps=apps), 1.0)
        assert peer.state is PeerState.OPEN


def test_cer_without_common_application_gets_5010_and_close() -> None:
    peer = machine()
    peer.start(0.0)
    actions = peer.receive(cer(apps=[("Auth-Application-Id", 16777238)]), 1.0)  # Gx only
    assert kinds(actions) == ["Send", "Close"]
    (cea,) = sent(actions)
    assert cea.result_code == c.DIAMETER_NO_COMMON_APPLICATION and not cea.is_error
    assert peer.state is PeerState.CLOSED and not peer.is_open


def test_invalid_cer_gets_its_error_and_close() -> None:
    peer = machine()
    peer.start(0.0)
    broken = make_request(257, 0, [("Origin-Host", "pgw.example")], hop_by_hop=1, end_to_end=1)
    actions = peer.receive(decode(broken.to_bytes()), 1.0)
    assert kinds(actions) == ["Send", "Close"]
    (cea,) = sent(actions)
    assert cea.result_code == c.DIAMETER_MISSING_AVP
    assert cea.find("Failed-AVP") is not None


def test_cer_from_a_peer_not_allowed_gets_3010() -> None:
    peer = machine(allowed_peers=frozenset({"other.example"}))
    peer.start(0.0)
    actions = peer.receive(cer(), 1.0)
    (cea,) = sent(actions)
    assert cea.result_code == c.DIAMETER_UNKNOWN_PEER and cea.is_error
    assert isinstance(actions[-1], Close) and peer.state is PeerState.CLOSED


@pytest.mark.parametrize("first", ["CCR", "DWR", "DPR", "CEA"])
def test_anything_before_cer_closes_without_answer(first: str) -> None:
    # RFC 6733 §5.6: the responder's Closed state only knows R-Conn-CER.
    message = {
        "CCR": ccr(),
        "DWR": decode(
            make_request(
                280, 0, [("Origin-Host", "g"), ("Origin-Realm", "r")], hop_by_hop=1, end_to_end=1
            ).to_bytes()
        ),
        "DPR": decode(
            make_request(
                282,
                0,
                [("Origin-Host", "g"), ("Origin-Realm", "r"), ("Disconnect-Cause", 0)],
                hop_by_hop=1,
                end_to_end=1,
            ).to_bytes()
        ),
        "CEA": answer_to(cer()),
    }[first]
    peer = machine()
    peer.start(0.0)
    actions = peer.receive(message, 1.0)
    assert kinds(actions) == ["Close"]
    assert peer.state is PeerState.CLOSED


def test_silent_connection_is_closed_after_the_cer_timeout() -> None:
    peer = machine()
    peer.start(0.0)
    assert peer.timer_expired(1.0) == []  # early: ignored
    assert kinds(peer.timer_expired(c.DEFAULT_CER_TIMEOUT)) == ["Close"]
    assert peer.state is PeerState.CLOSED


def test_requests_are_delivered_once_open() -> None:
    peer = opened()
    request = ccr()
    actions = peer.receive(request, 5.0)
    assert actions[0] == Deliver(request)
    assert isinstance(actions[1], SetTimer) and actions[1].deadline >= 5.0 + TW - 2


def test_dwr_is_answered_with_dwa() -> None:
    peer = opened()
    dwr = make_request(
        280,
        0,
        [("Origin-Host", "pgw.example"), ("Origin-Realm", "example")],
        hop_by_hop=44,
        end_to_end=45,
    )
    (dwa,) = sent(peer.receive(decode(dwr.to_bytes()), 3.0))
    assert dwa.name == "DWA" and dwa.result_code == 2001 and dwa.hop_by_hop == 44


def test_watchdog_rfc_3539() -> None:
    peer = opened()
    deadline = peer.deadline
    assert deadline is not None
    # First expiry: a DWR.
    actions = peer.timer_expired(deadline)
    (dwr,) = sent(actions)
    assert dwr.name == "DWR" and dwr.is_request and not dwr.is_proxiable
    assert dwr.get_str("Origin-Host") == "ocs.example"
    assert peer.state is PeerState.OPEN_DWR_PENDING
    # A DWA resets it: back to OPEN, timer rearmed, and the next expiry sends a new DWR.
    peer.receive(answer_to(dwr), deadline + 1)
    assert peer.state is PeerState.OPEN
    assert peer.deadline is not None and peer.deadline >= deadline + 1 + TW - 2
    (dwr2,) = sent(peer.timer_expired(peer.deadline))
    assert dwr2.name == "DWR" and dwr2.hop_by_hop != dwr.hop_by_hop
    # Second expiry without an answer: SUSPECT (no second DWR, RFC 3539 §3.4.1).
    actions = peer.timer_expired(peer.deadline)
    assert kinds(actions) == ["SetTimer"] and peer.state is PeerState.SUSPECT
    assert peer.is_open
    # Third expiry: the connection is closed.
    actions = peer.timer_expired(peer.deadline)
    assert kinds(actions) == ["Close"] and peer.state is PeerState.CLOSED


def test_traffic_while_suspect_fails_back() -> None:
    peer = opened()
    peer.timer_expired(peer.deadline or 0)
    peer.timer_expired(peer.deadline or 0)
    assert peer.state is PeerState.SUSPECT
    actions = peer.receive(ccr(), (peer.deadline or 0) - 1)
    assert isinstance(actions[0], Deliver)
    # Back to OKAY, with the DWR still unanswered.
    assert peer.state is PeerState.OPEN_DWR_PENDING


def test_dpr_received_is_answered_then_the_peer_disconnects() -> None:
    peer = opened()
    dpr = make_request(
        282,
        0,
        [("Origin-Host", "pgw.example"), ("Origin-Realm", "example"), ("Disconnect-Cause", 0)],
        hop_by_hop=70,
        end_to_end=71,
    )
    actions = peer.receive(decode(dpr.to_bytes()), 5.0)
    (dpa,) = sent(actions)
    assert dpa.name == "DPA" and dpa.result_code == 2001 and dpa.hop_by_hop == 70
    assert peer.state is PeerState.CLOSING
    assert actions[-1] == SetTimer(5.0 + c.DEFAULT_CLOSING_TIMEOUT)
    assert peer.connection_lost(6.0) == [] and peer.state is PeerState.CLOSED


def test_dpr_received_and_the_peer_stays_closes_on_timeout() -> None:
    peer = opened()
    dpr = make_request(
        282,
        0,
        [("Origin-Host", "pgw.example"), ("Origin-Realm", "example"), ("Disconnect-Cause", 1)],
        hop_by_hop=70,
        end_to_end=71,
    )
    peer.receive(decode(dpr.to_bytes()), 5.0)
    assert kinds(peer.timer_expired(5.0 + c.DEFAULT_CLOSING_TIMEOUT)) == ["Close"]


def test_dpr_sent_on_stop_and_closed_on_dpa() -> None:
    peer = opened()
    actions = peer.stop(10.0, c.DisconnectCause.REBOOTING)
    (dpr,) = sent(actions)
    assert dpr.name == "DPR" and dpr.get_int("Disconnect-Cause") == 0
    assert peer.state is PeerState.CLOSING
    # Requests in flight still reach the application while we wait.
    assert isinstance(peer.receive(ccr(), 10.5)[0], Deliver)
    assert kinds(peer.receive(answer_to(dpr), 11.0)) == ["Close"]
    assert peer.state is PeerState.CLOSED
    assert peer.receive(ccr(), 12.0) == [] and peer.stop(12.0) == []


def test_initiator_sends_cer_and_opens_on_cea() -> None:
    gateway = machine(GATEWAY, role=Role.INITIATOR)
    ocs = machine()
    ocs.start(0.0)
    (request,) = sent(gateway.start(0.0))
    assert gateway.state is PeerState.WAIT_CEA and request.name == "CER"
    (cea,) = sent(ocs.receive(request, 0.1))
    actions = gateway.receive(cea, 0.2)
    assert kinds(actions) == ["Opened", "SetTimer"] and gateway.is_open
    assert gateway.remote is not None and gateway.remote.origin_host == "ocs.example"
    # A failed CEA closes the initiator.
    gateway = machine(GATEWAY, role=Role.INITIATOR)
    (request,) = sent(gateway.start(0.0))
    refused = make_answer(
        request, result_code=c.DIAMETER_NO_COMMON_APPLICATION, origin_host="o", origin_realm="r"
    )
    assert kinds(gateway.receive(decode(refused.to_bytes()), 0.1)) == ["Close"]


def test_peer_machine_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="watchdog_interval"):
        PeerMachine(OCS, watchdog_interval=1.0)
    with pytest.raises(ValueError, match="at least one address"):
        LocalIdentity("h", "r", ())
    with pytest.raises(ValueError, match="not-an-ip"):
        LocalIdentity("h", "r", ("not-an-ip",))
    assert avp("Origin-Host", OCS.origin_host).value == "ocs.example"


@pytest.mark.parametrize("state", list(PeerState))
@pytest.mark.parametrize("request_", [True, False])
def test_an_application_message_does_what_the_table_says(state: PeerState, request_: bool) -> None:
    # receive() carries out the common row (deliver + arm_watchdog) without _handle: the same
    # actions, state, deadline and watchdog jitter as the table walked step by step.
    message = ccr() if request_ else answer_to(ccr())
    event = Event.RCV_REQUEST if request_ else Event.RCV_ANSWER
    fast, slow = opened(), opened()
    fast.state = slow.state = state
    actions = fast.receive(message, 7.0)
    expected = slow._handle(event, _Context(7.0, message))
    assert actions == expected
    assert (fast.state, fast.deadline) == (slow.state, slow.deadline)
    assert fast._rng.random() == slow._rng.random()
