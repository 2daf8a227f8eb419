"""The billing formulas against tables worked out by hand (the arithmetic is in the comments;
none of the expected figures comes from the code under test). Money in micro-units: 1.00 is
1_000_000."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from ocs.billing import formulas as F

BERLIN = ZoneInfo("Europe/Berlin")
M300 = 300_000_000  # a 300.00 monthly charge


# -- rounding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "method", "expected"),
    [
        (Fraction(3, 2), "half-even", 2),  # 1.5 -> 2 (2 is even)
        (Fraction(5, 2), "half-even", 2),  # 2.5 -> 2 (2 is even)
        (Fraction(5, 2), "half-up", 3),  # 2.5 -> 3 (away from zero)
        (Fraction(-3, 2), "half-even", -2),
        (Fraction(-5, 2), "half-up", -3),
        (Fraction(-3, 2), "down", -1),  # towards zero
        (Fraction(-3, 2), "up", -2),  # away from zero
        (Fraction(7, 3), "up", 3),
        (Fraction(7, 3), "half-even", 2),  # 2.333 -> 2
        (Fraction(8, 3), "down", 2),
    ],
)
def test_round_money_methods(value: Fraction, method: F.RoundingMethod, expected: int) -> None:
    assert F.round_money(value, method) == expected


def test_round_to_cents() -> None:
    # 0.085 = 85_000 micro; to cents (10_000): 8.5 cents -> half-even 8, half-up 9.
    assert F.round_money(85_000, "half-even", F.CENT) == 80_000
    assert F.round_money(85_000, "half-up", F.CENT) == 90_000
    assert F.round_money(95_000, "half-even", F.CENT) == 100_000  # 9.5 -> 10 (even)


def test_unknown_rounding_method_is_refused() -> None:
    with pytest.raises(F.FormulaError):
        F.round_money(1, "nearest")  # type: ignore[arg-type]


def test_percent_is_exact_and_refuses_floats() -> None:
    assert F.percent("1.5") == Fraction(3, 200)
    assert F.percent("99.99") == Fraction(9999, 10000)
    with pytest.raises(F.FormulaError):
        F.percent(1.5)  # type: ignore[arg-type]
    with pytest.raises(F.FormulaError):
        F.percent("abc")


# -- proration: actual days of the month ---------------------------------------------------


@pytest.mark.parametrize(
    ("year", "month", "start", "end", "days", "dim", "expected"),
    [
        # November 2026, 30 days, from the 11th: 11..30 = 20 days; 300 x 20/30 = 200.000000
        (2026, 11, date(2026, 11, 11), None, 20, 30, 200_000_000),
        # February 2027, 28 days, from the 15th: 15..28 = 14 days; 300 x 14/28 = 150.000000
        (2027, 2, date(2027, 2, 15), None, 14, 28, 150_000_000),
        # February 2028 (leap), 29 days, from the 15th: 15..29 = 15 days;
        # 300_000_000 x 15 / 29 = 4_500_000_000 / 29 = 155_172_413.79... -> 155_172_414
        (2028, 2, date(2028, 2, 15), None, 15, 29, 155_172_414),
        # January 2027, 31 days, from the 21st: 21..31 = 11 days;
        # 3_300_000_000 / 31 = 106_451_612.90... -> 106_451_613
        (2027, 1, date(2027, 1, 21), None, 11, 31, 106_451_613),
        # a whole month of 31 days: 300.000000
        (2026, 12, date(2026, 1, 1), None, 31, 31, 300_000_000),
        # ends 2026-11-16 (the first day not billed): 1..15 = 15 days of 30 -> 150.000000
        (2026, 11, date(2026, 1, 1), date(2026, 11, 16), 15, 30, 150_000_000),
        # starts after the month: nothing
        (2026, 11, date(2026, 12, 3), None, 0, 30, 0),
    ],
)
def test_proration_by_actual_days(
    year: int, month: int, start: date, end: date | None, days: int, dim: int, expected: int
) -> None:
    assert F.days_in_month(year, month) == dim
    assert F.prorated_days(year, month, start, end) == days
    assert F.round_money(F.prorate(M300, days, dim)) == expected


def test_proration_tie_is_rounded_by_the_named_method() -> None:
    # 3 micro x 15/30 = 1.5 micro: half-even 2, down 1.
    assert F.round_money(F.prorate(3, 15, 30), "half-even") == 2
    assert F.round_money(F.prorate(3, 15, 30), "down") == 1
    # 1 micro x 15/30 = 0.5: half-even 0 (0 is even), half-up 1
    assert F.round_money(F.prorate(1, 15, 30), "half-even") == 0
    assert F.round_money(F.prorate(1, 15, 30), "half-up") == 1


# -- billing periods from the billing day -------------------------------------------------
# Period YYYY-MM runs from the billing day of that month to the billing day of the next (the
# next's excluded). A billing day past a month's end falls on that month's last day.


@pytest.mark.parametrize(
    ("period", "day", "first", "after", "days"),
    [
        ((2026, 11), 1, date(2026, 11, 1), date(2026, 12, 1), 30),  # day 1: the calendar month
        ((2026, 11), 15, date(2026, 11, 15), date(2026, 12, 15), 30),  # 15 Nov - 14 Dec
        ((2026, 12), 15, date(2026, 12, 15), date(2027, 1, 15), 31),  # across the new year
        ((2026, 2), 15, date(2026, 2, 15), date(2026, 3, 15), 28),  # 15 Feb - 14 Mar
        ((2028, 2), 15, date(2028, 2, 15), date(2028, 3, 15), 29),  # leap: 29 Feb inside
        # day 31: 31 Jan, 28 Feb (not 31 Feb), 31 Mar, 30 Apr, 31 May
        ((2026, 1), 31, date(2026, 1, 31), date(2026, 2, 28), 28),
        ((2026, 2), 31, date(2026, 2, 28), date(2026, 3, 31), 31),
        ((2026, 3), 31, date(2026, 3, 31), date(2026, 4, 30), 30),
        ((2026, 4), 31, date(2026, 4, 30), date(2026, 5, 31), 31),
        ((2028, 1), 31, date(2028, 1, 31), date(2028, 2, 29), 29),  # leap February: the 29th
        ((2028, 2), 31, date(2028, 2, 29), date(2028, 3, 31), 31),
        # day 30: 30 Jan - 27 Feb (29 days), then 28 Feb - 29 Mar (30 days)
        ((2026, 1), 30, date(2026, 1, 30), date(2026, 2, 28), 29),
        ((2026, 2), 30, date(2026, 2, 28), date(2026, 3, 30), 30),
    ],
)
def test_billing_periods_from_the_billing_day(
    period: tuple[int, int], day: int, first: date, after: date, days: int
) -> None:
    assert F.period_bounds(*period, day) == (first, after)
    assert F.period_days(*period, day) == days
    assert F.period_of(first, day) == period
    assert F.period_of(after, day) == F.next_month(*period)
    assert F.period_of(after - timedelta(days=1), day) == period  # its last day


def test_billing_day_one_is_the_calendar_month_and_periods_tile() -> None:
    for y in (2026, 2028):
        for m in range(1, 13):
            assert F.period_bounds(y, m, 1) == F.month_bounds(y, m)
            for day in (1, 15, 28, 29, 30, 31):  # each period ends where the next begins
                assert F.period_bounds(y, m, day)[1] == F.period_bounds(*F.next_month(y, m), day)[0]


def test_a_billing_day_outside_1_to_31_is_refused() -> None:
    for day in (0, 32):
        with pytest.raises(F.FormulaError, match="billing day"):
            F.period_start(2026, 11, day)


@pytest.mark.parametrize(
    ("period", "day", "start", "end", "billed", "of", "amount"),
    [
        # day 15, 2026-11 (15 Nov - 14 Dec, 30 days), from 20 Nov: 20 Nov..14 Dec = 25 days
        # 300.00 x 25/30 = 250.00
        ((2026, 11), 15, date(2026, 11, 20), None, 25, 30, 250_000_000),
        # ... ended 1 Dec (excluded): 20..30 Nov = 11 days: 300 x 11/30 = 110.00
        ((2026, 11), 15, date(2026, 11, 20), date(2026, 12, 1), 11, 30, 110_000_000),
        # day 31, 2026-02 (28 Feb - 30 Mar, 31 days), from 1 Mar: 30 days: 300 x 30/31
        # = 290.322580645... -> 290.322581
        ((2026, 2), 31, date(2026, 3, 1), None, 30, 31, 290_322_581),
        # day 31, 2026-01 (31 Jan - 27 Feb, 28 days), whole: 300.00
        ((2026, 1), 31, date(2026, 1, 1), None, 28, 28, 300_000_000),
    ],
)
def test_proration_over_a_billing_period(
    period: tuple[int, int],
    day: int,
    start: date,
    end: date | None,
    billed: int,
    of: int,
    amount: int,
) -> None:
    assert F.prorated_days(*period, start, end, day) == billed
    assert F.period_days(*period, day) == of
    assert F.round_money(F.prorate(M300, billed, of)) == amount


def test_proration_refuses_impossible_months() -> None:
    with pytest.raises(F.FormulaError):
        F.prorate(M300, 31, 30)
    with pytest.raises(F.FormulaError):
        F.prorate(M300, 1, 27)


# -- LAD -----------------------------------------------------------------------------------

FIXED = F.LadTerms("fixed", rate=10_000_000, grace_days=2, cap_kind="amount", cap=50_000_000)
UNCAPPED = F.LadTerms("fixed", rate=10_000_000, grace_days=2)
PCT = F.LadTerms("percent", rate_percent="1.5", grace_days=0, cap_kind="percent",
                 cap_percent="1")  # fmt: skip
CUTOFF = date(2026, 12, 1)


@pytest.mark.parametrize(
    ("committed", "delivered", "days"),
    [
        (date(2026, 11, 10), date(2026, 11, 15), 3),  # 5 days late - 2 grace = 3
        (date(2026, 11, 10), date(2026, 11, 12), 0),  # 2 late, all grace
        (date(2026, 11, 10), date(2026, 11, 13), 1),  # 3 - 2 = 1: first day past grace
        (date(2026, 11, 10), date(2026, 11, 8), 0),  # delivered early
        (date(2026, 11, 10), date(2026, 11, 10), 0),  # on the day
        (date(2026, 11, 10), None, 19),  # open at cut-off 2026-12-01: 21 - 2 = 19
    ],
)
def test_lad_days_late(committed: date, delivered: date | None, days: int) -> None:
    assert F.lad_days_late(committed, delivered, CUTOFF, 2) == days


@pytest.mark.parametrize(
    ("terms", "days", "order_before", "contract_before", "owed", "capped"),
    [
        (FIXED, 3, 0, 0, 30_000_000, False),  # 3 x 10.00 = 30.00, under the 50.00 cap
        (FIXED, 19, 0, 0, 50_000_000, True),  # 19 x 10.00 = 190.00 -> cap 50.00
        (FIXED, 5, 0, 0, 50_000_000, False),  # exactly the cap: 50.00, not past it
        (FIXED, 3, 0, 30_000_000, 20_000_000, True),  # 30.00 owed, 20.00 left of the cap
        (FIXED, 0, 0, 0, 0, False),
        (UNCAPPED, 19, 100_000_000, 100_000_000, 90_000_000, False),  # 190 - 100 credited
        (UNCAPPED, 19, 190_000_000, 190_000_000, 0, False),  # all credited before
        # 1.5 % of 300.00 = 4.50 a day; 3 days = 13.50; cap 1 % of 3600.00 = 36.00
        (PCT, 3, 0, 0, 13_500_000, False),
        # 19 days x 4.50 = 85.50 -> capped at 36.00
        (PCT, 19, 0, 0, 36_000_000, True),
    ],
)
def test_lad_damages(
    terms: F.LadTerms, days: int, order_before: int, contract_before: int, owed: int,
    capped: bool,
) -> None:  # fmt: skip
    _, got, was_capped = F.lad_damages(terms, days, M300, 3_600_000_000, order_before,
                                       contract_before)  # fmt: skip
    assert F.round_money(got) == owed
    assert was_capped is capped


def test_contract_value_months() -> None:
    assert F.contract_months(date(2026, 11, 1), date(2027, 11, 1)) == 12
    assert F.contract_months(date(2026, 11, 15), date(2027, 2, 1)) == 3
    assert F.contract_months(date(2026, 11, 1), None) == 12


# -- availability and the penalty ladder -----------------------------------------------------


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


NOV = (t("2026-11-01T00:00:00+01:00"), t("2026-12-01T00:00:00+01:00"))


def test_overlapping_tickets_count_once() -> None:
    # 10:00-12:00 and 11:00-13:00 on the 20th: one outage 10:00-13:00 = 3 h = 10_800 s
    outages = [
        F.Outage(t("2026-11-20T10:00:00+01:00"), t("2026-11-20T12:00:00+01:00"), "T1"),
        F.Outage(t("2026-11-20T11:00:00+01:00"), t("2026-11-20T13:00:00+01:00"), "T2"),
        # a third one inside the first: changes nothing
        F.Outage(t("2026-11-20T10:30:00+01:00"), t("2026-11-20T10:45:00+01:00"), "T3"),
    ]
    merged = F.merge_outages(outages, *NOV)
    assert len(merged) == 1
    assert merged[0][2] == ("T1", "T3", "T2")
    assert F.outage_seconds(merged) == 10_800
    # November: 30 x 86_400 = 2_592_000 s; 1 - 10_800/2_592_000 = 1 - 1/240
    assert F.availability(10_800, 2_592_000) == 1 - Fraction(1, 240)


def test_a_ticket_spanning_a_month_boundary_is_split() -> None:
    # 2026-10-31 23:00 to 2026-11-01 01:00 (+01:00): one hour in each month
    o = [F.Outage(t("2026-10-31T23:00:00+01:00"), t("2026-11-01T01:00:00+01:00"), "T")]
    oct_ = (t("2026-10-01T00:00:00+02:00"), t("2026-11-01T00:00:00+01:00"))
    assert F.outage_seconds(F.merge_outages(o, *oct_)) == 3_600
    assert F.outage_seconds(F.merge_outages(o, *NOV)) == 3_600
    # October 2026 in Berlin has 31 days and the extra hour of 25 October (summer time
    # ends): 31 x 86_400 + 3_600 = 2_682_000 s
    assert int((oct_[1] - oct_[0]).total_seconds()) == 2_682_000


LADDER = [F.LadderStep("0.1", "5"), F.LadderStep("0.5", "10"), F.LadderStep("1", "20"),
          F.LadderStep(None, "30")]  # fmt: skip


@pytest.mark.parametrize(
    ("outage_s", "step", "penalty"),
    [
        # target 99.9 % of November's 2_592_000 s: 0.1 % = 2_592 s of outage allowed
        (0, None, 0),
        (2_592, None, 0),  # exactly the target: no penalty
        (2_593, 0, 15_000_000),  # just below: 5 % of 300.00 = 15.00
        (5_184, 0, 15_000_000),  # 0.2 % out: shortfall exactly 0.1 point -> first step
        (5_185, 1, 30_000_000),  # past 0.1 point: 10 % = 30.00
        (15_552, 1, 30_000_000),  # 0.6 % out: shortfall 0.5 -> second step (inclusive)
        (15_553, 2, 60_000_000),  # 20 % = 60.00
        (28_512, 2, 60_000_000),  # 1.1 % out: shortfall 1.0 -> third step
        (28_513, 3, 90_000_000),  # past 1 point: 30 % = 90.00
        (2_592_000, 3, 90_000_000),  # down all month
    ],
)
def test_ladder_steps_and_boundaries(outage_s: int, step: int | None, penalty: int) -> None:
    avail = F.availability(outage_s, 2_592_000)
    got_step, got = F.ladder_penalty(avail, "99.9", LADDER, M300)
    assert got_step == step
    assert F.round_money(got) == penalty


# -- tax -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "mode", "method", "net", "tax", "gross"),
    [
        # exclusive 19 % on 100.00: 19.00, gross 119.00
        (100_000_000, "19", "exclusive", "half-even", 100_000_000, 19_000_000, 119_000_000),
        # inclusive 19 % of 119.00: 119 x 19/119 = 19.00; net 100.00
        (119_000_000, "19", "inclusive", "half-even", 100_000_000, 19_000_000, 119_000_000),
        # inclusive 19 % of 10.00: 10 x 19/119 = 1.5966... -> 1.60; net 8.40
        (10_000_000, "19", "inclusive", "half-even", 8_400_000, 1_600_000, 10_000_000),
        # exempt: no tax
        (100_000_000, "19", "exempt", "half-even", 100_000_000, 0, 100_000_000),
        # the tie: 10 % of 0.85 = 0.085 -> half-even 0.08, half-up 0.09
        (850_000, "10", "exclusive", "half-even", 850_000, 80_000, 930_000),
        (850_000, "10", "exclusive", "half-up", 850_000, 90_000, 940_000),
        # 10 % of 0.95 = 0.095 -> half-even 0.10 (9.5 cents -> 10, even)
        (950_000, "10", "exclusive", "half-even", 950_000, 100_000, 1_050_000),
        # a credit: 19 % of -50.00 = -9.50
        (-50_000_000, "19", "exclusive", "half-even", -50_000_000, -9_500_000, -59_500_000),
    ],
)
def test_tax(
    amount: int, rate: str, mode: F.TaxMode, method: F.RoundingMethod, net: int, tax: int,
    gross: int,
) -> None:  # fmt: skip
    assert F.tax(amount, rate, mode, method) == F.TaxResult(net, tax, gross)


def test_explanation_texts() -> None:
    assert F.micro_text(Fraction(3_300_000_000, 31)) == "(106451612 + 28/31)"
    assert F.micro_text(Fraction(-7, 2)) == "-(3 + 1/2)"
    assert F.percent_text(1 - Fraction(1, 240)) == "99.58333"
