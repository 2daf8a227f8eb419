"""Time bands: which band (peak, off-peak, weekend...) applies at an instant, and where a span
of seconds crosses from one band into the next.

A plan lists bands in order; each has the day types it applies to (``mon``..``sun``, ``hol``
for a holiday from the plan's calendar, and the shorthands ``weekday``, ``weekend``, ``all``)
and a window of local time ``[from, to)``. At any instant the first band that matches wins; the
last band must match always (no days, no window). A holiday is only ``hol``: a band for
``mon`` does not apply on a Monday that is a holiday.

Local time is the plan's time zone. A span is cut where the band changes, at midnight, and at
the daylight-saving transitions of the zone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

DAY_TYPES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "hol")
DAY_ALIASES = {
    "weekday": ("mon", "tue", "wed", "thu", "fri"),
    "weekend": ("sat", "sun"),
    "all": DAY_TYPES,
}
_DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class Band:
    name: str
    days: frozenset[str]
    #: Seconds after local midnight: [start, end).
    start: int = 0
    end: int = _DAY_SECONDS


class BandCalendar:
    """Resolves bands for instants and spans (Unix seconds)."""

    def __init__(self, bands: Sequence[Band], tz: str, holidays: Sequence[date] = ()) -> None:
        self.tz = ZoneInfo(tz)
        self.holidays = frozenset(holidays)
        self.names = tuple(b.name for b in bands)
        #: Recently seen whole local days without a clock change: (first second, end, type).
        self._days: list[tuple[int, int, str]] = []
        # Per day type: the sorted second-of-day where a run starts, and the band of each run.
        self._runs: dict[str, tuple[list[int], list[str]]] = {}
        for day in DAY_TYPES:
            starts: list[int] = []
            names: list[str] = []
            cuts = sorted({0, *(b.start for b in bands), *(b.end for b in bands)} - {_DAY_SECONDS})
            for cut in cuts:
                band = next(
                    (b.name for b in bands if day in b.days and b.start <= cut < b.end), None
                )
                if band is None:
                    raise ValueError(
                        f"no band covers {day} at {cut // 3600:02d}:{cut // 60 % 60:02d}"
                    )
                if not names or names[-1] != band:
                    starts.append(cut)
                    names.append(band)
            self._runs[day] = (starts, names)

    def _local(self, t: int) -> tuple[str, int, int]:
        """(day type, second of the local day, seconds until the local day ends or the zone's
        offset changes) at Unix second t."""
        # Most instants fall in a day seen recently: a day without a clock change is plain
        # arithmetic from its first second (time zone conversions are the slow part).
        for start, end, day in self._days:
            if start <= t < end:
                return day, t - start, end - t
        found = self._local_slow(t)
        day, sod, left = found
        start = t - sod
        if (
            datetime.fromtimestamp(start, self.tz).utcoffset()
            == datetime.fromtimestamp(t + left - 1, self.tz).utcoffset()
            and t + left - start == _DAY_SECONDS
        ):
            self._days.insert(0, (start, t + left, day))
            del self._days[8:]
        return found

    def _local_slow(self, t: int) -> tuple[str, int, int]:
        dt = datetime.fromtimestamp(t, self.tz)
        day = "hol" if dt.date() in self.holidays else DAY_TYPES[dt.weekday()]
        sod = dt.hour * 3600 + dt.minute * 60 + dt.second
        # The local day ends at the next local midnight, measured in real seconds, which also
        # accounts for a 23- or 25-hour day when the clocks change.
        midnight = datetime.combine(dt.date() + timedelta(days=1), datetime.min.time(), self.tz)
        left = int(midnight.timestamp()) - t
        utcoff = dt.utcoffset()
        # A daylight-saving change inside the day: cut there too.
        nxt = datetime.fromtimestamp(t + left - 1, self.tz).utcoffset()
        if nxt != utcoff:
            left = self._offset_change(t, t + left - 1, utcoff)
        return day, sod, max(left, 1)

    def _offset_change(self, lo: int, hi: int, off: timedelta | None) -> int:
        """Seconds from lo to the first second in (lo, hi] whose UTC offset is not ``off``."""
        start = lo
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).utcoffset() == off:
                lo = mid
            else:
                hi = mid
        return hi - start

    def band_at(self, t: int) -> str:
        return self.band_run(t)[0]

    def band_run(self, t: int) -> tuple[str, int]:
        """The band at ``t`` and how many seconds from ``t`` it lasts at least: to the end
        of its run, of the local day or of the zone's offset, whichever comes first (the same
        cut as the first run :meth:`segments` makes)."""
        day, sod, left = self._local(t)
        starts, names = self._runs[day]
        i = bisect_right(starts, sod) - 1
        run_end = starts[i + 1] if i + 1 < len(starts) else _DAY_SECONDS
        return names[i], min(run_end - sod, left)

    def segments(self, t0: int, seconds: int) -> list[tuple[int, int, str]]:
        """Cut ``seconds`` seconds from ``t0`` into (offset, length, band) runs, merging runs
        of the same band."""
        out: list[tuple[int, int, str]] = []
        offset = 0
        while offset < seconds:
            day, sod, left = self._local(t0 + offset)
            starts, names = self._runs[day]
            i = bisect_right(starts, sod) - 1
            run_end = starts[i + 1] if i + 1 < len(starts) else _DAY_SECONDS
            length = min(run_end - sod, left, seconds - offset)
            band = names[i]
            if out and out[-1][2] == band:
                o, n, _ = out[-1]
                out[-1] = (o, n + length, band)
            else:
                out.append((offset, length, band))
            offset += length
        return out


def utc_seconds(ms: int) -> int:
    return ms // 1000


def describe(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
