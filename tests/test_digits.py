"""Numbers from text are ASCII digits only (tariffs/digits.py and its users).

Python's ``Decimal()``, ``int()``, ``float()``, ``str.isdigit()`` and ``\\d`` accept every
Unicode digit; the parsers of the OCS must not. Property tests over the money parser and the
shared helpers, then one regression per user: plan files, settings, the command line, CDR
helpers and the provisioning signature.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.cli import build_parser
from ocs.config import ConfigError, load_settings
from ocs.mediation.formats._fields import encode_plmn
from ocs.money import MoneyFormatError, parse_money
from tariffs import PlanFileError, parse_plan
from tariffs.digits import ascii_float, ascii_int, is_digits, scaled

#: Digits of other scripts that int() and Decimal() take: fullwidth, Arabic-Indic,
#: mathematical bold, Devanagari.
FOREIGN = ["１０", "١٠", "𝟏𝟎", "१०", "1０", "٣.٥"]
_NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda ch: not ch.isascii())


def _with_foreign_digit(text: str, digit: str, at: int) -> str:
    """``text`` with one ASCII digit replaced by the same digit of another script."""
    positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    i = positions[at % len(positions)]
    return text[:i] + digit + text[i + 1 :]


@pytest.mark.parametrize("text", FOREIGN)
def test_python_accepts_them_and_we_do_not(text: str) -> None:
    assert Decimal(text) > 0  # the trap
    with pytest.raises(MoneyFormatError, match="ASCII"):
        parse_money(text)
    assert scaled(text, 6) is None
    assert not is_digits(text)
    with pytest.raises(ValueError, match="ASCII"):
        ascii_int(text)
    with pytest.raises(ValueError, match="ASCII"):
        ascii_float(text)


@given(st.integers(-(10**15), 10**15))
def test_money_round_trips_every_amount(micro: int) -> None:
    whole, frac = divmod(abs(micro), 10**6)
    text = f"{'-' if micro < 0 else ''}{whole}.{frac:06d}"
    assert parse_money(text) == micro


@given(st.integers(0, 10**15), _NON_ASCII_DIGITS, st.integers(0, 30))
def test_money_refuses_any_foreign_digit(micro: int, digit: str, at: int) -> None:
    whole, frac = divmod(micro, 10**6)
    text = _with_foreign_digit(f"{whole}.{frac:06d}", digit, at)
    with pytest.raises(MoneyFormatError):
        parse_money(text)


@given(st.text(max_size=24))
def test_money_parser_agrees_with_decimal_on_what_it_accepts(text: str) -> None:
    try:
        micro = parse_money(text)
    except MoneyFormatError:
        return
    assert text.isascii() and text.strip() == text and "_" not in text
    assert Decimal(text) * 10**6 == micro


@given(st.text(alphabet=st.characters(categories=["Nd", "Zs", "Pc"]), min_size=1, max_size=8))
def test_is_digits_is_ascii_only(text: str) -> None:
    assert is_digits(text) == all(ch in "0123456789" for ch in text)
    if is_digits(text):
        assert ascii_int(text) == int(text)
    else:
        with pytest.raises(ValueError, match="ASCII"):
            ascii_int(text)


@pytest.mark.parametrize("text", [" 1", "1 ", "1_000", "1e3", "nan", "inf", "+", ""])
def test_other_things_int_and_float_take_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ASCII"):
        ascii_float(text)
    with pytest.raises(ValueError, match="ASCII"):
        ascii_int(text)


# --- users of the helpers ----------------------------------------------------------------------

PLAN = """
name = "p"
timezone = "UTC"
currency = "EUR"
[numbering]
country_code = "{cc}"
[destinations]
home = ["{prefix}"]
[places]
home = ["{home}"]
[services.voice]
unit = "seconds"
default_quota = 60
[tax]
rate = "{tax}"
[[rates]]
service = "voice"
price = "{price}"
per = 60
"""
GOOD = {"cc": "49", "prefix": "49", "home": "26201", "tax": "19", "price": "0.09"}


def test_the_plan_template_is_valid() -> None:
    assert parse_plan(PLAN.format(**GOOD)).name == "p"


@pytest.mark.parametrize("field", sorted(GOOD))
@pytest.mark.parametrize("digit", ["０", "٠", "𝟎", "५"])
def test_plan_numbers_with_foreign_digits_are_refused(field: str, digit: str) -> None:
    values = dict(GOOD)
    values[field] = _with_foreign_digit(values[field], digit, 0)
    with pytest.raises(PlanFileError):
        parse_plan(PLAN.format(**values))


@pytest.mark.parametrize("price", ["1e-2", "0.0_9", " 0.09", "NaN", "Infinity", "0x10"])
def test_plan_money_is_a_plain_decimal(price: str) -> None:
    with pytest.raises(PlanFileError, match="rates"):
        parse_plan(PLAN.format(**{**GOOD, "price": price}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OCS_HTTP_PORT", "８０８０"),
        ("OCS_HTTP_PORT", "8_080"),
        ("OCS_VALIDITY", "٣٠"),
        ("OCS_SWEEP_INTERVAL", "１"),
        ("OCS_SWEEP_INTERVAL", "nan"),
        ("OCS_SWEEP_INTERVAL", "1e3"),
        ("OCS_DIAMETER_WATCHDOG", "３0"),
    ],
)
def test_settings_refuse_foreign_digits(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_settings_still_take_ascii_numbers() -> None:
    s = load_settings({"OCS_HTTP_PORT": " 8081 ", "OCS_SWEEP_INTERVAL": "0.5"})
    assert (s.http_port, s.sweep_interval) == (8081, 0.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--http-port", "８０８０"],
        ["rate", "basic", "voice", "--units", "１٠"],
        ["demo", "--speed", "２"],
    ],
)
def test_command_line_numbers_are_ascii(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[-2]}: invalid" in err, err


@pytest.mark.parametrize("plmn", ["2620１", "٢٦٢٠١"])
def test_cdr_plmn_encoder_refuses_foreign_digits(plmn: str) -> None:
    assert unicodedata.digit(plmn[-1]) == 1
    with pytest.raises(ValueError, match="MCC"):
        encode_plmn(plmn)
