"""A record that could not be decoded, as the decoders report it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record (or the unreadable rest of a file) that did not decode.

    ``sequence`` numbers records as ``Usage.sequence`` does (the BER record's place in the
    file, from 1; the ASCII line number); ``offset`` is where ``raw`` starts in the file
    (``data[offset:offset + len(raw)] == raw``; ``raw`` is empty when nothing is left to show,
    as for a file shorter than its header says); ``reason`` is one line for the
    rejected-records file.
    """

    sequence: int
    offset: int
    reason: str
    raw: bytes = field(repr=False)
