"""Numbers and destinations: normalisation to international digits, longest-prefix lookup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tariffs.digits import is_digits
from tariffs.errors import RatingError


@dataclass(frozen=True, slots=True)
class Numbering:
    """How a plan reads the numbers it is given (TS 23.003 / E.164 conventions).

    ``+4930...`` and ``004930...`` (the international prefix) are international; ``030...`` (the
    national prefix) is national and gets the country code; a bare number of at most
    ``short_numbers`` digits is a national short number (112, 110, 11833) and gets the
    country code; a longer bare number is taken as ``bare`` says: ``international`` (what
    Diameter and CDRs carry) or ``national``.
    """

    country_code: str = ""
    national_prefix: str = "0"
    international_prefix: str = "00"
    bare: str = "international"
    short_numbers: int = 5

    def normalise(self, number: str) -> str:
        """International digits (E.164 without '+'), or RatingError if it is not a number."""
        n = number.strip().replace(" ", "").replace("-", "")
        if n.startswith("+"):
            digits = n[1:]
        elif self.international_prefix and n.startswith(self.international_prefix):
            digits = n[len(self.international_prefix) :]
        elif self.national_prefix and n.startswith(self.national_prefix):
            digits = self.country_code + n[len(self.national_prefix) :]
        elif self.bare == "national" or len(n) <= self.short_numbers:
            digits = self.country_code + n
        else:
            digits = n
        if not is_digits(digits) or len(digits) > 20:
            raise RatingError(f"not a phone number: {number!r}")
        return digits


class PrefixTable:
    """Longest-prefix match from international digits to a destination name.

    One dict of prefix -> name, probed from the longest prefix length down: at most
    ``max_len`` lookups whatever the number of prefixes, so 1,000 and 100,000 prefixes cost
    the same (bench/rating.py measures it).
    """

    __slots__ = ("_lengths", "_table")

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        table: dict[str, str] = {}
        for name, prefixes in groups.items():
            for p in prefixes:
                if p in table and table[p] != name:
                    raise ValueError(f"prefix {p!r} is in both {table[p]!r} and {name!r}")
                table[p] = name
        self._table = table
        self._lengths = sorted({len(p) for p in table}, reverse=True)

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, digits: str) -> str | None:
        table = self._table
        n = len(digits)
        for length in self._lengths:
            if length <= n:
                name = table.get(digits[:length])
                if name is not None:
                    return name
        return None
