"""The rating engine against prices worked out by hand (issue 3).

Every expected amount below was computed by hand from the rules in docs/tariffs.md, never
copied from the engine; the arithmetic is in the comment next to each case, in micro-units
(1 currency unit = 1,000,000). Per-second prices: 0.60 a minute = 600,000 / 60 = 10,000 a
second. Rounding to 2 decimals is a step of 10,000 micro-units.

The table cases also check that ``rate(ctx, n).total == cost(ctx, n)`` and that the counted
lines of the breakdown add up to the total exactly. The property tests (hypothesis) check
monotonicity, the exactness of ``affordable`` and that a session cut into reports costs what
one report costs.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs import (
    PlanBook,
    PlanVersion,
    Rating,
    RatingError,
    TariffRater,
    UnknownPlan,
    UnknownService,
    UsageContext,
    load_plans,
    parse_plan,
)
from tariffs.rater import money_json, round_to


def ms(iso: str) -> int:
    """Unix milliseconds of an ISO time with an offset (or Z)."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# -- small plans written for the tests ---------------------------------------------------------

# UTC, no tax, rounding to the micro-unit: the amounts are the bare arithmetic.
# Per second: default peak 10,000; offpeak 5,000; weekend 2,000; fixed 15,000; berlin 20,000;
# mobile 15,000 then 5,000 from the 600th second; premium 50,000 + connect 500,000;
# "call" 10,000 with a session cap of 1,000,000.
T_VOICE = """
name = "t-voice"
timezone = "UTC"
free_destinations = ["freephone"]

[rounding]
method = "half-even"
decimals = 6

[numbering]
country_code = "49"

[destinations]
national = ["49"]
fixed = ["493"]
berlin = ["4930"]
mobile = ["4915"]
premium = ["49900"]
freephone = ["49800"]
intl = ["*"]

[calendar]
holidays = [2026-12-25]

[[bands]]
name = "peak"
days = ["weekday"]
from = "08:00"
to = "19:00"

[[bands]]
name = "weekend"
days = ["weekend", "hol"]

[[bands]]
name = "offpeak"

[services.voice]
unit = "seconds"
default_quota = 60

[services.call]
unit = "seconds"
default_quota = 60
session_cap = "1.00"

[[rates]]
service = "voice"
first_increment = 60
increment = 6
price = "0.60"
per = 60

[[rates]]
service = "voice"
bands = ["offpeak"]
first_increment = 60
increment = 6
price = "0.30"
per = 60

[[rates]]
service = "voice"
bands = ["weekend"]
first_increment = 60
increment = 6
price = "0.12"
per = 60

[[rates]]
service = "voice"
destinations = ["fixed"]
first_increment = 60
increment = 6
price = "0.90"
per = 60

[[rates]]
service = "voice"
destinations = ["berlin"]
first_increment = 60
increment = 6
price = "1.20"
per = 60

[[rates]]
service = "voice"
destinations = ["mobile"]
first_increment = 60
increment = 1
price = "0.90"
per = 60
tiers = [{ from = 600, price = "0.30", per = 60 }]

[[rates]]
service = "voice"
destinations = ["premium"]
connect_fee = "0.50"
first_increment = 60
increment = 60
price = "3.00"
per = 60

[[rates]]
service = "call"
price = "0.60"
per = 60

[[discounts]]
name = "fixed evenings"
percent = "25"
destinations = ["fixed"]
bands = ["offpeak"]
"""

# Tax added (exclusive 19 %), rounded half-even to the cent; SMS 0.10 an event, USSD (tax
# exempt service) 0.10, data 0.01 per started kB (1,000 octets).
T_TAX = """
name = "t-tax"
timezone = "UTC"

[rounding]
method = "half-even"
decimals = 2

[tax]
rate = "19"
inclusive = false
exempt_services = ["ussd"]
exempt_destinations = ["charity"]

[numbering]
country_code = "49"

[destinations]
national = ["49"]
charity = ["4981190"]

[services.sms]
unit = "events"
default_quota = 1

[services.ussd]
unit = "events"
default_quota = 1

[services.data]
unit = "octets"
default_quota = 1000000

[[rates]]
service = "sms"
price = "0.10"

[[rates]]
service = "ussd"
price = "0.10"

[[rates]]
service = "data"
first_increment = 1000
increment = 1000
price = "0.01"
per = 1000
"""

# Rounding: "ev" costs exactly 1 micro-unit an event, so n events cost n micro-units before
# rounding; "half" costs half a micro-unit an event (0.000001 per 2).
T_ROUND = """
name = "t-round-{method}-{decimals}"
timezone = "UTC"

[rounding]
method = "{method}"
decimals = {decimals}

[services.ev]
unit = "events"
default_quota = 1

[services.half]
unit = "events"
default_quota = 1

[[rates]]
service = "ev"
price = "0.000001"

[[rates]]
service = "half"
price = "0.000001"
per = 2
"""

# Plan versions: v2 is in force from 2026-06-01T00:00:00+02:00 = 2026-05-31T22:00:00Z.
T_VER = """
name = "t-ver"
version = {version}
effective_from = {effective_from}
timezone = "UTC"

[rounding]
decimals = 6

[services.sms]
unit = "events"
default_quota = 1

[services.voice]
unit = "seconds"
default_quota = 60

[[rates]]
service = "sms"
price = "{sms}"

[[rates]]
service = "voice"
price = "{voice}"
per = 60
"""

# Daylight saving in Europe/Berlin: "night" 00:00-03:00 local at 1,000 a second, "day" at
# 10,000 a second, per second from the first.
T_DST = """
name = "t-dst"
timezone = "Europe/Berlin"

[rounding]
decimals = 6

[[bands]]
name = "night"
from = "00:00"
to = "03:00"

[[bands]]
name = "day"

[services.voice]
unit = "seconds"
default_quota = 60

[[rates]]
service = "voice"
bands = ["night"]
price = "0.06"
per = 60

[[rates]]
service = "voice"
bands = ["day"]
price = "0.60"
per = 60

[services.nightfree]
unit = "seconds"
default_quota = 60

[[rates]]
service = "nightfree"
bands = ["night"]
price = "0"

[[rates]]
service = "nightfree"
bands = ["day"]
price = "0.60"
per = 60
"""

# Numbering read differently: a bare number is national, the international prefix is 011.
T_BARE = """
name = "t-bare"
timezone = "UTC"

[rounding]
decimals = 6

[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "011"
bare = "national"

[destinations]
berlin = ["4930"]
other = ["*"]

[services.sms]
unit = "events"
default_quota = 1

[[rates]]
service = "sms"
price = "0.01"

[[rates]]
service = "sms"
destinations = ["berlin"]
price = "0.05"
"""

# Gaps: a rate only for one destination, a voice rate only in the peak band, no roaming "*".
T_GAPS = """
name = "t-gaps"
timezone = "UTC"

[destinations]
only = ["4930"]
rest = ["*"]

[places]
home = ["26201"]
[places.roaming]
eu = ["208"]

[[bands]]
name = "peak"
days = ["weekday"]
from = "08:00"
to = "19:00"

[[bands]]
name = "offpeak"

[services.sms]
unit = "events"
default_quota = 1

[services.voice]
unit = "seconds"
default_quota = 60

[[rates]]
service = "sms"
destinations = ["only"]
price = "0.10"

[[rates]]
service = "voice"
bands = ["peak"]
price = "0.60"
per = 60
"""

ROUND_PLANS = [
    T_ROUND.format(method=m, decimals=d)
    for m in ("up", "down", "half-even")
    for d in (0, 2, 3, 5, 6)
]
VERSIONS = [
    T_VER.format(version=1, effective_from="2026-01-01T00:00:00Z", sms="0.10", voice="0.60"),
    T_VER.format(version=2, effective_from="2026-06-01T00:00:00+02:00", sms="0.20", voice="1.20"),
]


def all_plans() -> list[PlanVersion]:
    inline = [T_VOICE, T_TAX, T_DST, T_BARE, T_GAPS, *ROUND_PLANS, *VERSIONS]
    return [*load_plans(), *(parse_plan(t, f"<{i}>") for i, t in enumerate(inline))]


PLANS = all_plans()
RATER = TariffRater(PlanBook(PLANS))


def fresh_rater() -> TariffRater:
    """A rater with no cached sessions."""
    return TariffRater(PlanBook(PLANS))


# -- the table -----------------------------------------------------------------------------------

UTC_MON = "2026-11-23T10:00:00Z"  # a Monday, peak
BER_MON = "2026-11-23T10:00:00+01:00"  # the same in Berlin (CET)
BER_SAT = "2026-11-28T10:00:00+01:00"


@dataclass(frozen=True)
class Case:
    plan: str
    service: str
    units: int
    expected: int
    to: str = ""
    at: str = UTC_MON
    location: str = ""

    def ctx(self) -> UsageContext:
        return UsageContext(self.plan, self.service, "sub-1", ms(self.at), self.to, self.location)


def c(case_id: str, *args: object, **kw: object) -> object:
    return pytest.param(Case(*args, **kw), id=case_id)  # type: ignore[arg-type]


NAT = "+4912345678"  # national (49) in t-voice
# fmt: off
CASES = [
    # --- t-voice: destinations by longest prefix, number forms (peak, 60 s) ---
    c("prefix-49-national", "t-voice", "voice", 60, 600_000, NAT),  # 60 x 10,000
    c("prefix-493-fixed", "t-voice", "voice", 60, 900_000, "+4931123456"),  # 60 x 15,000
    c("prefix-4930-berlin", "t-voice", "voice", 60, 1_200_000, "+4930123456"),  # 60 x 20,000
    c("form-00", "t-voice", "voice", 60, 1_200_000, "004930123456"),  # -> 4930.. berlin
    c("form-national-0", "t-voice", "voice", 60, 1_200_000, "030123456"),  # 49+30123456
    c("form-national-0-fixed", "t-voice", "voice", 60, 900_000, "031123456"),  # 4931.. fixed
    c("form-bare-intl", "t-voice", "voice", 60, 1_200_000, "4930123456"),  # berlin
    c("form-spaces-dashes", "t-voice", "voice", 60, 1_200_000, "+49 30 123-456"),  # berlin
    c("prefix-4915-mobile", "t-voice", "voice", 60, 900_000, "+4915112345"),  # 60 x 15,000
    c("prefix-star-intl", "t-voice", "voice", 60, 600_000, "+33123456789"),  # default rate
    c("no-number", "t-voice", "voice", 60, 600_000),  # no destination: default rate
    # --- t-bare: bare numbers national, 011 international ---
    c("bare-national", "t-bare", "sms", 1, 50_000, "301234"),  # 49301234 berlin 0.05
    c("bare-plus", "t-bare", "sms", 1, 10_000, "+301234"),  # 301234 other 0.01
    c("bare-011", "t-bare", "sms", 1, 50_000, "0114930123"),  # 4930123 berlin
    c("bare-00-is-national", "t-bare", "sms", 1, 10_000, "004930123"),  # 49+04930123 other
    c("bare-0", "t-bare", "sms", 1, 50_000, "030123"),  # 4930123 berlin
    # --- increments: first 60 whole, then 6 s steps (national, peak 10,000/s) ---
    c("zero-units", "t-voice", "voice", 0, 0, NAT),
    c("1s-of-60s-first", "t-voice", "voice", 1, 600_000, NAT),  # billed 60 x 10,000
    c("10s-of-60s-first", "t-voice", "voice", 10, 600_000, NAT),  # billed 60 x 10,000
    c("exactly-first", "t-voice", "voice", 60, 600_000, NAT),  # 60 x 10,000
    c("61s-one-6s-step", "t-voice", "voice", 61, 660_000, NAT),  # 60+6=66 x 10,000
    c("66s-exact-step", "t-voice", "voice", 66, 660_000, NAT),  # 66 x 10,000
    c("67s-two-steps", "t-voice", "voice", 67, 720_000, NAT),  # 60+12=72 x 10,000
    c("per-second-after-60", "t-voice", "voice", 61, 915_000, "+4915112345"),  # 61 x 15,000
    # --- bands (UTC): peak 08-19 weekdays, weekend + holidays, offpeak ---
    # 18:59:30 + 125 s: billed 60 + 11x6 = 126; 30 peak x 10,000 + 96 offpeak x 5,000
    c("band-switch-mid-call", "t-voice", "voice", 125, 780_000, NAT, "2026-11-23T18:59:30Z"),
    c("start-on-19:00", "t-voice", "voice", 60, 300_000, NAT, "2026-11-23T19:00:00Z"),  # 60x5,000
    c("start-on-08:00", "t-voice", "voice", 60, 600_000, NAT, "2026-11-23T08:00:00Z"),
    # 07:59:59: 1 s offpeak 5,000 + 59 s peak 590,000
    c("start-1s-before-08", "t-voice", "voice", 60, 595_000, NAT, "2026-11-23T07:59:59Z"),
    c("end-on-19:00", "t-voice", "voice", 60, 600_000, NAT, "2026-11-23T18:59:00Z"),  # all peak
    # 18:59:00 + 61 s: billed 66 = 60 peak 600,000 + 6 offpeak 30,000
    c("step-over-19:00", "t-voice", "voice", 61, 630_000, NAT, "2026-11-23T18:59:00Z"),
    # 18:59:55, 10 s: the billed first 60 s are cut too: 5 x 10,000 + 55 x 5,000
    c("first-incr-across", "t-voice", "voice", 10, 325_000, NAT, "2026-11-23T18:59:55Z"),
    c("weekend", "t-voice", "voice", 60, 120_000, NAT, "2026-11-28T10:00:00Z"),  # 60 x 2,000
    # Fri 23:59 + 120 s: 60 offpeak 300,000 + 60 weekend 120,000
    c("into-weekend", "t-voice", "voice", 120, 420_000, NAT, "2026-11-27T23:59:00Z"),
    # Sun 23:59:30 + 60 s: 30 weekend 60,000 + 30 Monday offpeak 150,000
    c("out-of-weekend", "t-voice", "voice", 60, 210_000, NAT, "2026-11-29T23:59:30Z"),
    c("holiday-weekday", "t-voice", "voice", 60, 120_000, NAT, "2026-12-25T10:00:00Z"),  # hol
    c("day-before-holiday", "t-voice", "voice", 60, 600_000, NAT, "2026-12-24T10:00:00Z"),
    # Thu 23:59:30 + 60: 30 offpeak 150,000 + 30 holiday (weekend) 60,000
    c("into-holiday", "t-voice", "voice", 60, 210_000, NAT, "2026-12-24T23:59:30Z"),
    # A holiday has no 19:00 peak boundary: 60 x 2,000 weekend
    c("holiday-at-18:59:30", "t-voice", "voice", 60, 120_000, NAT, "2026-12-25T18:59:30Z"),
    # --- connect fee (premium: 0.50 + 3.00 per started minute) ---
    c("connect-zero-units", "t-voice", "voice", 0, 0, "+49900123456"),  # no connect fee
    c("connect-10s", "t-voice", "voice", 10, 3_500_000, "+49900123456"),  # 500,000 + 3,000,000
    c("connect-60s", "t-voice", "voice", 60, 3_500_000, "+49900123456"),
    c("connect-61s", "t-voice", "voice", 61, 6_500_000, "+49900123456"),  # 500,000 + 2x3,000,000
    # premium names a destination: beats the weekend band rate
    c("dest-beats-band", "t-voice", "voice", 10, 3_500_000, "+49900123456", "2026-11-28T10:00:00Z"),
    # --- tiers (mobile: 15,000/s, from the 600th second 5,000/s) ---
    c("tier-600", "t-voice", "voice", 600, 9_000_000, "+4915112345"),  # 600 x 15,000
    c("tier-601", "t-voice", "voice", 601, 9_005_000, "+4915112345"),  # 9,000,000 + 5,000
    c("tier-660", "t-voice", "voice", 660, 9_300_000, "+4915112345"),  # + 60 x 5,000
    c("tier-1200", "t-voice", "voice", 1200, 12_000_000, "+4915112345"),  # + 600 x 5,000
    # --- free destination ---
    c("free-dest-61", "t-voice", "voice", 61, 0, "+49800123456"),
    c("free-dest-hour", "t-voice", "voice", 3600, 0, "+49800123456"),
    # --- discount 25 % on fixed in offpeak (fixed 15,000/s at any band) ---
    # 20:00: 60 x 15,000 = 900,000 - 225,000
    c("discount-offpeak", "t-voice", "voice", 60, 675_000, "+4931123456", "2026-11-23T20:00:00Z"),
    c("no-discount-peak", "t-voice", "voice", 60, 900_000, "+4931123456"),
    c(
        "no-discount-weekend", "t-voice", "voice", 60, 900_000, "+4931123456",
        "2026-11-28T10:00:00Z",
    ),
    # 18:59:30: 30 x 15,000 peak = 450,000 + 30 x 15,000 x 0.75 = 337,500
    c("discount-half", "t-voice", "voice", 60, 787_500, "+4931123456", "2026-11-23T18:59:30Z"),
    # --- session cap 1.00 ("call": 10,000/s, per second) ---
    c("cap-below", "t-voice", "call", 99, 990_000, NAT),  # 99 x 10,000
    c("cap-exact", "t-voice", "call", 100, 1_000_000, NAT),  # 100 x 10,000
    c("cap-above", "t-voice", "call", 101, 1_000_000, NAT),  # 1,010,000 capped
    c("cap-far-above", "t-voice", "call", 5000, 1_000_000, NAT),  # 50,000,000 capped
    # --- tax exclusive 19 % (t-tax, half-even to the cent) ---
    c("tax-added", "t-tax", "sms", 1, 120_000, "+4940123"),  # 100,000 + 19,000 = 119,000 -> .12
    c("tax-exempt-dest", "t-tax", "sms", 1, 100_000, "+4981190123"),  # no tax
    c("tax-exempt-service", "t-tax", "ussd", 1, 100_000),  # no tax
    # 5 x 100,000 = 500,000 + 95,000 = 595,000: 59.5 cents, tie, 59 odd -> 60
    c("tax-tie-up", "t-tax", "sms", 5, 600_000, "+4940123"),
    # 15 x 100,000 = 1,500,000 + 285,000 = 1,785,000: 178.5 cents, tie, 178 even -> 178
    c("tax-tie-down", "t-tax", "sms", 15, 1_780_000, "+4940123"),
    # --- data per kB (0.01 per started 1,000 octets, + 19 %) ---
    c("data-1-octet", "t-tax", "data", 1, 10_000),  # 10,000 + 1,900 = 11,900 -> 1 cent
    c("data-1001", "t-tax", "data", 1001, 20_000),  # 2 kB: 20,000 + 3,800 = 23,800 -> 2 cents
    c("data-3000", "t-tax", "data", 3000, 40_000),  # 30,000 + 5,700 = 35,700 -> 4 cents
    c("data-zero", "t-tax", "data", 0, 0),
    # --- rounding: "ev" n events = n micro before rounding; steps: dec 0 = 1,000,000,
    # dec 2 = 10,000, dec 3 = 1,000, dec 5 = 10 ---
    c("he2-below", "t-round-half-even-2", "ev", 4999, 0),  # 0.4999 step -> 0
    c("he2-tie-even", "t-round-half-even-2", "ev", 5000, 0),  # 0.5, q=0 even -> 0
    c("he2-above", "t-round-half-even-2", "ev", 5001, 10_000),  # 0.5001 -> 1
    c("he2-tie-odd", "t-round-half-even-2", "ev", 15000, 20_000),  # 1.5, q=1 odd -> 2
    c("he2-tie-2.5", "t-round-half-even-2", "ev", 25000, 20_000),  # 2.5, q=2 even -> 2
    c("he2-exact", "t-round-half-even-2", "ev", 10000, 10_000),
    c("up2-below", "t-round-up-2", "ev", 4999, 10_000),
    c("up2-tie", "t-round-up-2", "ev", 5000, 10_000),
    c("up2-above", "t-round-up-2", "ev", 5001, 10_000),
    c("up2-1-micro", "t-round-up-2", "ev", 1, 10_000),
    c("up2-exact", "t-round-up-2", "ev", 20000, 20_000),
    c("up2-tie-2.5", "t-round-up-2", "ev", 25000, 30_000),
    c("down2-below", "t-round-down-2", "ev", 4999, 0),
    c("down2-tie", "t-round-down-2", "ev", 5000, 0),
    c("down2-above", "t-round-down-2", "ev", 5001, 0),
    c("down2-tie-1.5", "t-round-down-2", "ev", 15000, 10_000),
    c("down2-just-below-2", "t-round-down-2", "ev", 19999, 10_000),
    c("he0-tie-0.5", "t-round-half-even-0", "ev", 500_000, 0),  # 0.5 unit -> 0
    c("he0-tie-1.5", "t-round-half-even-0", "ev", 1_500_000, 2_000_000),
    c("he0-tie-2.5", "t-round-half-even-0", "ev", 2_500_000, 2_000_000),
    c("up0-tie", "t-round-up-0", "ev", 500_000, 1_000_000),
    c("down0-tie", "t-round-down-0", "ev", 1_500_000, 1_000_000),
    c("he3-tie-1.5", "t-round-half-even-3", "ev", 1500, 2000),
    c("he3-tie-2.5", "t-round-half-even-3", "ev", 2500, 2000),
    c("he3-below", "t-round-half-even-3", "ev", 2499, 2000),
    c("he3-above", "t-round-half-even-3", "ev", 2501, 3000),
    c("up3-tie", "t-round-up-3", "ev", 2500, 3000),
    c("up3-below", "t-round-up-3", "ev", 2499, 3000),
    c("down3-tie", "t-round-down-3", "ev", 1500, 1000),
    c("down3-above", "t-round-down-3", "ev", 2501, 2000),
    c("he5-tie-1.5", "t-round-half-even-5", "ev", 15, 20),
    c("he5-tie-2.5", "t-round-half-even-5", "ev", 25, 20),
    c("up5-tie", "t-round-up-5", "ev", 25, 30),
    c("down5-tie", "t-round-down-5", "ev", 25, 20),
    c("he6-exact", "t-round-half-even-6", "ev", 7, 7),
    # "half": n events = n/2 micro; decimals 6: step 1 micro
    c("he6-half-0.5", "t-round-half-even-6", "half", 1, 0),  # 0.5 -> 0 (even)
    c("he6-half-1.5", "t-round-half-even-6", "half", 3, 2),  # 1.5 -> 2
    c("he6-half-2.5", "t-round-half-even-6", "half", 5, 2),  # 2.5 -> 2
    c("he6-half-2", "t-round-half-even-6", "half", 4, 2),
    c("up6-half-0.5", "t-round-up-6", "half", 1, 1),
    c("up6-half-2.5", "t-round-up-6", "half", 5, 3),
    c("down6-half-1.5", "t-round-down-6", "half", 3, 1),
    c("down6-half-2.5", "t-round-down-6", "half", 5, 2),
    # --- plan versions: v1 0.10/SMS and 10,000/s, v2 (from 2026-05-31T22:00Z) 0.20 and 20,000/s
    c("ver1-last-second", "t-ver", "sms", 1, 100_000, at="2026-05-31T21:59:59Z"),
    c("ver2-first-second", "t-ver", "sms", 1, 200_000, at="2026-05-31T22:00:00Z"),
    c("ver2-later", "t-ver", "sms", 1, 200_000, at="2026-07-01T12:00:00Z"),
    # started under v1, runs into v2's time: v1 throughout, 120 x 10,000
    c("ver-at-start", "t-ver", "voice", 120, 1_200_000, at="2026-05-31T21:59:00Z"),
    # --- DST in Europe/Berlin (t-dst: night 00-03 local 1,000/s, day 10,000/s) ---
    # 2026-03-29 01:59 CET = 00:59Z; at 01:00Z the clock jumps 02:00 CET -> 03:00 CEST:
    # 60 night x 1,000 + 60 day x 10,000
    c("dst-spring", "t-dst", "voice", 120, 660_000, at="2026-03-29T00:59:00Z"),
    # 00:00 CET = 23:00Z; night until 01:00Z = 7200 s x 1,000 + 100 s day x 10,000
    c("dst-spring-night", "t-dst", "voice", 7300, 8_200_000, at="2026-03-28T23:00:00Z"),
    # The 23-hour day: 7,200 s night 7,200,000 + 21 h = 75,600 s day 756,000,000
    c("dst-spring-23h", "t-dst", "voice", 82_800, 763_200_000, at="2026-03-28T23:00:00Z"),
    # 2026-10-25 02:59 CEST = 00:59Z; at 01:00Z 03:00 CEST -> 02:00 CET: still night
    c("dst-fall", "t-dst", "voice", 120, 120_000, at="2026-10-25T00:59:00Z"),
    # night until 03:00 CET = 02:00Z: 3660 s x 1,000 + 60 day x 10,000
    c("dst-fall-62min", "t-dst", "voice", 3720, 4_260_000, at="2026-10-25T00:59:00Z"),
    # The 25-hour day from 00:00 CEST (22:00Z): night 22:00Z-02:00Z = 14,400 s = 14,400,000,
    # then day until 00:00 CET (23:00Z) = 21 h = 75,600 s x 10,000 = 756,000,000
    c("dst-fall-25h", "t-dst", "voice", 90_000, 770_400_000, at="2026-10-24T22:00:00Z"),
    # --- shipped: prepaid-basic (Berlin, 19 % included, half-even cents). Home voice:
    # peak 0.09/min = 1,500/s, from 600 s 0.05/min = 833 1/3 /s; offpeak/weekend 0.06/min
    # = 1,000/s, from 600 s 0.03/min = 500/s; weekend national 50 % off ---
    c("pb-first-incr", "prepaid-basic", "voice", 10, 90_000, "0301234567", BER_MON),  # 60x1,500
    # 61 x 1,500 = 91,500 = 9.15 cents -> 9
    c("pb-61s", "prepaid-basic", "voice", 61, 90_000, "0301234567", BER_MON),
    # 70 x 1,500 = 105,000 = 10.5 cents, tie, 10 even -> 10
    c("pb-tie-even", "prepaid-basic", "voice", 70, 100_000, "0301234567", BER_MON),
    # 90 x 1,500 = 135,000 = 13.5 cents, tie, 13 odd -> 14
    c("pb-tie-odd", "prepaid-basic", "voice", 90, 140_000, "0301234567", BER_MON),
    # docs example: 30 x 1,500 = 45,000 + 95 x 1,000 = 95,000 = 140,000
    c(
        "pb-doc-band-switch", "prepaid-basic", "voice", 125, 140_000, "0049301234",
        "2026-11-23T18:59:30+01:00",
    ),
    # 600 x 1,500 = 900,000 + 60 x 833 1/3 = 50,000
    c("pb-tier", "prepaid-basic", "voice", 660, 950_000, "0301234567", BER_MON),
    # 900,000 + 6 x 833 1/3 = 905,000 = 90.5 cents, tie, 90 even -> 90
    c("pb-tier-frac-tie", "prepaid-basic", "voice", 606, 900_000, "0301234567", BER_MON),
    # 900,000 + 18 x 833 1/3 = 915,000 = 91.5 cents, tie, 91 odd -> 92
    c("pb-tier-frac-tie-odd", "prepaid-basic", "voice", 618, 920_000, "0301234567", BER_MON),
    # 18:55 + 700 s: 300 peak x 1,500 = 450,000; offpeak 300..600 x 1,000 = 300,000;
    # 600..700 (tier) x 500 = 50,000
    c(
        "pb-tier-and-band", "prepaid-basic", "voice", 700, 800_000, "0301234567",
        "2026-11-23T18:55:00+01:00",
    ),
    # weekend national-mobile: 60 x 1,000 = 60,000, half off
    c("pb-weekend-mobile", "prepaid-basic", "voice", 60, 30_000, "01511234567", BER_SAT),
    # 600 x 1,000 + 100 x 500 = 650,000, half = 325,000 = 32.5 cents, tie, 32 even
    c("pb-weekend-tier-tie", "prepaid-basic", "voice", 700, 320_000, "0301234567", BER_SAT),
    # holiday Friday: weekend band, 60 x 1,000 = 60,000, half off
    c(
        "pb-holiday", "prepaid-basic", "voice", 60, 30_000, "0301234567",
        "2026-12-25T10:00:00+01:00",
    ),
    c(
        "pb-day-before-holiday", "prepaid-basic", "voice", 60, 90_000, "0301234567",
        "2026-12-24T10:00:00+01:00",
    ),
    # premium: 500,000 + 2 x 1,990,000
    c("pb-premium", "prepaid-basic", "voice", 61, 4_480_000, "0900123456", BER_MON),
    # 0137 is premium too: 500,000 + 1,990,000
    c("pb-premium-137", "prepaid-basic", "voice", 1, 2_490_000, "01371234", BER_MON),
    c("pb-premium-zero", "prepaid-basic", "voice", 0, 0, "0900123456", BER_MON),
    # eu: 66 x 290,000 / 60 = 319,000 = 31.9 cents -> 32
    c("pb-eu", "prepaid-basic", "voice", 61, 320_000, "+33123456789", BER_MON),
    c("pb-north-america", "prepaid-basic", "voice", 60, 290_000, "+12125551234", BER_MON),
    # world: 150,000 + 66 x 1,490,000 / 60 = 1,639,000 -> 1,789,000 = 178.9 cents -> 179
    c("pb-world", "prepaid-basic", "voice", 61, 1_790_000, "+81312345678", BER_MON),
    c("pb-toll-free", "prepaid-basic", "voice", 3600, 0, "0800123456", BER_MON),
    # roaming eu (208 France): first 30, 1,500/s: 30 x 1,500 = 45,000 = 4.5 cents, tie -> 4
    c("pb-roam-eu-tie", "prepaid-basic", "voice", 10, 40_000, "0301234567", BER_MON, "20801"),
    # 31 x 1,500 = 46,500 -> 5 cents
    c("pb-roam-eu", "prepaid-basic", "voice", 31, 50_000, "0301234567", BER_MON, "20801"),
    # roaming world: 250,000 + 2 x 2,490,000
    c("pb-roam-world", "prepaid-basic", "voice", 61, 5_230_000, "0301234567", BER_MON, "310260"),
    c("pb-mtc-home", "prepaid-basic", "voice-mt", 300, 0, "", BER_MON, "26201"),
    c("pb-mtc-no-location", "prepaid-basic", "voice-mt", 300, 0, "", BER_MON),
    c("pb-mtc-eu", "prepaid-basic", "voice-mt", 300, 0, "", BER_MON, "20801"),
    c("pb-mtc-eu-uk", "prepaid-basic", "voice-mt", 300, 0, "", BER_MON, "23415"),  # 234: eu
    c("pb-mtc-world-1s", "prepaid-basic", "voice-mt", 1, 990_000, "", BER_MON, "310260"),
    c("pb-mtc-world-61s", "prepaid-basic", "voice-mt", 61, 1_980_000, "", BER_MON, "310260"),
    c("pb-sms", "prepaid-basic", "sms", 1, 90_000, "01511234567", BER_MON),
    c("pb-sms-3", "prepaid-basic", "sms", 3, 270_000, "01511234567", BER_MON),  # 3 x 90,000
    c("pb-sms-eu", "prepaid-basic", "sms", 1, 190_000, "+33612345678", BER_MON),
    c("pb-sms-roam-world", "prepaid-basic", "sms", 1, 390_000, "01511234567", BER_MON, "310260"),
    # data per started 100 kB: 10,000 each
    c("pb-data-1", "prepaid-basic", "data", 1, 10_000, "", BER_MON),
    c("pb-data-100k", "prepaid-basic", "data", 100_000, 10_000, "", BER_MON),
    c("pb-data-100k+1", "prepaid-basic", "data", 100_001, 20_000, "", BER_MON),
    c("pb-data-5M", "prepaid-basic", "data", 5_000_000, 500_000, "", BER_MON),  # 50 x 10,000
    # 1001 x 10,000 = 10,010,000 capped to 10.00
    c("pb-data-cap", "prepaid-basic", "data", 100_000_001, 10_000_000, "", BER_MON),
    # roaming world: per started 10 kB at 0.05: 2 x 50,000
    c("pb-data-roam", "prepaid-basic", "data", 10_001, 100_000, "", BER_MON, "310260"),
    # DST Sunday, weekend band throughout: 600 x 1,000 + 6,600 x 500 = 3,900,000, half off
    c(
        "pb-dst-weekend", "prepaid-basic", "voice", 7200, 1_950_000, "0301234567",
        "2026-03-29T01:30:00+01:00",
    ),
    # --- shipped: gov-payu (19 % added, half-even cents, per started minute / MB) ---
    # 40,000 + 7,600 = 47,600 -> 5 cents
    c("gov-1s", "gov-payu", "voice", 1, 50_000, "+4940123456", BER_MON),
    # 2 x 40,000 = 80,000 + 15,200 = 95,200 -> 10 cents
    c("gov-61s", "gov-payu", "voice", 61, 100_000, "+4940123456", BER_MON),
    # 2 x 250,000 = 500,000 + 95,000 = 595,000 = 59.5 cents, tie, 59 odd -> 60
    c("gov-intl-tie", "gov-payu", "voice", 61, 600_000, "+33123456789", BER_MON),
    # 250,000 + 47,500 = 297,500 -> 29.75 -> 30 cents
    c("gov-intl-1s", "gov-payu", "voice", 1, 300_000, "+33123456789", BER_MON),
    c("gov-emergency", "gov-payu", "voice", 60, 0, "+49112", BER_MON),
    c("gov-agency-free", "gov-payu", "voice", 3600, 0, "+49301850123", BER_MON),
    # abroad: 2 x 600,000 = 1,200,000 + 228,000 = 1,428,000 -> 143 cents
    c("gov-abroad", "gov-payu", "voice", 61, 1_430_000, "+4940123456", BER_MON, "20801"),
    c("gov-mtc-home", "gov-payu", "voice-mt", 600, 0, "", BER_MON, "26202"),
    # 300,000 + 57,000 = 357,000 -> 36 cents
    c("gov-mtc-abroad", "gov-payu", "voice-mt", 60, 360_000, "", BER_MON, "20801"),
    c("gov-sms", "gov-payu", "sms", 1, 20_000, "+4915112345", BER_MON),  # 23,800 -> 2 cents
    # 5 x 20,000 = 100,000 + 19,000 = 119,000 -> 12 cents
    c("gov-sms-5", "gov-payu", "sms", 5, 120_000, "+4915112345", BER_MON),
    c("gov-data-1", "gov-payu", "data", 1, 0, "", BER_MON),  # 2,000 + 380 = 2,380 -> 0
    # 3 MB: 6,000 + 1,140 = 7,140 -> 1 cent
    c("gov-data-3MB", "gov-payu", "data", 3_000_000, 10_000, "", BER_MON),
    # 6 started MB: 12,000 + 2,280 = 14,280 -> 1 cent
    c("gov-data-5MB+1", "gov-payu", "data", 5_000_001, 10_000, "", BER_MON),
    # --- shipped: bundle-10 (19 % included, up to the cent, voice cap 5.00) ---
    c("b10-first-30", "bundle-10", "voice", 10, 60_000, "+4940123456", BER_MON),  # 30 x 2,000
    c("b10-up", "bundle-10", "voice", 31, 70_000, "+4940123456", BER_MON),  # 62,000 -> up
    # premium: 300,000 + 2,990,000
    c("b10-premium", "bundle-10", "voice", 10, 3_290_000, "+49900123456", BER_MON),
    # 300,000 + 2 x 2,990,000 = 6,280,000, capped at 5,000,000
    c("b10-premium-cap", "bundle-10", "voice", 61, 5_000_000, "+49900123456", BER_MON),
    # international 0.49/min, first 60 then 6: 66 x 490,000 / 60 = 539,000 -> up 540,000
    c("b10-intl", "bundle-10", "voice", 61, 540_000, "+33123456789", BER_MON),
    c("b10-intl-600", "bundle-10", "voice", 600, 4_900_000, "+33123456789", BER_MON),
    # 612 x 490,000 / 60 = 4,998,000 -> up 5,000,000
    c("b10-intl-612", "bundle-10", "voice", 612, 5_000_000, "+33123456789", BER_MON),
    # 660 x 490,000 / 60 = 5,390,000 capped
    c("b10-intl-cap", "bundle-10", "voice", 660, 5_000_000, "+33123456789", BER_MON),
    c("b10-toll-free", "bundle-10", "voice", 600, 0, "+49800123456", BER_MON),
    c("b10-roam-eu", "bundle-10", "voice", 10, 60_000, "+4940123456", BER_MON, "20801"),
    # world: 2 started minutes x 2,490,000
    c("b10-roam-world", "bundle-10", "voice", 61, 4_980_000, "+4940123456", BER_MON, "310260"),
    c("b10-mtc-world", "bundle-10", "voice-mt", 1, 990_000, "", BER_MON, "310260"),
    c("b10-mtc-home", "bundle-10", "voice-mt", 600, 0, "", BER_MON),
    c("b10-sms", "bundle-10", "sms", 1, 90_000, "+4915112345", BER_MON),
    c("b10-data-1", "bundle-10", "data", 1, 50_000, "", BER_MON),  # 1 started MB
    c("b10-data-1MB+1", "bundle-10", "data", 1_000_001, 100_000, "", BER_MON),  # 2 MB
]
# fmt: on


def check_breakdown(r: Rating, total: int) -> None:
    assert r.total == total
    counted = sum((ln.amount for ln in r.lines if ln.counted), Fraction(0))
    assert counted == total, r.explain()
    assert r.to_json()["total"] == money_json(Fraction(total))["amount"]
    assert r.explain().splitlines()[-1].split()[-2] == money_json(Fraction(total))["amount"]


@pytest.mark.parametrize("case", CASES)
def test_table(case: Case) -> None:
    ctx = case.ctx()
    assert RATER.cost(ctx, case.units) == case.expected
    r = RATER.rate(ctx, case.units)
    check_breakdown(r, case.expected)
    # A fresh rater (no cached session) gives the same.
    assert fresh_rater().cost(ctx, case.units) == case.expected


# -- the breakdown, line by line ---------------------------------------------------------------


def test_breakdown_of_the_band_switch() -> None:
    ctx = Case("t-voice", "voice", 125, 780_000, NAT, "2026-11-23T18:59:30Z").ctx()
    r = RATER.rate(ctx, 125)
    assert (r.units, r.billed_units, r.band, r.destination) == (125, 126, "peak", "national")
    usage = [(ln.units, ln.amount) for ln in r.lines if ln.kind == "usage"]
    assert usage == [(30, F(300_000)), (96, F(480_000))]
    assert [ln.kind for ln in r.lines] == ["usage", "usage"]


def test_breakdown_discount_line() -> None:
    ctx = Case("t-voice", "voice", 60, 0, "+4931123456", "2026-11-23T20:00:00Z").ctx()
    r = RATER.rate(ctx, 60)
    assert [(ln.kind, ln.amount) for ln in r.lines] == [
        ("usage", F(900_000)),  # 60 x 15,000
        ("discount", F(-225_000)),  # 25 %
    ]


def test_breakdown_connect_fee_and_tax_added() -> None:
    ctx = Case("t-voice", "voice", 61, 0, "+49900123456").ctx()
    kinds = [(ln.kind, ln.amount) for ln in RATER.rate(ctx, 61).lines]
    assert kinds == [("connect", F(500_000)), ("usage", F(6_000_000))]
    r = RATER.rate(Case("t-tax", "sms", 1, 0, "+4940123").ctx(), 1)
    # 100,000 + tax 19,000 = 119,000, rounding +1,000 -> 120,000
    assert [(ln.kind, ln.amount, ln.counted) for ln in r.lines] == [
        ("usage", F(100_000), True),
        ("tax", F(19_000), True),
        ("rounding", F(1_000), True),
    ]


def test_breakdown_tax_included_is_shown_not_added() -> None:
    r = RATER.rate(Case("prepaid-basic", "sms", 1, 0, "01511234567", BER_MON).ctx(), 1)
    assert r.total == 90_000
    tax = [ln for ln in r.lines if ln.kind == "tax"]
    # 90,000 x 19 / 119 = 1,710,000 / 119 micro, not counted
    assert len(tax) == 1
    assert tax[0].amount == Fraction(1_710_000, 119)
    assert not tax[0].counted
    # exempt (toll-free) and free: no tax line
    r = RATER.rate(Case("prepaid-basic", "voice", 60, 0, "0800123456", BER_MON).ctx(), 60)
    assert r.total == 0
    assert not [ln for ln in r.lines if ln.kind == "tax"]


def test_breakdown_cap_line() -> None:
    r = RATER.rate(Case("t-voice", "call", 101, 0, NAT).ctx(), 101)
    # 101 x 10,000 = 1,010,000; cap line -10,000
    assert [(ln.kind, ln.amount) for ln in r.lines] == [
        ("usage", F(1_010_000)),
        ("cap", F(-10_000)),
    ]


def test_breakdown_fractional_line_is_exact() -> None:
    # bundle-10 international: 66 x 490,000 / 60 = 539,000 exactly; 67 s is billed 72:
    # 72 x 490,000 / 60 = 588,000, up to 590,000
    ctx = Case("bundle-10", "voice", 67, 0, "+33123456789", BER_MON).ctx()
    r = RATER.rate(ctx, 67)
    assert r.billed_units == 72
    counted = [(ln.kind, ln.amount) for ln in r.lines if ln.counted]
    assert counted == [("usage", F(588_000)), ("rounding", F(2_000))]
    # prepaid-basic tier: 601 s = 900,000 + 833 1/3
    ctx = Case("prepaid-basic", "voice", 601, 0, "0301234567", BER_MON).ctx()
    r = RATER.rate(ctx, 601)
    usage = [ln.amount for ln in r.lines if ln.kind == "usage"]
    assert usage == [900_000, Fraction(2500, 3)]
    assert r.total == 900_000  # 900,833 1/3 = 90.08 cents -> 90


@pytest.mark.parametrize(
    ("micro", "expected"),
    [
        pytest.param(Fraction(140_000), {"amount": "0.14"}, id="cents"),
        pytest.param(Fraction(45_000), {"amount": "0.045"}, id="mills"),
        pytest.param(Fraction(1), {"amount": "0.000001"}, id="one-micro"),
        pytest.param(Fraction(2_000_000), {"amount": "2.00"}, id="whole"),
        pytest.param(Fraction(0), {"amount": "0.00"}, id="zero"),
        pytest.param(Fraction(-225_000), {"amount": "-0.225"}, id="negative"),
        pytest.param(Fraction(1, 2), {"amount": "0.0000005"}, id="half-micro"),
        # 1/3 micro = 1/3,000,000 of a unit = 0.000000333333...
        pytest.param(
            Fraction(1, 3),
            {"amount": "0.000000333333…", "exact": "1/3000000"},
            id="third-micro",
        ),
    ],
)
def test_money_json(micro: Fraction, expected: dict[str, str]) -> None:
    assert money_json(micro) == expected


@pytest.mark.parametrize(
    ("x", "step", "method", "expected"),
    [
        (5, 10, "half-even", 0),
        (15, 10, "half-even", 20),
        (25, 10, "half-even", 20),
        (26, 10, "half-even", 30),
        (24, 10, "half-even", 20),
        (1, 10, "up", 10),
        (10, 10, "up", 10),
        (19, 10, "down", 10),
        (20, 10, "down", 20),
        (0, 10, "up", 0),
        (0, 10, "half-even", 0),
    ],
)
def test_round_to(x: int, step: int, method: str, expected: int) -> None:
    assert round_to(x, step, method) == expected


# -- DST: no crash, billed units right ------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "units"),
    [
        ("2026-03-29T00:59:00Z", 120),
        ("2026-03-28T22:30:00Z", 10_000),
        ("2026-10-25T00:59:00Z", 3720),
        ("2026-10-24T21:00:00Z", 100_000),
    ],
)
def test_dst_billed_units(at: str, units: int) -> None:
    ctx = UsageContext("t-dst", "voice", started_at=ms(at))
    r = RATER.rate(ctx, units)
    assert r.billed_units == units  # per second from the first
    assert sum(ln.units for ln in r.lines if ln.kind == "usage") == units
    # prepaid-basic (first 60, then per second) across the same switches
    ctx = UsageContext("prepaid-basic", "voice", started_at=ms(at), destination="0301234567")
    r = RATER.rate(ctx, units)
    assert r.billed_units == max(units, 60)
    assert sum(ln.units for ln in r.lines if ln.kind == "usage") == max(units, 60)


# -- versions and errors -----------------------------------------------------------------------


def test_version_in_force_at_start() -> None:
    assert (
        RATER.rate(UsageContext("t-ver", "sms", started_at=ms("2026-05-31T21:59:59Z")), 1).version
        == 1
    )
    assert (
        RATER.rate(UsageContext("t-ver", "sms", started_at=ms("2026-05-31T22:00:00Z")), 1).version
        == 2
    )


@pytest.mark.parametrize(
    ("ctx", "units", "error"),
    [
        pytest.param(UsageContext("no-such-plan", "voice"), 1, UnknownPlan, id="unknown-plan"),
        pytest.param(
            UsageContext("t-ver", "sms", started_at=ms("2025-12-31T23:59:59Z")),
            1,
            UnknownPlan,
            id="before-first-version",
        ),
        pytest.param(
            UsageContext("prepaid-basic", "video", started_at=ms(BER_MON)),
            1,
            UnknownService,
            id="unknown-service",
        ),
        pytest.param(
            UsageContext("t-gaps", "sms", started_at=ms(UTC_MON), destination="+33123"),
            1,
            RatingError,
            id="no-rate-for-destination",
        ),
        pytest.param(
            UsageContext("t-gaps", "voice", started_at=ms("2026-11-23T20:00:00Z")),
            1,
            RatingError,
            id="no-rate-for-band",
        ),
        pytest.param(
            # starts in peak (rated), runs into offpeak where there is no rate
            UsageContext("t-gaps", "voice", started_at=ms("2026-11-23T18:59:30Z")),
            60,
            RatingError,
            id="no-rate-mid-call",
        ),
        pytest.param(
            UsageContext(
                "t-gaps", "sms", started_at=ms(UTC_MON), destination="+4930", location="310260"
            ),
            1,
            RatingError,
            id="no-place",
        ),
        pytest.param(
            UsageContext("t-voice", "voice", started_at=ms(UTC_MON), destination="call-me"),
            1,
            RatingError,
            id="not-a-number",
        ),
    ],
)
def test_rating_errors(ctx: UsageContext, units: int, error: type[Exception]) -> None:
    assert issubclass(error, RatingError)
    with pytest.raises(error):
        fresh_rater().cost(ctx, units)
    with pytest.raises(error):
        fresh_rater().rate(ctx, units)


def test_gaps_rate_where_they_can() -> None:
    # the same plan rates what it covers: 30 s peak x 10,000
    ctx = UsageContext("t-gaps", "voice", started_at=ms("2026-11-23T18:59:30Z"))
    assert fresh_rater().cost(ctx, 30) == 300_000
    ctx = UsageContext(
        "t-gaps", "sms", started_at=ms(UTC_MON), destination="+4930", location="20801"
    )
    assert fresh_rater().cost(ctx, 1) == 100_000


def test_service_spec_free_flag() -> None:
    home = UsageContext("prepaid-basic", "voice-mt", started_at=ms(BER_MON), location="26201")
    world = UsageContext("prepaid-basic", "voice-mt", started_at=ms(BER_MON), location="310260")
    assert RATER.service(home).free
    assert not RATER.service(world).free
    assert not RATER.service(world).outgoing


def test_service_free_only_when_it_never_costs() -> None:
    # t-dst nightfree: 0 in the night band (00-03 local), 10,000/s by day. A call at 02:59:00
    # local: the first 60 s (the default quota) are free, the 61st second costs 10,000.
    ctx = UsageContext("t-dst", "nightfree", started_at=ms("2026-11-23T02:59:00+01:00"))
    assert RATER.cost(ctx, 60) == 0
    assert RATER.cost(ctx, 61) == 10_000  # 1 s of day at 10,000
    assert not RATER.service(ctx).free


@pytest.mark.parametrize("number", ["112", "110"])
def test_gov_emergency_short_codes_are_free(number: str) -> None:
    ctx = UsageContext("gov-payu", "voice", started_at=ms(BER_MON), destination=number)
    # emergency: price 0 and tax exempt -> 0 (got: 250,000 + 47,500 = 297,500 -> 300,000)
    assert RATER.cost(ctx, 60) == 0


def test_affordable_examples() -> None:
    # t-voice national peak: first 60 = 600,000, then 60,000 per 6 s
    ctx = Case("t-voice", "voice", 0, 0, NAT).ctx()
    assert RATER.affordable(ctx, 599_999, 0) == 0
    assert RATER.affordable(ctx, 600_000, 0) == 60
    assert RATER.affordable(ctx, 659_999, 0) == 60
    assert RATER.affordable(ctx, 660_000, 0) == 66
    assert RATER.affordable(ctx, 660_000, 0, limit=30) == 30
    # after 61 s (billed 66), 6 more seconds are already paid for: 5 fit for nothing
    assert RATER.affordable(ctx, 0, 61) == 5
    assert RATER.affordable(ctx, 60_000, 61) == 11
    # cap: 1.00 reached at 100 s; afterwards anything fits
    ctx = Case("t-voice", "call", 0, 0, NAT).ctx()
    assert RATER.affordable(ctx, 1_000_000, 0, limit=10**6) == 10**6
    assert RATER.affordable(ctx, 0, 100, limit=500) == 500
    assert RATER.affordable(ctx, 999_999, 0) == 99
    # free: the limit
    ctx = Case("t-voice", "voice", 0, 0, "+49800123456").ctx()
    assert RATER.affordable(ctx, 0, 0, limit=1234) == 1234
    assert RATER.affordable(ctx, -1, 0, limit=1234) == 0


# -- properties ------------------------------------------------------------------------------------

#: (plan, service, destination, location, largest units worth trying)
PROP_CTXS = [
    ("prepaid-basic", "voice", "0301234567", "", 20_000),
    ("prepaid-basic", "voice", "01511234567", "", 5_000),
    ("prepaid-basic", "voice", "+81312345678", "", 5_000),
    ("prepaid-basic", "voice", "0800123456", "", 5_000),
    ("prepaid-basic", "voice", "0301234567", "20801", 5_000),
    ("prepaid-basic", "voice-mt", "", "310260", 5_000),
    ("prepaid-basic", "data", "", "", 200_000_000),
    ("prepaid-basic", "sms", "+33612345678", "", 1_000),
    ("gov-payu", "voice", "+33123456789", "", 5_000),
    ("gov-payu", "data", "", "", 50_000_000),
    ("bundle-10", "voice", "+33123456789", "", 5_000),
    ("bundle-10", "voice", "+49900123456", "", 5_000),
    ("t-voice", "voice", "+4931123456", "", 20_000),
    ("t-voice", "voice", "+4915112345", "", 5_000),
    ("t-voice", "voice", NAT, "", 20_000),
    ("t-voice", "call", NAT, "", 1_000),
    ("t-tax", "data", "", "", 100_000),
    ("t-dst", "voice", "", "", 20_000),
    ("t-round-half-even-6", "half", "", "", 1_000),
    ("t-round-up-2", "ev", "", "", 100_000),
]

BOUNDARIES = [
    ms(s)
    for s in (
        "2026-11-23T18:59:30+01:00",  # Monday, 30 s before offpeak (Berlin)
        "2026-11-23T19:00:00+01:00",
        "2026-11-23T07:59:00+01:00",
        "2026-11-27T23:59:00+01:00",  # Friday night
        "2026-12-24T23:59:00+01:00",  # Christmas eve
        "2026-11-23T18:59:30Z",  # the UTC plans' boundaries
        "2026-11-23T07:59:50Z",
        "2026-11-27T23:58:00Z",
        "2026-03-29T00:58:00Z",  # DST spring
        "2026-10-25T00:58:00Z",  # DST autumn
        "2026-10-25T01:58:00Z",
    )
]
START = ms("2026-01-02T00:00:00Z")
END = ms("2027-12-31T00:00:00Z")

start_times = st.one_of(
    st.builds(
        lambda b, d: b + d * 1000,
        st.sampled_from(BOUNDARIES),
        st.integers(min_value=-90, max_value=90),
    ),
    st.integers(min_value=START, max_value=END),
)


@st.composite
def contexts(draw: st.DrawFn) -> tuple[UsageContext, int]:
    plan, service, to, loc, most = draw(st.sampled_from(PROP_CTXS))
    return UsageContext(plan, service, "sub", draw(start_times), to, loc), most


PROPS = settings(max_examples=150, deadline=None, database=None)


@PROPS
@given(contexts(), st.data())
def test_cost_is_non_decreasing(cm: tuple[UsageContext, int], data: st.DataObject) -> None:
    ctx, most = cm
    a = data.draw(st.integers(min_value=0, max_value=most))
    b = data.draw(st.integers(min_value=a, max_value=most))
    assert RATER.cost(ctx, a) <= RATER.cost(ctx, b)
    assert RATER.cost(ctx, a) <= RATER.cost(ctx, a + 1)
    assert RATER.cost(ctx, 0) == 0


@PROPS
@given(contexts(), st.data())
def test_affordable_is_exact(cm: tuple[UsageContext, int], data: st.DataObject) -> None:
    ctx, most = cm
    used = data.draw(st.integers(min_value=0, max_value=most))
    money = data.draw(st.integers(min_value=0, max_value=20_000_000))
    limit = data.draw(st.integers(min_value=0, max_value=most))
    a = RATER.affordable(ctx, money, used, limit)
    base = RATER.cost(ctx, used)
    assert 0 <= a <= limit
    assert RATER.cost(ctx, used + a) - base <= money
    if a < limit:
        assert RATER.cost(ctx, used + a + 1) - base > money


@PROPS
@given(contexts(), st.data())
def test_split_reports_cost_one_report(cm: tuple[UsageContext, int], data: st.DataObject) -> None:
    ctx, most = cm
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=most), min_size=1, max_size=8))
    points = [0, *sorted(cuts)]
    debits = [RATER.cost(ctx, b) - RATER.cost(ctx, a) for a, b in itertools.pairwise(points)]
    assert all(d >= 0 for d in debits)
    # One report of the whole, priced by a rater that never saw this session.
    assert sum(debits) == fresh_rater().cost(ctx, points[-1])


@PROPS
@given(contexts(), st.data())
def test_engine_loop_never_overdraws(cm: tuple[UsageContext, int], data: st.DataObject) -> None:
    """Reserve what is affordable, use part of it, debit the difference: the balance never goes
    negative and the debits add up to the price of the whole session."""
    ctx, most = cm
    balance = start = data.draw(st.integers(min_value=0, max_value=5_000_000))
    quota = data.draw(st.integers(min_value=1, max_value=max(1, most // 4)))
    used = 0
    for _ in range(6):
        grant = RATER.affordable(ctx, balance, used, quota)
        if grant == 0:
            assert RATER.cost(ctx, used + 1) - RATER.cost(ctx, used) > balance
            break
        k = data.draw(st.integers(min_value=1, max_value=grant))
        debit = RATER.cost(ctx, used + k) - RATER.cost(ctx, used)
        assert 0 <= debit <= balance
        balance -= debit
        used += k
    assert start - balance == RATER.cost(ctx, used)


@PROPS
@given(contexts(), st.data())
def test_breakdown_always_re_adds(cm: tuple[UsageContext, int], data: st.DataObject) -> None:
    ctx, most = cm
    units = data.draw(st.integers(min_value=0, max_value=most))
    r = RATER.rate(ctx, units)
    check_breakdown(r, RATER.cost(ctx, units))
    if units and r.total:
        assert sum(ln.units for ln in r.lines if ln.kind == "usage") == r.billed_units


@PROPS
@given(contexts(), st.data())
def test_shared_prices_are_each_sessions_own(
    cm: tuple[UsageContext, int], data: st.DataObject
) -> None:
    """Sessions of one profile (plan, service, number, location, start band) share the prices
    of their first band run (TariffRater._cost): a session started later, earlier or across a
    band boundary still gets exactly the price a rater that never saw another session makes,
    breakdown and all."""
    ctx, most = cm
    rater = fresh_rater()
    shifts = data.draw(st.lists(st.integers(min_value=-7200, max_value=7200), max_size=4))
    units = data.draw(st.lists(st.integers(min_value=0, max_value=most), min_size=1, max_size=6))
    for shift in [0, *shifts]:
        other = dataclasses.replace(ctx, started_at=ctx.started_at + shift * 1000)
        for n in units:
            expected = fresh_rater().rate(other, n).total
            assert rater.cost(other, n) == expected
            assert rater.service(other) == fresh_rater().service(other)
