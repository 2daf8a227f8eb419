"""Plan files: a bad file is rejected whole, every problem named with file, line and path.

Each broken plan is the valid BASE with one edit; the expected line is found by searching the
edited text for the line that holds the problem, not taken from the loader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tariffs import PlanFileError, RatingError, load_plan_file, load_plans, shipped_plans_dir

BASE = """\
name = "base"
version = 1
effective_from = 2026-01-01T00:00:00+01:00
timezone = "Europe/Berlin"
free_destinations = ["toll-free"]

[rounding]
method = "half-even"
decimals = 2

[tax]
rate = "19"
inclusive = true
exempt_destinations = ["toll-free"]

[destinations]
national = ["49"]
toll-free = ["49800"]
world = ["*"]

[[bands]]
name = "peak"
days = ["weekday"]
from = "08:00"
to = "19:00"

[[bands]]
name = "offpeak"

[services.voice]
unit = "seconds"
default_quota = 60
session_cap = "5.00"

[services.sms]
unit = "events"
default_quota = 1

[[rates]]
service = "voice"
first_increment = 60
increment = 1
price = "0.09"
per = 60
tiers = [{ from = 600, price = "0.05", per = 60 }]

[[rates]]
service = "sms"
price = "0.10"

[[discounts]]
name = "evening"
percent = "10"
destinations = ["national"]
bands = ["offpeak"]

[[bundles]]
id = "minutes"
service = "voice"
units = 6000
"""

SMS_RATE = '[[rates]]\nservice = "sms"\nprice = "0.10"\n'


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def line_of(text: str, marker: str) -> int:
    """1-based number of the only line holding ``marker``."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if marker in ln]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def load_broken(tmp_path: Path, text: str) -> PlanFileError:
    f = tmp_path / "broken-plan.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        load_plan_file(f)
    err = info.value
    assert isinstance(err, RatingError)
    for problem in err.problems:
        assert problem.startswith(str(f)), problem
        assert problem in str(err)
    return err


def test_base_is_valid(tmp_path: Path) -> None:
    f = tmp_path / "base.toml"
    f.write_text(BASE, encoding="utf-8")
    plan = load_plan_file(f)
    assert plan.name == "base"
    assert plan.source == str(f)


# (id, old, new, path, marker of the line that holds the problem or None, words of the message)
BROKEN = [
    ("float-price", 'price = "0.10"', "price = 0.10", "rates[1].price", "price = 0.10", "float"),
    ("float-price-0", 'price = "0.09"', "price = 0.09", "rates[0].price", "price = 0.09", "float"),
    ("negative-price", 'price = "0.10"', 'price = "-0.10"', "rates[1].price", "-0.10", ""),
    ("7-decimals", 'price = "0.10"', 'price = "0.1000001"', "rates[1].price", "0.1000001", ""),
    ("not-a-number", 'price = "0.10"', 'price = "ten"', "rates[1].price", "ten", ""),
    (
        "bad-connect-fee",
        "increment = 1\n",
        'increment = 1\nconnect_fee = "0.5.0"\n',
        "rates[0].connect_fee",
        "connect_fee",
        "",
    ),
    ("per-zero", "per = 60\n", "per = 0\n", "rates[0].per", "per = 0", ""),
    (
        "unknown-top-key",
        "version = 1\n",
        'version = 1\ncolour = "red"\n',
        "colour",
        "colour",
        "unknown",
    ),
    (
        "unknown-rate-key",
        "per = 60\n",
        'per = 60\nprise = "1"\n',
        "rates[0].prise",
        "prise",
        "unknown",
    ),
    (
        "unknown-band-key",
        'to = "19:00"\n',
        'to = "19:00"\ncolour = 1\n',
        "bands[0].colour",
        "colour",
        "unknown",
    ),
    (
        "unknown-service-in-rate",
        'service = "sms"',
        'service = "video"',
        "rates[1].service",
        '"video"',
        "video",
    ),
    (
        "unknown-dest-in-rate",
        'service = "sms"\n',
        'service = "sms"\ndestinations = ["mars"]\n',
        "rates[1].destinations",
        '["mars"]',
        "mars",
    ),
    (
        "unknown-band-in-rate",
        'service = "sms"\n',
        'service = "sms"\nbands = ["night"]\n',
        "rates[1].bands",
        '["night"]',
        "night",
    ),
    (
        "unknown-place-in-rate",
        'service = "sms"\n',
        'service = "sms"\nplaces = ["moon"]\n',
        "rates[1].places",
        '["moon"]',
        "moon",
    ),
    (
        "unknown-dest-in-discount",
        'destinations = ["national"]',
        'destinations = ["mars"]',
        "discounts[0].destinations",
        '["mars"]',
        "mars",
    ),
    (
        "unknown-service-in-discount",
        'bands = ["offpeak"]\n',
        'bands = ["offpeak"]\nservices = ["fax"]\n',
        "discounts[0].services",
        "fax",
        "fax",
    ),
    ("bad-percent", 'percent = "10"', 'percent = "110"', "discounts[0].percent", "110", ""),
    (
        "unknown-dest-in-tax",
        'exempt_destinations = ["toll-free"]',
        'exempt_destinations = ["mars"]',
        "tax.exempt_destinations",
        "mars",
        "mars",
    ),
    (
        "unknown-free-dest",
        'free_destinations = ["toll-free"]',
        'free_destinations = ["mars"]',
        "free_destinations",
        "mars",
        "mars",
    ),
    ("bad-tax-rate", 'rate = "19"', 'rate = "19.123"', "tax.rate", "19.123", ""),
    ("bad-time", 'to = "19:00"', 'to = "25:00"', "bands[0].to", "25:00", "25:00"),
    ("to-before-from", 'from = "08:00"', 'from = "20:00"', "bands[0].to", 'to = "19:00"', ""),
    ("unknown-day", 'days = ["weekday"]', 'days = ["funday"]', "bands[0].days", "funday", "funday"),
    (
        "no-catch-all-band",
        'name = "offpeak"\n',
        'name = "offpeak"\ndays = ["weekend"]\n',
        "bands",
        None,
        "no band covers",
    ),
    (
        "unknown-timezone",
        'timezone = "Europe/Berlin"',
        'timezone = "Mars/Olympus"',
        "timezone",
        "Mars/Olympus",
        "Mars/Olympus",
    ),
    (
        "bad-rounding-method",
        'method = "half-even"',
        'method = "bankers"',
        "rounding.method",
        "bankers",
        "",
    ),
    ("decimals-7", "decimals = 2", "decimals = 7", "rounding.decimals", "decimals = 7", ""),
    (
        "duplicate-prefix",
        'toll-free = ["49800"]',
        'toll-free = ["49800", "49"]',
        "destinations",
        None,
        "'49'",
    ),
    ("bad-prefix", 'world = ["*"]', 'world = ["+1"]', "destinations.world", "+1", ""),
    (
        "tiers-not-increasing",
        '{ from = 600, price = "0.05", per = 60 }',
        '{ from = 600, price = "0.05", per = 60 }, { from = 300, price = "0.04", per = 60 }',
        "rates[0].tiers[1].from",
        None,
        "increasing",
    ),
    ("service-without-rate", SMS_RATE, "", "services.sms", None, "no [[rates]]"),
    (
        "bundle-unknown-service",
        'service = "voice"\nunits',
        'service = "data"\nunits',
        "bundles[0].service",
        '"data"',
        "data",
    ),
    ("bundle-zero-units", "units = 6000", "units = 0", "bundles[0].units", "units = 0", ""),
    (
        "effective-from-no-offset",
        "2026-01-01T00:00:00+01:00",
        "2026-01-01T00:00:00",
        "effective_from",
        "effective_from",
        "offset",
    ),
    (
        "effective-from-date",
        "2026-01-01T00:00:00+01:00",
        "2026-01-01",
        "effective_from",
        "effective_from",
        "offset",
    ),
    ("bad-name", 'name = "base"', 'name = "a plan"', "name", "a plan", ""),
    ("bad-version", "version = 1", "version = 0", "version", "version = 0", ""),
    ("bad-currency", "version = 1\n", 'version = 1\ncurrency = "eur"\n', "currency", "eur", ""),
    (
        "float-cap",
        'session_cap = "5.00"',
        "session_cap = 5.0",
        "services.voice.session_cap",
        None,
        "float",
    ),
    ("unknown-unit", 'unit = "events"', 'unit = "minutes"', "services.sms.unit", None, ""),
]


@pytest.mark.parametrize(
    ("old", "new", "path", "marker", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_broken_plan_is_rejected(
    tmp_path: Path, old: str, new: str, path: str, marker: str | None, words: str
) -> None:
    text = edit(old, new)
    err = load_broken(tmp_path, text)
    f = str(tmp_path / "broken-plan.toml")
    mine = [p for p in err.problems if f": {path}: " in p]
    assert mine, err.problems
    if words:
        assert any(words in p for p in mine), mine
    if marker is not None:
        assert any(p.startswith(f"{f}:{line_of(text, marker)}: ") for p in mine), mine


def test_duplicate_prefix_points_into_destinations(tmp_path: Path) -> None:
    text = edit('toll-free = ["49800"]', 'toll-free = ["49800", "49"]')
    err = load_broken(tmp_path, text)
    f = str(tmp_path / "broken-plan.toml")
    lines = {line_of(text, "[destinations]"), line_of(text, '"49800", "49"')}
    assert any(
        re.match(rf"{re.escape(f)}:(\d+): destinations: ", p)
        and int(p[len(f) + 1 :].split(":")[0]) in lines
        for p in err.problems
    ), err.problems


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = edit('rate = "19"', 'rate = "19')
    err = load_broken(tmp_path, text)
    assert f"line {line_of(text, 'rate = ')}" in str(err)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = edit('price = "0.10"', "price = 0.10")
    text = text.replace('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"')
    text = text.replace('service = "voice"\nunits', 'service = "data"\nunits')
    text = text.replace("decimals = 2", "decimals = 7")
    err = load_broken(tmp_path, text)
    paths = ["rates[1].price", "timezone", "bundles[0].service", "rounding.decimals"]
    for path in paths:
        assert any(f": {path}: " in p for p in err.problems), (path, err.problems)
    assert len(err.problems) >= len(paths)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PlanFileError, match=r"nope\.toml"):
        load_plan_file(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \xff\xfe\n")
    with pytest.raises(PlanFileError, match=r"binary\.toml"):
        load_plan_file(binary)


def test_every_shipped_plan_loads() -> None:
    files = sorted(shipped_plans_dir().glob("*.toml"))
    assert len(files) >= 3
    names = {load_plan_file(f).name for f in files}
    assert {"prepaid-basic", "bundle-10", "gov-payu"} <= names
    assert names <= {p.name for p in load_plans()}


# -- lines the loader could find but does not --------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "marker"),
    [
        pytest.param(
            'session_cap = "5.00"',
            "session_cap = 5.0",
            "services.voice.session_cap",
            "session_cap",
            id="services-key",
        ),
        pytest.param(
            'unit = "events"',
            'unit = "minutes"',
            "services.sms.unit",
            'unit = "minutes"',
            id="services-unit",
        ),
        pytest.param(SMS_RATE, "", "services.sms", "[services.sms]", id="services-table"),
    ],
)
def test_line_of_service_problems(
    tmp_path: Path, old: str, new: str, path: str, marker: str
) -> None:
    text = edit(old, new)
    err = load_broken(tmp_path, text)
    f = str(tmp_path / "broken-plan.toml")
    assert any(p.startswith(f"{f}:{line_of(text, marker)}: {path}: ") for p in err.problems), (
        err.problems
    )


def test_line_of_tier_problem(tmp_path: Path) -> None:
    text = edit(
        '{ from = 600, price = "0.05", per = 60 }',
        '{ from = 600, price = "0.05", per = 60 }, { from = 300, price = "0.04", per = 60 }',
    )
    err = load_broken(tmp_path, text)
    f = str(tmp_path / "broken-plan.toml")
    want = f"{f}:{line_of(text, 'tiers = ')}: rates[0].tiers[1].from: "
    assert any(p.startswith(want) for p in err.problems), err.problems


def test_missing_price_is_not_located_in_the_next_rate(tmp_path: Path) -> None:
    text = BASE + '\n[[rates]]\nservice = "sms"\ndestinations = ["world"]\nprice = "0.19"\n'
    text = text.replace('service = "sms"\nprice = "0.10"\n', 'service = "sms"\n')
    err = load_broken(tmp_path, text)
    f = str(tmp_path / "broken-plan.toml")
    mine = [p for p in err.problems if ": rates[1].price: " in p]
    assert mine, err.problems
    wrong = f"{f}:{line_of(text, '0.19')}: "
    assert not any(p.startswith(wrong) for p in mine), mine


def test_signalling_nan_price_is_a_plan_error(tmp_path: Path) -> None:
    text = edit('price = "0.10"', 'price = "sNaN"')
    err = load_broken(tmp_path, text)
    assert any(": rates[1].price: " in p for p in err.problems)
