"""Money for humans: decimal strings in, decimal strings out, integer micro-units inside."""

from __future__ import annotations

from decimal import Decimal

from ocs.constants import MAX_AMOUNT, MICRO, MONEY_DECIMALS
from tariffs.digits import DECIMAL, scaled

#: Whole digits accepted before the limit check (keeps int() of hostile input short).
_MAX_WHOLE_DIGITS = 12


class MoneyFormatError(ValueError):
    """An amount a human wrote that is not a decimal with at most MONEY_DECIMALS places."""


def parse_money(text: object, *, allow_negative: bool = True) -> int:
    """Parse "12.50" (a string, or an int of whole units) into micro-units, exactly.

    Floats are refused: 0.1 has no exact binary form, and money must not depend on one. The
    string is ASCII only (:mod:`tariffs.digits`): an optional sign, digits 0-9, optionally a
    point and up to MONEY_DECIMALS digits; no spaces, underscores, exponents or other
    scripts' digits ("１０" and "١٠" are refused, though Python's Decimal takes them).
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise MoneyFormatError('must be a decimal string such as "12.50"')
    if isinstance(text, int):
        text = str(text)
    m = DECIMAL.fullmatch(text)
    micro = scaled(text, MONEY_DECIMALS) if m and len(m[2]) <= _MAX_WHOLE_DIGITS else None
    if micro is None:
        raise MoneyFormatError(
            f"must be a decimal string of ASCII digits with at most {MONEY_DECIMALS} decimals,"
            f' such as "12.50", got {text!r}'
        )
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
