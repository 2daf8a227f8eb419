"""The normalised usage every CDR format decodes to, and what the charging side reads.

A decoder (ocs/mediation/formats) turns one record of a switch's file into a ``Usage``, or
raises ``RecordError`` with a reason the rejected-records file shows. The mediation pipeline
(ocs/mediation/pipeline) rates and debits each ``Usage`` as a forced direct debit whose request
key is ``record_id``, so the same record charged twice is charged once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """What kind of record: the TS 32.298 CS record types this system charges."""

    MOC = "moc"  # MOCallRecord: the served subscriber called out
    MTC = "mtc"  # MTCallRecord: the served subscriber was called
    SMS_MO = "sms-mo"  # MOSMSRecord
    SMS_MT = "sms-mt"  # MTSMSRecord

    @property
    def record_type(self) -> str:
        """The TS 32.298 CHOICE name, as tariff plans list it in ``cdr_record_types``."""
        return _RECORD_TYPES[self]


_RECORD_TYPES = {
    Direction.MOC: "moCallRecord",
    Direction.MTC: "mtCallRecord",
    Direction.SMS_MO: "moSMSRecord",
    Direction.SMS_MT: "mtSMSRecord",
}


class RecordError(ValueError):
    """A record that cannot be decoded or normalised; ``str()`` is the reason to report."""


@dataclass(frozen=True, slots=True)
class Usage:
    """One chargeable record, whatever its source format.

    Times are Unix milliseconds (UTC); ``duration`` is whole seconds of conversation (0 for
    SMS and for unanswered calls). ``served_msisdn`` is digits in international form (country
    code first, no '+'); ``other_party`` is the number as the record gives it (the rater's
    numbering plan normalises it). ``location`` is the cell global identity or, failing that,
    the visited MSC's number; the rater matches its leading MCC+MNC against the plan's places.
    """

    #: Stable identity, the debit's request key: what the switch wrote (recording entity,
    #: record type, served party, call reference, partial number; see
    #: ``formats._fields.record_identity``), else "<switch>:<file>:<sequence>".
    record_id: str
    switch: str
    file: str
    sequence: int
    direction: Direction
    served_msisdn: str
    served_imsi: str
    other_party: str
    start: int
    answer: int | None
    release: int | None
    duration: int
    location: str
    #: The record's service as the decoder sees it ("voice" or "sms"); the plan's service is
    #: chosen by ``direction.record_type`` (``cdr_record_types``), falling back to this.
    service: str
