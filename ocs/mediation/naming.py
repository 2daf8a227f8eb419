"""CDR file names: 3GPP TS 32.297 clause 6.1.1 (file naming), our split convention, the suffix.

A closed file is named::

    <NodeID>_-_<RC>.<YYYYMMDD>_-_<hhmm><+/-hhmm>[_P<nn>].<suffix>

    MSC01_-_0042.20260315_-_1404+0100.ber           one minute's file, not split
    MSC01_-_0043.20260315_-_1405+0100_P01.ber       the same minute's file split for size:
    MSC01_-_0044.20260315_-_1405+0100_P02.ber       parts 1 and 2, each with its own RC
    MSC01_-_0045.20260315_-_1406+0100.txt           the ASCII format

- ``NodeID`` names the switch (the TS 32.297 node id); it may not contain ``_-_``, ``/`` or
  white space.
- ``RC`` is the running count (TS 32.297): one more for every file the node closes, written
  with at least four digits. It keeps names unique when several files close in one minute.
- ``YYYYMMDD_-_hhmm`` is the local date and time the file was closed and ``+/-hhmm`` the local
  time's offset from UTC (TS 32.297). All parts of a split interval carry the time the interval
  closes.
- ``_P<nn>`` (ours): the part number when the switch split an interval's file because it grew
  past the size limit; every part of a split interval carries it, from ``_P01``. A file that
  was not split has no part suffix (its part is 1).
- The suffix says the format: ``.ber`` (also read: ``.asn1``) for ASN.1 BER (TS 32.298
  records, with or without the TS 32.297 file framing), ``.txt`` (also read: ``.asc``) for the
  ASCII format of docs/cdr-formats.md.

A switch writes a file under its final name plus ``.tmp`` (``TEMP_SUFFIX``) and renames it
when it closes it; only closed names are taken (``is_closed``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

Format = Literal["ber", "ascii"]

#: What an open (still being written) file's name ends with; the switch renames it on close.
TEMP_SUFFIX = ".tmp"

#: The suffix written for each format, and every suffix read as that format (lower case).
SUFFIXES: dict[Format, str] = {"ber": ".ber", "ascii": ".txt"}
_READ_SUFFIXES: dict[str, Format] = {"ber": "ber", "asn1": "ber", "txt": "ascii", "asc": "ascii"}

_NAME = re.compile(
    r"(?P<node>.+?)_-_(?P<rc>[0-9]+)\.(?P<date>[0-9]{8})_-_(?P<time>[0-9]{4})"
    r"(?P<sign>[+-])(?P<tzh>[0-9]{2})(?P<tzm>[0-9]{2})"
    r"(?:_[Pp](?P<part>[0-9]+))?\.(?P<suffix>[A-Za-z0-9]+)"
)
_BAD_NODE = re.compile(r"_-_|[/\\\s]")


@dataclass(frozen=True)
class CdrFileName:
    """A parsed CDR file name. ``sort_key`` orders one switch's files as it closed them."""

    node: str
    running_count: int
    #: When the file (or its split interval) closed: minute precision, time-zone aware.
    closed_at: datetime
    #: The part number (1 when the file was not split).
    part: int
    fmt: Format
    name: str
    #: True when the name carries a part suffix (``_P01``, ``_P02``...).
    split: bool = field(default=False)

    @property
    def sort_key(self) -> tuple[datetime, int, int]:
        """(closed_at, running_count, part): the order in which the switch closed its files.

        ``closed_at`` compares instants, so a change of UTC offset (summer time) keeps the
        order; the running count orders files closed in the same minute.
        """
        return (self.closed_at, self.running_count, self.part)


def parse_name(name: str) -> CdrFileName:
    """Read a closed CDR file name; ``ValueError`` says what is wrong with it.

    ``name`` is a base name (no directory). A ``.tmp`` (open) file is refused.
    """
    if name.endswith(TEMP_SUFFIX):
        raise ValueError(f"{name!r} is still open (ends with {TEMP_SUFFIX})")
    m = _NAME.fullmatch(name)
    if m is None:
        raise ValueError(
            f"{name!r} is not a CDR file name "
            "(<NodeID>_-_<RC>.<YYYYMMDD>_-_<hhmm><+/-hhmm>[_P<nn>].<ber|txt>)"
        )
    node = m["node"]
    if _BAD_NODE.search(node):
        raise ValueError(f"{name!r}: the node id {node!r} contains '_-_', '/' or white space")
    suffix = m["suffix"].lower()
    fmt = _READ_SUFFIXES.get(suffix)
    if fmt is None:
        raise ValueError(f"{name!r}: unknown suffix .{m['suffix']} (.ber, .asn1, .txt, .asc)")
    tzh, tzm = int(m["tzh"]), int(m["tzm"])
    if tzh > 23 or tzm > 59:
        raise ValueError(f"{name!r}: bad UTC offset {m['sign']}{m['tzh']}{m['tzm']}")
    offset = timedelta(hours=tzh, minutes=tzm)
    if m["sign"] == "-":
        offset = -offset
    date, time = m["date"], m["time"]
    try:
        closed_at = datetime(
            int(date[:4]), int(date[4:6]), int(date[6:]), int(time[:2]), int(time[2:]),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{name!r}: bad closing date or time {date}_-_{time}: {exc}") from None
    # TS 32.297 and docs/cdr-formats.md: a running count of at least four digits, a part
    # number of at least two; anything shorter is not a name a switch of ours writes.
    if len(m["rc"]) < 4:
        raise ValueError(f"{name!r}: the running count {m['rc']!r} has fewer than 4 digits")
    part = 1
    if m["part"] is not None:
        if len(m["part"]) < 2:
            raise ValueError(f"{name!r}: the part number {m['part']!r} has fewer than 2 digits")
        part = int(m["part"])
        if part < 1:
            raise ValueError(f"{name!r}: part numbers start at 1")
    return CdrFileName(
        node=node,
        running_count=int(m["rc"]),
        closed_at=closed_at,
        part=part,
        fmt=fmt,
        name=name,
        split=m["part"] is not None,
    )


def format_name(
    node: str,
    running_count: int,
    closed_at: datetime,
    part: int = 1,
    fmt: Format = "ber",
    *,
    split: bool | None = None,
) -> str:
    """The closed file's name. ``closed_at`` must be time-zone aware: its own UTC offset is
    written (seconds are dropped). The part suffix is written when ``split`` is true, or, when
    ``split`` is not given, when ``part`` > 1."""
    if not node or _BAD_NODE.search(node):
        raise ValueError(f"bad node id {node!r}: empty, or contains '_-_', '/' or white space")
    if running_count < 0:
        raise ValueError(f"running count must be >= 0, not {running_count}")
    if part < 1:
        raise ValueError(f"part must be >= 1, not {part}")
    if fmt not in SUFFIXES:
        raise ValueError(f"unknown format {fmt!r} (ber, ascii)")
    offset = closed_at.utcoffset()
    if offset is None:
        raise ValueError("closed_at must be time-zone aware")
    minutes, rest = divmod(int(offset.total_seconds()), 60)
    if rest or abs(minutes) >= 24 * 60:
        raise ValueError(f"UTC offset {offset} is not a whole number of minutes under 24 h")
    sign = "-" if minutes < 0 else "+"
    tzh, tzm = divmod(abs(minutes), 60)
    name = (
        f"{node}_-_{running_count:04d}.{closed_at:%Y%m%d}_-_{closed_at:%H%M}"
        f"{sign}{tzh:02d}{tzm:02d}"
    )
    if split or (split is None and part > 1):
        name += f"_P{part:02d}"
    return name + SUFFIXES[fmt]


def is_closed(name: str) -> bool:
    """True for a closed CDR file's name; False for an open (``.tmp``) file and for any name
    that is not a CDR file name."""
    try:
        parse_name(name)
    except ValueError:
        return False
    return True


def temp_name(name: str) -> str:
    """The name a switch writes ``name`` under until it closes it."""
    return name + TEMP_SUFFIX


def in_close_order(names: Iterable[str]) -> list[CdrFileName]:
    """The closed CDR file names among ``names``, in the order each switch closed them
    (grouped by node); other names are left out."""
    parsed = []
    for n in names:
        try:
            parsed.append(parse_name(n))
        except ValueError:
            continue
    return sorted(parsed, key=lambda f: (f.node, *f.sort_key))
