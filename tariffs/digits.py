"""Numbers written as text: ASCII digits only, exactly.

Python's ``int()``, ``Decimal()``, ``float()``, ``str.isdigit()`` and the regular expression
``\\d`` all accept every Unicode digit (fullwidth "１０", Arabic-Indic "١٠", mathematical bold
"𝟏𝟎"), and ``int()`` and ``Decimal()`` also accept underscores ("1_000"), surrounding white
space and, for ``Decimal()``, exponents and "NaN". Where a number comes from a person or
another system (HTTP bodies, query strings, plan files, settings, CDR fields, command
lines), it is one of the forms below and nothing else; every parser of such text in the OCS
goes through this module (``ocs.money`` for money, on :func:`scaled`).

It sits in ``tariffs`` because that is the lowest package that reads numbers from text (plan
files) and ``ocs`` may import it, not the other way round.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DECIMAL", "DIGITS", "ascii_float", "ascii_int", "is_digits", "scaled"]

#: One or more ASCII digits.
DIGITS: Final = re.compile(r"[0-9]+")
#: A decimal: optional sign, ASCII digits, optionally a point and more ASCII digits.
DECIMAL: Final = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")


def is_digits(text: object) -> bool:
    """True when ``text`` is a non-empty string of ASCII digits ("0042"; not "٤٢", "4_2")."""
    return isinstance(text, str) and DIGITS.fullmatch(text) is not None


def ascii_int(text: str) -> int:
    """An integer written in ASCII digits with an optional sign; ``ValueError`` otherwise
    (``int()`` without its Unicode digits, underscores and white space, so usable as an
    ``argparse`` type)."""
    if not isinstance(text, str) or re.fullmatch(r"[+-]?[0-9]+", text) is None:
        raise ValueError(f"not an integer in ASCII digits: {text!r}")
    return int(text)


def ascii_float(text: str) -> float:
    """A (non-money) quantity such as seconds or a rate: :data:`DECIMAL` as a float;
    ``ValueError`` otherwise ("nan", "1e3", "２" are refused; an ``argparse`` type)."""
    if not isinstance(text, str) or DECIMAL.fullmatch(text) is None:
        raise ValueError(f"not a decimal number in ASCII digits: {text!r}")
    return float(text)


def scaled(text: str, places: int) -> int | None:
    """The decimal ``text`` times 10**places, exactly: "12.5" with 6 places is 12500000.

    None when ``text`` is not :data:`DECIMAL` or has more than ``places`` decimals.
    """
    m = DECIMAL.fullmatch(text)
    if m is None:
        return None
    whole: str = m[2]
    frac: str = m[3] or ""
    if len(frac) > places:
        return None
    unit: int = 10**places
    value = int(whole) * unit + int(frac.ljust(places, "0") or "0")
    sign: str = m[1]
    return -value if sign == "-" else value
