"""How the Gy agent reads a Requested- or Used-Service-Unit (ocs/agents/diameter.py ``_units``):
the first unit type present in the order CC-Time, CC-Total-Octets, CC-Service-Specific-Units,
else CC-Input- plus CC-Output-Octets, each type's first instance, vendor AVPs ignored."""

from __future__ import annotations

from typing import Any

import pytest

from ocs.agents.diameter import _units
from protocols.diameter import avp, decode, make_request, raw_avp


def _usu(members: list[Any]) -> Any:
    # Through the decoder, as the agent gets it.
    message = make_request(272, 4, [avp("Used-Service-Unit", members)], hop_by_hop=1,
                           end_to_end=1)  # fmt: skip
    return decode(message.to_bytes()).avps[0]


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([("CC-Total-Octets", 500), ("CC-Time", 30)], (30, "CC-Time")),
        ([("CC-Service-Specific-Units", 3), ("CC-Total-Octets", 7)], (7, "CC-Total-Octets")),
        ([("CC-Service-Specific-Units", 3)], (3, "CC-Service-Specific-Units")),
        ([("CC-Input-Octets", 40), ("CC-Output-Octets", 2)], (42, "CC-Total-Octets")),
        ([("CC-Output-Octets", 2)], (2, "CC-Total-Octets")),
        ([("CC-Time", 10), ("CC-Time", 99)], (10, "CC-Time")),
        ([("CC-Input-Octets", 1), ("CC-Input-Octets", 5), ("CC-Output-Octets", 1)],
         (2, "CC-Total-Octets")),
        ([("Reporting-Reason", 2)], (None, None)),
        ([], (None, None)),
    ],
)  # fmt: skip
def test_units(members: list[Any], expected: tuple[int | None, str | None]) -> None:
    assert _units(_usu(members)) == expected


def test_units_ignore_vendor_members_and_absence() -> None:
    vendor_time = raw_avp(420, (77).to_bytes(4, "big"), vendor=10415)
    assert _units(_usu([vendor_time, ("CC-Total-Octets", 9)])) == (9, "CC-Total-Octets")
    assert _units(None) == (None, None)
