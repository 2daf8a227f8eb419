"""CDR file names: TS 32.297 naming, the split convention, the format suffix, close order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.mediation.naming import (
    TEMP_SUFFIX,
    CdrFileName,
    format_name,
    in_close_order,
    is_closed,
    parse_name,
    temp_name,
)

CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))


def test_the_examples_of_the_module_docstring() -> None:
    t = datetime(2026, 3, 15, 14, 4, tzinfo=CET)
    assert format_name("MSC01", 42, t) == "MSC01_-_0042.20260315_-_1404+0100.ber"
    assert (
        format_name("MSC01", 43, t + timedelta(minutes=1), 1, split=True)
        == "MSC01_-_0043.20260315_-_1405+0100_P01.ber"
    )
    assert (
        format_name("MSC01", 44, t + timedelta(minutes=1), 2)
        == "MSC01_-_0044.20260315_-_1405+0100_P02.ber"
    )
    assert format_name("MSC01", 45, t, fmt="ascii").endswith("1404+0100.txt")
    assert format_name("MSC-7", 123456, t.astimezone(timezone(timedelta(hours=-3, minutes=-30))),
                       fmt="ber") == "MSC-7_-_123456.20260315_-_0934-0330.ber"  # fmt: skip


def test_parse_reads_every_field() -> None:
    f = parse_name("MSC01_-_0044.20260315_-_1405+0100_P02.ber")
    assert f == CdrFileName(
        node="MSC01", running_count=44, closed_at=datetime(2026, 3, 15, 14, 5, tzinfo=CET),
        part=2, fmt="ber", name="MSC01_-_0044.20260315_-_1405+0100_P02.ber", split=True,
    )  # fmt: skip
    assert parse_name("MSC01_-_0007.20260315_-_1405-0000.asc").fmt == "ascii"
    assert parse_name("MSC01_-_0007.20260315_-_1405+0000.ASN1").fmt == "ber"
    u = parse_name("X_-_00001.20261231_-_2359+0000.txt")
    assert (u.part, u.split, u.fmt) == (1, False, "ascii")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MSC01_-_0042.20260315_-_1404+0100.ber.tmp", "still open"),
        ("MSC01_-_0042.20260315_-_1404+0100", "not a CDR file name"),
        ("MSC01_-_0042.20260315_-_1404.ber", "not a CDR file name"),
        ("MSC01_-_0042.2026031_-_1404+0100.ber", "not a CDR file name"),
        ("_-_0042.20260315_-_1404+0100.ber", "not a CDR file name"),
        ("MSC01_-_0042.20261315_-_1404+0100.ber", "bad closing date"),
        ("MSC01_-_0042.20260315_-_2460+0100.ber", "bad closing date"),
        ("MSC01_-_0042.20260315_-_1404+2460.ber", "bad UTC offset"),
        ("MSC01_-_0042.20260315_-_1404+0100.csv", "unknown suffix"),
        ("MSC01_-_0042.20260315_-_1404+0100_P00.ber", "part numbers start at 1"),
        ("MSC01_-_1.20261123_-_1016+0100.ber", "fewer than 4 digits"),
        ("MSC01_-_042.20261123_-_1016+0100.ber", "fewer than 4 digits"),
        ("MSC01_-_0042.20260315_-_1404+0100_P1.ber", "fewer than 2 digits"),
        ("MS C01_-_0042.20260315_-_1404+0100.ber", "node id"),
        ("A_-_B_-_0042.20260315_-_1404+0100.ber", "node id"),
    ],
)
def test_bad_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_name(name)
    assert not is_closed(name)


def test_format_refuses_what_it_cannot_name() -> None:
    t = datetime(2026, 3, 15, 14, 4, tzinfo=CET)
    with pytest.raises(ValueError, match="time-zone aware"):
        format_name("MSC01", 1, t.replace(tzinfo=None))
    with pytest.raises(ValueError, match="node id"):
        format_name("MSC 01", 1, t)
    with pytest.raises(ValueError, match="part"):
        format_name("MSC01", 1, t, part=0)
    with pytest.raises(ValueError, match="running count"):
        format_name("MSC01", -1, t)
    with pytest.raises(ValueError, match="whole number of minutes"):
        format_name("MSC01", 1, t.replace(tzinfo=timezone(timedelta(seconds=30))))


def test_an_open_file_is_the_closed_name_plus_tmp() -> None:
    name = format_name("MSC01", 1, datetime(2026, 3, 15, 14, 4, tzinfo=CET))
    assert temp_name(name) == name + TEMP_SUFFIX == name + ".tmp"
    assert is_closed(name) and not is_closed(temp_name(name))
    assert not is_closed("README") and not is_closed(".hidden")


NODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._"
nodes = st.text(st.sampled_from(NODE_CHARS), min_size=1, max_size=12).filter(
    lambda n: "_-_" not in n
)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(datetime(1970, 1, 2), datetime(9998, 12, 31), timezones=offsets).map(
    lambda t: t.replace(second=0, microsecond=0)
)


@given(nodes, st.integers(0, 10**9), times, st.integers(1, 999), st.sampled_from(["ber", "ascii"]),
       st.booleans())  # fmt: skip
def test_format_and_parse_round_trip(
    node: str, rc: int, t: datetime, part: int, fmt: str, split: bool
) -> None:
    name = format_name(node, rc, t, part, fmt, split=split or part > 1)  # type: ignore[arg-type]
    f = parse_name(name)
    assert (f.node, f.running_count, f.closed_at, f.part, f.fmt, f.name) == (
        node, rc, t, part, fmt, name,
    )  # fmt: skip
    assert f.closed_at.utcoffset() == t.utcoffset()
    assert f.split == (split or part > 1)


def test_rotated_and_split_files_sort_in_the_order_the_switch_closed_them() -> None:
    # One switch through the autumn clock change (03:00 CEST -> 02:00 CET): a minute's file
    # each minute, one minute split in three parts. Name order is not close order here.
    closes = [
        datetime(2026, 10, 25, 2, 58, tzinfo=CEST),
        datetime(2026, 10, 25, 2, 59, tzinfo=CEST),
        datetime(2026, 10, 25, 2, 0, tzinfo=CET),  # an hour later than 02:00 CEST
        datetime(2026, 10, 25, 2, 1, tzinfo=CET),
    ]
    expected = []
    rc = 9998
    for i, t in enumerate(closes):
        parts = 3 if i == 2 else 1
        for p in range(1, parts + 1):
            expected.append(format_name("MSC01", rc, t, p, split=parts > 1))
            rc += 1
    assert sorted(expected) != expected
    shuffled = expected[:]
    random.Random(5).shuffle(shuffled)
    ordered = sorted((parse_name(n) for n in shuffled), key=lambda f: f.sort_key)
    assert [f.name for f in ordered] == expected
    assert [f.part for f in ordered] == [1, 1, 1, 2, 3, 1]


def test_in_close_order_groups_by_switch_and_drops_other_names() -> None:
    t = datetime(2026, 3, 15, 14, 4, tzinfo=CET)
    a1, a2 = format_name("A", 2, t), format_name("A", 1, t - timedelta(minutes=1))
    b1 = format_name("B", 7, t)
    got = in_close_order([b1, "x.tmp", a1, temp_name(a2), a2, "notes.txt"])
    assert [f.name for f in got] == [a2, a1, b1]
