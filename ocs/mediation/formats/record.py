"""A switch's view of one call or SMS: what the simulator writes in either format."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ocs.mediation.usage import Direction

#: TS 32.298 CauseForTerm values the simulator writes.
CAUSE_NORMAL = 0
CAUSE_UNSUCCESSFUL = 3  # unsuccessfulCallAttempt


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One record as a switch knows it, before it is encoded.

    Times are time-zone aware local times of the switch. ``other`` is the other party as the
    switch records it: ``+`` and digits for an international number, the digits as dialled
    otherwise ("" when unknown). For SMS ``seizure`` is the origination (MO) or delivery (MT)
    time and ``duration`` is 0.
    """

    direction: Direction
    served_msisdn: str
    served_imsi: str
    other: str
    seizure: datetime
    answer: datetime | None
    release: datetime | None
    duration: int
    mcc_mnc: str
    lac: int
    ci: int
    msc: str  # the recording MSC's number, international digits
    call_reference: int
    cause: int = CAUSE_NORMAL
