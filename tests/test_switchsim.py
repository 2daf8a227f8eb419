"""The switch simulator: records, their BER encoding (checked byte for byte against pycrate's
TS 32.298 encoder), files rotated and split by the naming rules, the running simulator into a
directory and onto an FTP server, and ``ocs switch-sim``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrate_asn1dir import CDR

from ocs.cli import main
from ocs.mediation.formats import Rejected, decode
from ocs.mediation.formats import ber as ber_format
from ocs.mediation.formats.record import CdrRecord
from ocs.mediation.formats.ts32297 import CLOSE_SIZE, CLOSE_TIME, read_file_header
from ocs.mediation.ftpd import LocalFtpServer
from ocs.mediation.naming import in_close_order, parse_name
from ocs.mediation.usage import Direction, Usage
from ocs.sims.switch import (
    FtpTarget,
    Layout,
    SwitchSimulator,
    Traffic,
    make_records,
    subscribers_from,
    write_files,
)
from ocs.sims.traffic import SwitchSimulator as TrafficSimulator
from protocols.native import NativeClient

CET = timezone(timedelta(hours=1))
SUBS = [f"4917{i:08d}" for i in range(50)]
START = datetime(2026, 3, 15, 14, 0, 0, tzinfo=CET)


def records(count: int = 500, rate: float = 20.0, seed: int = 3) -> list[CdrRecord]:
    return make_records(Traffic(SUBS, rate=rate, tz=CET), start=START, count=count, seed=seed)


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def decoded(path: Path) -> list[Usage]:
    items = list(decode(path.read_bytes(), switch="MSC01", file=path.name))
    assert not [i for i in items if isinstance(i, Rejected)]
    return [i for i in items if isinstance(i, Usage)]


def test_records_are_deterministic_realistic_and_in_time_order() -> None:
    a, b = records(), records()
    assert a == b and a != records(seed=4)
    ends = [r.release or r.seizure for r in a]
    assert ends == sorted(ends) and ends[0] >= START
    kinds = Counter(r.direction for r in a)
    assert kinds[Direction.MOC] > kinds[Direction.MTC] > kinds[Direction.SMS_MO] > 0
    assert kinds[Direction.SMS_MT] > 0
    calls = [r for r in a if r.direction in (Direction.MOC, Direction.MTC)]
    unanswered = [r for r in calls if r.answer is None]
    assert 0 < len(unanswered) < len(calls) // 4
    for r in calls:
        assert r.release is not None and r.seizure < r.release
        if r.answer is not None:
            assert r.release - r.answer == timedelta(seconds=r.duration)
    assert {r.mcc_mnc for r in a} >= {"26201", "20810"}
    assert {r.served_msisdn for r in a} <= set(SUBS)
    assert all(r.seizure.utcoffset() == timedelta(hours=1) for r in a)


# pycrate's encoder is the reference: the simulator's writes the same bytes.
CS = CDR.CSChargingDataTypes.CSRecord


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32))
def test_the_ber_encoder_writes_what_pycrate_writes(seed: int) -> None:
    for r in records(count=12, seed=seed):
        choice, value = ber_format.record_value(r)
        CS.set_val((choice, value))
        assert ber_format.encode_record(r) == CS.to_ber(), (choice, value)


def test_the_encoders_tag_table_is_ts_32298s() -> None:
    for choice, tags in ber_format.ENCODE_TAGS.items():
        alt = CS._cont[choice]
        assert CS._cont_tags[(2, ber_format._CHOICE_TAGS[choice])] == choice
        for name, tag in tags.items():
            assert alt._cont[name]._tagc[0] == (2, tag), (choice, name)


@pytest.mark.parametrize(("fmt", "framed"), [("ber", True), ("ber", False), ("ascii", True)])
def test_written_files_decode_to_the_records(tmp_path: Path, fmt: str, framed: bool) -> None:
    recs = records()
    layout = Layout(fmt=fmt, framed=framed)  # type: ignore[arg-type]
    paths = write_files(recs, tmp_path, layout, CET)
    got = [u for p in paths for u in decoded(p)]
    assert len(got) == len(recs)
    for r, u in zip(recs, got, strict=True):
        assert u.direction is r.direction and u.served_msisdn == r.served_msisdn
        assert u.served_imsi == r.served_imsi
        assert u.start == int(r.seizure.timestamp() * 1000)
        assert u.location.startswith(r.mcc_mnc + "-")
        if r.direction in (Direction.MOC, Direction.MTC):
            assert u.duration == (r.duration if r.answer is not None else 0)
            assert u.release == int(r.release.timestamp() * 1000)  # type: ignore[union-attr]
        other = r.other.replace(" ", "")
        if r.direction is Direction.SMS_MT and fmt == "ber":
            assert u.other_party == ""  # an MTSMSRecord has no originator field
        elif other.startswith("00"):
            assert u.other_party == "+" + other[2:]
        else:
            assert u.other_party == other


def test_one_file_per_interval_named_by_its_closing_minute(tmp_path: Path) -> None:
    recs = records(count=400, rate=2.0)  # about 200 s of traffic
    paths = write_files(recs, tmp_path, Layout(), CET, first_rc=9999)
    names = [parse_name(p.name) for p in paths]
    assert [n.running_count for n in names] == list(range(9999, 9999 + len(paths)))
    assert len(paths) in (4, 5)
    assert not list(tmp_path.glob("*.tmp"))
    for p, n in zip(paths, names, strict=True):
        assert n.part == 1 and not n.split and n.closed_at.second == 0
        assert n.closed_at.utcoffset() == timedelta(hours=1)
        us = decoded(p)
        # Every record in the file ended in the minute before the file closed.
        for u in us:
            ended = (u.release or u.start) / 1000
            assert n.closed_at.timestamp() - 60 <= ended < n.closed_at.timestamp()
        h = read_file_header(p.read_bytes())
        assert (h.cdr_count, h.sequence, h.closure_reason) == (len(us), n.running_count,
                                                               CLOSE_TIME)  # fmt: skip
    assert [f.name for f in in_close_order(p.name for p in reversed(paths))] == [
        p.name for p in paths
    ]


def test_a_full_file_is_split_into_numbered_parts_of_its_interval(tmp_path: Path) -> None:
    recs = records(count=300, rate=50.0)  # 6 s: one interval
    layout = Layout(max_file_bytes=8_000)
    paths = write_files(recs, tmp_path, layout, CET)
    names = [parse_name(p.name) for p in paths]
    assert len(paths) > 3
    assert [n.part for n in names] == list(range(1, len(paths) + 1))
    assert all(n.split for n in names) and len({n.closed_at for n in names}) == 1
    assert all(p.stat().st_size <= 8_000 for p in paths)
    reasons = [read_file_header(p.read_bytes()).closure_reason for p in paths]
    assert reasons == [CLOSE_SIZE] * (len(paths) - 1) + [CLOSE_TIME]
    got = [u for p in paths for u in decoded(p)]
    assert [u.start for u in got] == [int(r.seizure.timestamp() * 1000) for r in recs]
    shuffled = sorted(p.name for p in paths)[::-1]
    assert [f.name for f in in_close_order(shuffled)] == [p.name for p in paths]


async def test_the_running_switch_rotates_closes_and_leaves_no_open_file(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    sim = SwitchSimulator(
        Traffic(SUBS, rate=2000.0, tz=CET), Layout(rotate_seconds=0.2, max_file_bytes=20_000),
        tmp_path, on_file=lambda p, n: seen.append((p.name, n)),
    )  # fmt: skip
    await sim.run(max_files=3, duration=20)
    assert sim.stats.files >= 3 and sim.stats.records > 0
    files = files_in(tmp_path)
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert [n for n, _ in seen] == [f.name for f in in_close_order(p.name for p in files)]
    assert sum(len(decoded(p)) for p in files) == sim.stats.records == sum(n for _, n in seen)


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A pyftpdlib server on a free loopback port: user switch/secret, root ``tmp/ftp``."""
    root = tmp_path / "ftp"
    (root / "in").mkdir(parents=True)
    with LocalFtpServer(root) as ftp:
        yield root, ftp.port


async def test_closed_files_are_uploaded_to_ftp(
    tmp_path: Path, ftp_server: tuple[Path, int]
) -> None:
    root, port = ftp_server
    target = FtpTarget.parse(f"ftp://switch:secret@127.0.0.1:{port}/in")
    sim = SwitchSimulator(
        Traffic(SUBS, rate=1000.0, tz=CET), Layout(fmt="ascii", rotate_seconds=0.2),
        tmp_path / "spool", ftp=target, keep_local=False,
    )  # fmt: skip
    await sim.run(max_files=2, duration=20)
    assert sim.stats.upload_errors == 0 and sim.stats.uploaded == sim.stats.files >= 2
    uploaded = files_in(root / "in")
    assert not [p for p in uploaded if p.name.endswith(".tmp")]
    assert sum(len(decoded(p)) for p in uploaded) == sim.stats.records
    assert not files_in(tmp_path / "spool")


def test_ftp_urls() -> None:
    t = FtpTarget.parse("ftp://us%40er:p%3Ass@example.net:2121/cdr/in")
    assert t == FtpTarget("example.net", 2121, "us@er", "p:ss", "/cdr/in")
    assert FtpTarget.parse("ftp://h") == FtpTarget("h")
    with pytest.raises(ValueError, match="ftp://"):
        FtpTarget.parse("sftp://h/x")


def test_subscriber_lists_and_ranges() -> None:
    assert subscribers_from("491700000008-491700000011,4915550001") == [
        "491700000008", "491700000009", "491700000010", "491700000011", "4915550001",
    ]  # fmt: skip
    for bad in ("", "49x", "4917-49", "491700000011-491700000008"):
        with pytest.raises(ValueError, match=r"MSISDN|range|subscribers"):
            subscribers_from(bad)


def test_ocs_switch_sim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "spool"
    code = main(["switch-sim", "--dir", str(out), "--format", "ascii", "--rate", "2000",
                 "--rotate-seconds", "0.2", "--files", "2", "--node", "MSC07",
                 "--subscribers", "491700000000-491700000009", "--tz", "UTC"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "closed MSC07_-_0001." in text and "records in" in text
    files = sorted(out.iterdir())
    assert len(files) >= 2 and all(parse_name(p.name).node == "MSC07" for p in files)
    assert all(parse_name(p.name).closed_at.utcoffset() == timedelta(0) for p in files)
    assert {u.served_msisdn for p in files for u in decoded(p)} <= {
        f"49170000000{i}" for i in range(10)
    }
    # A restarted switch goes on counting.
    code = main(["switch-sim", "--dir", str(out), "--format", "ascii", "--rate", "2000",
                 "--rotate-seconds", "0.2", "--files", "1", "--node", "MSC07"])  # fmt: skip
    assert code == 0
    after = [parse_name(p.name) for p in files_in(out)]
    assert len({f.name for f in after}) == len(after) > len(files)
    assert max(f.running_count for f in after) > max(parse_name(p.name).running_count
                                                     for p in files)  # fmt: skip
    capsys.readouterr()
    assert main(["switch-sim", "--dir", str(out), "--subscribers", "x"]) == 1
    assert "not an MSISDN" in capsys.readouterr().err
    assert main(["switch-sim", "--dir", str(out), "--tz", "Mars/Base"]) == 1
    assert main(["switch-sim", "--dir", str(out), "--node", "A B"]) == 1


def test_layout_checks() -> None:
    with pytest.raises(ValueError, match="rotate_seconds"):
        Layout(rotate_seconds=0)
    with pytest.raises(ValueError, match="max_file_bytes"):
        Layout(max_file_bytes=10)
    with pytest.raises(ValueError, match="node id"):
        Layout(node="a_-_b")


async def test_the_traffic_simulator_gives_up_a_call_the_ocs_does_not_answer() -> None:
    """An OCS that answers too late (a loaded machine) costs the simulated switch that call,
    counted as an error, not every line (the demo ended with a traceback)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes every request, answers none
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines: list[str] = []
    async with server, NativeClient("127.0.0.1", port, timeout=0.05) as client:
        sim = TrafficSimulator(client, ["491700000001"], callers=2, speed=1e6,
                               report=lines.append)  # fmt: skip
        run = asyncio.create_task(sim.run())
        async with asyncio.timeout(10):
            while sim.tally.errors < 4:
                assert not run.done(), run
                await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert any(line.endswith(", given up") and "no reply to" in line for line in lines), lines
