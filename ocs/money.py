"""Money for humans: decimal strings in, decimal strings out, integer micro-units inside."""

from __future__ import annotations

import re
from decimal import Decimal

from ocs.constants import MAX_AMOUNT, MICRO, MONEY_DECIMALS

_MONEY_RE = re.compile(rf"^([+-]?)(\d{{1,12}})(?:\.(\d{{1,{MONEY_DECIMALS}}}))?$")


class MoneyFormatError(ValueError):
    """An amount a human wrote that is not a decimal with at most MONEY_DECIMALS places."""


def parse_money(text: object, *, allow_negative: bool = True) -> int:
    """Parse "12.50" (a string, or an int of whole units) into micro-units, exactly.

    Floats are refused: 0.1 has no exact binary form, and money must not depend on one.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise MoneyFormatError('must be a decimal string such as "12.50"')
    if isinstance(text, int):
        text = str(text)
    m = _MONEY_RE.match(text.strip())
    if m is None:
        raise MoneyFormatError(
            f"must be a decimal string with at most {MONEY_DECIMALS} decimals, got {text!r}"
        )
    sign, whole, frac = m.groups()
    micro = int(whole) * MICRO + int((frac or "").ljust(MONEY_DECIMALS, "0"))
    if sign == "-":
        micro = -micro
    if micro < 0 and not allow_negative:
        raise MoneyFormatError("must not be negative")
    if abs(micro) > MAX_AMOUNT:
        raise MoneyFormatError(f"is larger than the largest amount ({format_money(MAX_AMOUNT)})")
    return micro


def format_money(micro: int, decimals: int = 2) -> str:
    """Format micro-units as a decimal string with at least `decimals` places, never rounding:
    digits beyond `decimals` are shown when they are not zero."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    frac_s = f"{frac:0{MONEY_DECIMALS}d}".rstrip("0").ljust(decimals, "0")
    return f"{sign}{whole}.{frac_s}" if frac_s else f"{sign}{whole}"


def to_decimal(micro: int) -> Decimal:
    """Micro-units as an exact Decimal, for display."""
    return Decimal(micro).scaleb(-MONEY_DECIMALS)
