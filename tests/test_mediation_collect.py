"""Collecting CDR files: which files are taken when, in which order, from a directory and from
an FTP server (a pyftpdlib server started here, on a free port, in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ocs.charging.engine import ChargingEngine
from ocs.mediation.collect import (
    Collector,
    DirectorySource,
    FtpSource,
    Source,
    SourceUnavailable,
    open_source,
)
from ocs.mediation.formats import CdrRecord
from ocs.mediation.formats.ascii import encode_file
from ocs.mediation.ftpd import LocalFtpServer
from ocs.mediation.naming import format_name
from ocs.mediation.pipeline import Mediation, MediationConfig
from ocs.mediation.usage import Direction
from ocs.store.store import Store
from tariffs import PlanBook, TariffRater
from tests.plans import flat_voice

T = datetime(2026, 9, 15, 12, 0, tzinfo=UTC)


def nm(rc: int, minute: int, part: int = 0, node: str = "MSC01") -> str:
    return format_name(node, rc, T + timedelta(minutes=minute), part or 1, "ber", split=bool(part))


class Listing(Source):
    """A source that only lists (for the ordering rules)."""

    label = "test"

    def __init__(self) -> None:
        self.files: dict[str, int] = {}

    async def listing(self) -> dict[str, int]:
        return dict(self.files)

    async def read(self, name: str) -> bytes:  # pragma: no cover - not used
        raise NotImplementedError

    async def finish(self, name: str, rejected: bytes | None) -> None:  # pragma: no cover
        raise NotImplementedError

    async def set_aside(self, name: str) -> str:  # pragma: no cover
        raise NotImplementedError


async def test_order_rotation_and_split_parts(caplog: pytest.LogCaptureFixture) -> None:
    src = Listing()
    src.files = {
        nm(12, 3): 10,
        nm(11, 2, part=2): 10,
        nm(10, 2, part=1): 10,
        nm(9, 1): 10,
        nm(3, 2, node="MSC02"): 10,
        nm(13, 4) + ".tmp": 5,  # still open
        "README": 1,  # not a CDR file
        nm(14, 4).replace(".ber", ".ber.rejected"): 3,
        "MSC01_-_15.20260315_-_1406+0100.ber": 3,  # a running count of 2 digits: not a name
    }
    got = [c.file for c in await Collector(src).poll()]
    assert got == [nm(9, 1), nm(10, 2, part=1), nm(11, 2, part=2), nm(3, 2, node="MSC02"),
                   nm(12, 3)]  # fmt: skip
    assert "the running count '15' has fewer than 4 digits" in caplog.text


async def test_split_parts_of_one_minute_follow_their_part_numbers() -> None:
    src = Listing()
    # Same minute, same running count region: the running count and then the part decide.
    src.files = {nm(20, 5, part=3): 1, nm(18, 5, part=1): 1, nm(19, 5, part=2): 1}
    got = [c.name.part for c in await Collector(src).poll()]
    assert got == [1, 2, 3]


async def test_stable_size_waits_for_two_equal_listings() -> None:
    src = Listing()
    c = Collector(src, stable_size=True)
    src.files = {nm(1, 1): 100, nm(2, 2): 50}
    assert await c.poll() == []  # first sight: nothing is stable yet
    src.files = {nm(1, 1): 200, nm(2, 2): 50}  # the first still grows
    assert await c.poll() == []  # and holds the second back: the switch's order comes first
    src.files = {nm(1, 1): 200, nm(2, 2): 50}
    assert [x.file for x in await c.poll()] == [nm(1, 1), nm(2, 2)]


def test_open_source() -> None:
    assert isinstance(open_source("/tmp/x"), DirectorySource)
    ftp = open_source("ftp://switch:s%40cret@127.0.0.1:2121/cdr/out")
    assert isinstance(ftp, FtpSource)
    assert (ftp.user, ftp.password, ftp.port, str(ftp.path)) == ("switch", "s@cret", 2121,
                                                                 "/cdr/out")  # fmt: skip
    assert "s@cret" not in ftp.label
    with pytest.raises(ValueError, match="unsupported source"):
        open_source("sftp://host/x")


async def test_directory_source_moves_files(tmp_path: Path) -> None:
    src = DirectorySource(tmp_path)
    (tmp_path / "A.ber").write_bytes(b"a")
    (tmp_path / ".hidden").write_bytes(b"h")
    (tmp_path / "sub").mkdir()
    assert await src.listing() == {"A.ber": 1}
    assert await src.read("A.ber") == b"a"
    await src.finish("A.ber", b"1\t0\tbad\t61\n")
    await src.finish("A.ber", b"1\t0\tbad\t61\n")  # a repeat after a crash is harmless
    assert (tmp_path / "done" / "A.ber").read_bytes() == b"a"
    assert (tmp_path / "done" / "A.ber.rejected").read_bytes() == b"1\t0\tbad\t61\n"
    # The same name again: already in done/, so it is a duplicate.
    (tmp_path / "A.ber").write_bytes(b"a")
    assert await src.set_aside("A.ber") == "duplicates"
    # A file the ledger says is done that never reached done/ (a crash between the two).
    (tmp_path / "B.ber").write_bytes(b"b")
    assert await src.set_aside("B.ber") == "done"
    assert (tmp_path / "done" / "B.ber").exists()
    assert await src.listing() == {}
    with pytest.raises(SourceUnavailable):
        await src.read("missing.ber")
    await src.check()


async def test_a_missing_directory_is_an_error_not_an_empty_listing(tmp_path: Path) -> None:
    gone = DirectorySource(tmp_path / "no" / "such" / "dir")
    with pytest.raises(SourceUnavailable, match="does not exist"):
        await gone.check()
    with pytest.raises(SourceUnavailable, match="gone"):
        await gone.listing()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SourceUnavailable, match="not a directory"):
        await DirectorySource(tmp_path / "file").check()


# -- FTP -------------------------------------------------------------------------------------


@pytest.fixture
def ftp_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A pyftpdlib server on a free loopback port, serving ``root`` to switch/secret."""
    root = tmp_path / "ftp"
    (root / "cdr").mkdir(parents=True)
    with LocalFtpServer(root) as ftp:
        yield root, ftp.port


async def test_ftp_source(ftp_root: tuple[Path, int]) -> None:
    root, port = ftp_root
    (root / "cdr" / "A.ber").write_bytes(b"x" * 70_000)  # several blocks
    (root / "cdr" / "B.ber.tmp").write_bytes(b"y")
    async with FtpSource(f"ftp://switch:secret@127.0.0.1:{port}/cdr") as src:
        assert await src.listing() == {"A.ber": 70_000, "B.ber.tmp": 1}
        assert await src.read("A.ber") == b"x" * 70_000
        await src.finish("A.ber", b"rejects\n")
        assert (root / "cdr" / "done" / "A.ber").exists()
        assert (root / "cdr" / "done" / "A.ber.rejected").read_bytes() == b"rejects\n"
        (root / "cdr" / "A.ber").write_bytes(b"x")
        assert await src.set_aside("A.ber") == "duplicates"
        assert len(list((root / "cdr" / "duplicates").iterdir())) == 1
        assert set(await src.listing()) == {"B.ber.tmp"}


async def test_ftp_source_unavailable(ftp_root: tuple[Path, int]) -> None:
    _, port = ftp_root
    async with FtpSource(f"ftp://switch:wrong@127.0.0.1:{port}/cdr") as src:
        with pytest.raises(SourceUnavailable, match="list"):
            await src.listing()


PLAN = flat_voice("ftp-flat", per_second=True)


async def test_mediation_over_ftp(ftp_root: tuple[Path, int], store: Store, tmp_path: Path) -> None:
    """A switch's files on an FTP server: collected in order, charged, renamed into done/."""
    root, port = ftp_root
    await store.create_subscriber("491700000001", plan="ftp-flat", balance=1_000_000,
                                  credit_limit=0, state="active", now=0)  # fmt: skip
    local = T.astimezone(UTC)
    names = []
    for i in range(3):
        rec = CdrRecord(Direction.MOC, "491700000001", "262010000000001", "+4930123456",
                        local + timedelta(minutes=i), local + timedelta(minutes=i, seconds=3),
                        local + timedelta(minutes=i, seconds=13), 10, "26201", 1, 2,
                        "4917200001", i)  # fmt: skip
        f = format_name("MSC01", i + 1, local + timedelta(minutes=i + 1), 1, "ascii")
        (root / "cdr" / f).write_bytes(encode_file([rec]))
        names.append(f)
    (root / "cdr" / "next.txt.tmp").write_bytes(b"open")
    rater = TariffRater(PlanBook([PLAN]))
    engine = ChargingEngine(store, rater)
    config = MediationConfig(warehouse_dir=str(tmp_path / "wh"))
    async with FtpSource(f"ftp://switch:secret@127.0.0.1:{port}/cdr") as src:
        reports = await Mediation(engine, rater, src, config).poll()
    assert [r.file for r in reports] == names
    assert all(r.charged == 1 and r.rejected == 0 for r in reports)
    assert sorted(p.name for p in (root / "cdr" / "done").iterdir()) == names
    assert (root / "cdr" / "next.txt.tmp").exists()
    acct = await store.get_account("491700000001")
    assert acct is not None and acct.balance == 1_000_000 - 3 * 10_000
