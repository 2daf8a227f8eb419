"""Occurrence rules, enumerations and reserved flag bits (RFC 6733 §3.2, §4.1, §7.1.5).

The rules are the dictionary's ABNF (``protocols/diameter/dictionary.py``). Property tests
build, for any element of any rule set the dictionary has, a message that holds it ``n``
times (members of grouped AVPs inside their group) and check that ``validate`` answers 5005
exactly below the minimum and 5009 exactly above the maximum, with the offending AVP in
Failed-AVP. End-to-end cases send CCRs built by python-diameter, the independent codec, to a
running OCS and check that a malformed one is refused and charges nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_diameter_e2e
from diameter.message import Message as TheirMessage
from diameter.message import constants as k
from diameter.message.avp import Avp as TheirAvp
from diameter.message.commands.credit_control import CreditControlAnswer, CreditControlRequest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_diameter_e2e import SMS, add, balance
from test_diameter_server import Gateway

from ocs.service import Running
from protocols.diameter import Avp, Message, decode, make_request, validate
from protocols.diameter import constants as c
from protocols.diameter.dictionary import (
    BY_NAME,
    COMMAND_RULES,
    ENUMERATIONS,
    GROUPED_RULES,
    UNBOUNDED,
    AvpType,
    Occurs,
    abnf,
)

# --- the ABNF reader -------------------------------------------------------------------------


def test_abnf_reads_rfc_6733_qualifiers() -> None:
    rules = abnf("""
        < Session-Id >
        { Origin-Host }
        [ User-Name ]
        *[ Proxy-Info ]
        1*{ Host-IP-Address }
        2*3[ Route-Record ]
        *{ Class }
        *[ AVP ]
    """)
    assert rules == (
        Occurs("Session-Id", 1, 1),
        Occurs("Origin-Host", 1, 1),
        Occurs("User-Name", 0, 1),
        Occurs("Proxy-Info", 0, UNBOUNDED),
        Occurs("Host-IP-Address", 1, UNBOUNDED),
        Occurs("Route-Record", 2, 3),
        Occurs("Class", 1, UNBOUNDED),
    )


@pytest.mark.parametrize(
    "text", ["{ Origin-Host ]", "[ No-Such-AVP ]", "2[ User-Name ]", "Origin-Host"]
)
def test_abnf_refuses_what_is_not_an_element(text: str) -> None:
    with pytest.raises(ValueError, match=r"ABNF|count"):
        abnf(text)


# --- minimal valid instances, from the rules themselves ---------------------------------------

_ADDRESS = b"\x00\x01\xc0\x00\x02\x01"


def _minimal(name: str) -> Avp:
    """A valid instance of ``name``: members as few as its rules require, values zero."""
    d = BY_NAME[name]
    if d.type is AvpType.GROUPED:
        members = [m for r in GROUPED_RULES.get(name, ()) for m in [_minimal(r.name)] * r.min]
        data = b"".join(m.to_bytes() for m in members)
        return Avp(d.code, d.flags, d.vendor, data, d, members)
    if d.type is AvpType.ADDRESS:
        data = _ADDRESS
    elif d.size:
        value = min(ENUMERATIONS.get(name, {0}))
        data = value.to_bytes(d.size, "big")
    else:
        data = b"x"
    return Avp(d.code, d.flags, d.vendor, data, d)


def _members(rules: tuple[Occurs, ...]) -> list[Avp]:
    return [m for r in rules for m in [_minimal(r.name)] * r.min]


def _zeroed(name: str) -> Avp:
    """RFC 6733 §7.1.5's example of a missing AVP: its minimum length, zero-filled."""
    d = BY_NAME[name]
    return Avp(d.code, d.flags, d.vendor, bytes(d.size), d, [])


def _group(name: str, members: list[Avp]) -> Avp:
    d = BY_NAME[name]
    return Avp(d.code, d.flags, d.vendor, b"".join(m.to_bytes() for m in members), d, members)


def _required(rules: tuple[Occurs, ...], command: tuple[int, bool]) -> list[Avp]:
    out = []
    for r in rules:
        for _ in range(r.min):
            if r.name == "Auth-Application-Id" and command[0] == c.CMD_CREDIT_CONTROL:
                out.append(Avp(258, 0x40, 0, (4).to_bytes(4, "big"), BY_NAME[r.name]))
            else:
                out.append(_minimal(r.name))
    return out


def _message(command: tuple[int, bool], avps: list[Avp]) -> Message:
    code, request = command
    m = make_request(code, 4, avps, hop_by_hop=1, end_to_end=1)
    if not request:
        m = Message(code, avps, 4, 0, 1, 1)
    return decode(m.to_bytes())


def _counted(rules: tuple[Occurs, ...], rule: Occurs, n: int, build: Any) -> list[Avp]:
    """The required AVPs of ``rules`` with ``rule``'s element present exactly ``n`` times."""
    out = [a for a in build(tuple(r for r in rules if r is not rule))]
    out += [_minimal(rule.name)] * n
    return out


def _codes(problems: list[Any]) -> set[int]:
    return {p.result_code for p in problems}


#: Where each grouped AVP with rules can be reached from a CCR (a path of group names).
def _paths() -> dict[str, tuple[str, ...]]:
    top = [r.name for r in COMMAND_RULES[(c.CMD_CREDIT_CONTROL, True)]]
    paths: dict[str, tuple[str, ...]] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(n, (n,)) for n in top if n in GROUPED_RULES]
    while todo:
        name, path = todo.pop(0)
        if name in paths:
            continue
        paths[name] = path
        todo += [(r.name, (*path, r.name)) for r in GROUPED_RULES[name] if r.name in GROUPED_RULES]
    return paths


_PATHS = _paths()
_COMMANDS = sorted(COMMAND_RULES)
_CCR = (c.CMD_CREDIT_CONTROL, True)


def test_a_minimal_message_of_every_command_is_valid() -> None:
    for command in _COMMANDS:
        assert validate(_message(command, _required(COMMAND_RULES[command], command))) == []


def test_most_groups_with_rules_are_reachable_from_a_ccr() -> None:
    # The others are in answers (Cost-Information), CER/CEA and error answers only.
    assert set(GROUPED_RULES) - set(_PATHS) == {
        "Vendor-Specific-Application-Id",
        "Experimental-Result",
        "Cost-Information",
    }


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_command_rules_bound_every_element(data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(_COMMANDS))
    rules = COMMAND_RULES[command]
    rule = data.draw(st.sampled_from(rules))
    n = data.draw(st.integers(0, min(rule.max, 3) + 1))
    avps = _counted(rules, rule, n, lambda rs: _required(rs, command))
    problems = validate(_message(command, avps))
    assert (c.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES in _codes(problems)) == (n > rule.max)
    assert (c.DIAMETER_MISSING_AVP in _codes(problems)) == (n < rule.min)
    if n > rule.max:
        [p] = [p for p in problems if p.result_code == c.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES]
        assert p.failed_avp == _minimal(rule.name).to_bytes()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_grouped_rules_bound_every_member(data: st.DataObject) -> None:
    group = data.draw(st.sampled_from(sorted(_PATHS)))
    rules = GROUPED_RULES[group]
    rule = data.draw(st.sampled_from(rules))
    n = data.draw(st.integers(0, min(rule.max, 3) + 1))
    path = _PATHS[group]
    inner = _group(group, _counted(rules, rule, n, _members))
    for outer, child in zip(reversed(path[:-1]), reversed(path[1:]), strict=True):
        others = _members(tuple(r for r in GROUPED_RULES[outer] if r.name != child))
        inner = _group(outer, [*others, inner])
    base = [a for a in _required(COMMAND_RULES[_CCR], _CCR) if a.code != inner.code]
    problems = validate(_message(_CCR, [*base, inner]))
    assert (c.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES in _codes(problems)) == (n > rule.max)
    assert (c.DIAMETER_MISSING_AVP in _codes(problems)) == (n < rule.min)
    [p] = problems if n > rule.max or n < rule.min else [None]
    if p is not None:
        # RFC 6733 §7.5: the offending member inside the groups that hold it.
        assert p.failed_avp is not None
        node = Avp(279, 0x40, 0, p.failed_avp, BY_NAME["Failed-AVP"])
        for name in path:
            [node] = node.avps
            assert node.name == name
        expected = _minimal(rule.name) if n > rule.max else _zeroed(rule.name)
        assert node.avps == [expected]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(ENUMERATIONS)), st.integers(0, 2**31 - 1))
def test_enumerations_refuse_unknown_values(name: str, value: int) -> None:
    d = BY_NAME[name]
    bad = Avp(d.code, d.flags, d.vendor, value.to_bytes(4, "big"), d)
    command = next(cmd for cmd in _COMMANDS if any(r.name == name for r in COMMAND_RULES[cmd])) \
        if name != "Subscription-Id-Type" else _CCR  # fmt: skip
    avps = [a for a in _required(COMMAND_RULES[command], command) if a.code != d.code]
    if name == "Subscription-Id-Type":
        avps.append(_group("Subscription-Id", [bad, _minimal("Subscription-Id-Data")]))
    else:
        avps.append(bad)
    problems = validate(_message(command, avps))
    known = value in ENUMERATIONS[name]
    assert (c.DIAMETER_INVALID_AVP_VALUE in _codes(problems)) == (not known)


@pytest.mark.parametrize("bits", [0x01, 0x02, 0x04, 0x08, 0x10, 0x1F])
def test_reserved_avp_flag_bits_are_3009(bits: int) -> None:
    avps = _required(COMMAND_RULES[_CCR], _CCR)
    d = BY_NAME["Requested-Action"]
    flagged = Avp(d.code, d.flags | bits, 0, bytes(4), d)
    [p] = validate(_message(_CCR, [*avps, flagged]))
    assert p.result_code == c.DIAMETER_INVALID_AVP_BITS
    assert p.failed_avp == flagged.to_bytes()
    # Inside a group too.
    inner = _group("Subscription-Id", [
        _minimal("Subscription-Id-Type"),
        Avp(444, 0x40 | bits, 0, b"4917000001", BY_NAME["Subscription-Id-Data"]),
    ])  # fmt: skip
    [p] = validate(_message(_CCR, [*avps, inner]))
    assert p.result_code == c.DIAMETER_INVALID_AVP_BITS


# --- end to end: python-diameter's CCRs to a running OCS --------------------------------------

#: The OCS and the gateway of the end-to-end tests.
ocs = test_diameter_e2e.ocs
gw = test_diameter_e2e.gw


def _theirs(name: int, value: Any = None) -> Any:
    return TheirAvp.new(name, value=value)


def _sms_event(
    session: str,
    *extra: Any,
    mscc: list[Any] | None = None,
    subscription: list[Any] | None = None,
    action: list[Any] | None = None,
) -> Any:
    """A direct-debit SMS CCR-EVENT built by python-diameter, with raw extra AVPs."""
    ccr: Any = CreditControlRequest()
    ccr.header.application_id = 4
    ccr.session_id = session
    ccr.origin_host = b"pgw.test"
    ccr.origin_realm = b"gw.test"
    ccr.destination_realm = b"test"
    ccr.auth_application_id = 4
    ccr.service_context_id = SMS
    ccr.cc_request_type = 4
    ccr.cc_request_number = 0
    for a in action if action is not None else [_theirs(k.AVP_REQUESTED_ACTION, 0)]:
        ccr.append_avp(a)
    ccr.append_avp(_theirs(k.AVP_SUBSCRIPTION_ID, subscription or [
        _theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 0),
        _theirs(k.AVP_SUBSCRIPTION_ID_DATA, "4917000001"),
    ]))  # fmt: skip
    ccr.append_avp(_theirs(k.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, mscc or [
        _theirs(k.AVP_REQUESTED_SERVICE_UNIT, [_theirs(k.AVP_CC_SERVICE_SPECIFIC_UNITS, 1)]),
        _theirs(k.AVP_RATING_GROUP, 200),
    ]))  # fmt: skip
    for a in extra:
        ccr.append_avp(a)
    return ccr


def _units(n: int) -> Any:
    return _theirs(k.AVP_REQUESTED_SERVICE_UNIT, [_theirs(k.AVP_CC_SERVICE_SPECIFIC_UNITS, n)])


_BAD_CCRS: dict[str, tuple[dict[str, Any], int, str]] = {
    "Requested-Action twice (debit, then check)": (
        {"action": [_theirs(k.AVP_REQUESTED_ACTION, 0), _theirs(k.AVP_REQUESTED_ACTION, 2)]},
        5009, "Requested-Action",
    ),
    "Requested-Action twice (check, then debit)": (
        {"action": [_theirs(k.AVP_REQUESTED_ACTION, 2), _theirs(k.AVP_REQUESTED_ACTION, 0)]},
        5009, "Requested-Action",
    ),
    "Rating-Group twice in an MSCC": (
        {"mscc": [_units(1), _theirs(k.AVP_RATING_GROUP, 200), _theirs(k.AVP_RATING_GROUP, 300)]},
        5009, "Multiple-Services-Credit-Control",
    ),
    "Requested-Service-Unit twice in an MSCC": (
        {"mscc": [_units(1), _units(5), _theirs(k.AVP_RATING_GROUP, 200)]},
        5009, "Multiple-Services-Credit-Control",
    ),
    "CC-Service-Specific-Units twice in a Requested-Service-Unit": (
        {"mscc": [_theirs(k.AVP_REQUESTED_SERVICE_UNIT, [
            _theirs(k.AVP_CC_SERVICE_SPECIFIC_UNITS, 1),
            _theirs(k.AVP_CC_SERVICE_SPECIFIC_UNITS, 9)]),
            _theirs(k.AVP_RATING_GROUP, 200)]},
        5009, "Multiple-Services-Credit-Control",
    ),
    "Subscription-Id-Type twice": (
        {"subscription": [_theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 0),
                          _theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 1),
                          _theirs(k.AVP_SUBSCRIPTION_ID_DATA, "4917000001")]},
        5009, "Subscription-Id",
    ),
    "Subscription-Id-Data twice": (
        {"subscription": [_theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 0),
                          _theirs(k.AVP_SUBSCRIPTION_ID_DATA, "4917000001"),
                          _theirs(k.AVP_SUBSCRIPTION_ID_DATA, "4917000002")]},
        5009, "Subscription-Id",
    ),
    "Subscription-Id-Data missing": (
        {"subscription": [_theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 0)]}, 5005, "Subscription-Id",
    ),
    "Subscription-Id-Type outside its enumeration": (
        {"subscription": [_theirs(k.AVP_SUBSCRIPTION_ID_TYPE, 7),
                          _theirs(k.AVP_SUBSCRIPTION_ID_DATA, "4917000001")]},
        5004, "Subscription-Id",
    ),
    "Requested-Action outside its enumeration": (
        {"action": [_theirs(k.AVP_REQUESTED_ACTION, 9)]}, 5004, "Requested-Action",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_BAD_CCRS))
async def test_bad_ccr_is_refused_and_charges_nothing(ocs: Running, gw: Gateway, case: str) -> None:
    await add(ocs, "4917000001", 1_000_000)
    kwargs, code, failed_name = _BAD_CCRS[case]
    theirs = _sms_event(f"smsc.test;{case}", **kwargs)
    answer = await gw.request(decode(bytes(theirs.as_bytes())))
    cca: Any = TheirMessage.from_bytes(answer.to_bytes())
    assert isinstance(cca, CreditControlAnswer)
    assert cca.result_code == code, answer.get_str("Error-Message")
    assert cca.cc_request_type == 4 and cca.cc_request_number == 0
    [failed] = answer.find_all("Failed-AVP")
    assert [a.name for a in failed.avps] == [failed_name]
    assert await balance(ocs) == (1_000_000, 0, 0)
    # The same CCR without the fault is charged (the fixture's price: 0.05 an SMS).
    good = await gw.request(decode(bytes(_sms_event(f"smsc.test;{case};ok").as_bytes())))
    assert good.result_code == 2001
    assert await balance(ocs) == (950_000, 0, 0)


async def test_reserved_flag_bits_answer_3009_end_to_end(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    action = _theirs(k.AVP_REQUESTED_ACTION, 0)
    action.flags |= 0x04
    theirs = _sms_event("smsc.test;bits", action=[action])
    answer = await gw.request(decode(bytes(theirs.as_bytes())))
    assert answer.result_code == c.DIAMETER_INVALID_AVP_BITS and answer.is_error
    assert answer.find("Failed-AVP", "Requested-Action") is not None
    assert await balance(ocs) == (1_000_000, 0, 0)


def test_a_shape_found_valid_is_not_taken_for_another() -> None:
    """validate() remembers the shapes of the decoded messages it found valid (the AVP keys
    in order, the groups, the values it checks): a message that differs only in a checked
    value, or in a member, is checked afresh and refused; one of the same shape is valid."""
    base = _required(COMMAND_RULES[_CCR], _CCR)
    good = _message(_CCR, base)
    assert good.shape is not None and validate(good) == [] and validate(good) == []
    assert make_request(272, 4, base, hop_by_hop=1, end_to_end=1).shape is None

    def changed(name: str, data: bytes) -> Message:
        d = BY_NAME[name]
        return _message(_CCR, [Avp(d.code, d.flags, d.vendor, data, d) if a.code == d.code
                               else a for a in base])  # fmt: skip

    assert _codes(validate(changed("CC-Request-Type", (9).to_bytes(4, "big")))) == {
        c.DIAMETER_INVALID_AVP_VALUE
    }
    assert _codes(validate(changed("Auth-Application-Id", (5).to_bytes(4, "big")))) == {
        c.DIAMETER_INVALID_AVP_VALUE
    }
    assert validate(changed("CC-Request-Number", (7).to_bytes(4, "big"))) == []
    twice = _message(_CCR, [*base, *(a for a in base if a.name == "CC-Request-Type")])
    assert c.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES in _codes(validate(twice))
