"""Fixtures of the billing suite: the same tests on SQLite (always) and on a private
PostgreSQL cluster the session starts itself (initdb + pg_ctl on a free port in a temp dir,
as the ``postgres`` user when the session runs as root; stopped at the end). Where no
PostgreSQL server binaries are installed, the PostgreSQL half is skipped with the reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ocs.billing.db import open_billing_db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    port: int
    data: Path
    bin: Path
    as_user: list[str]
    counter: itertools.count[int]

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://ocs@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        import psycopg

        name = f"t{next(self.counter)}_{os.getpid()}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=ocs dbname=postgres",
                             autocommit=True) as c:  # fmt: skip
            c.execute(f'CREATE DATABASE "{name}"')
        return name


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def start_postgres(settings: dict[str, str] | None = None) -> PrivatePostgres | str:
    """A started private cluster, or why there can be none; ``settings`` are server settings
    (``-c name=value``) beside the defaults (bench/billing.py sizes the buffer cache)."""
    bindir = _pg_bin()
    if bindir is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin); .ci/run installs them"
    data = Path(tempfile.mkdtemp(prefix="ocs-billing-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: initdb refuses root"
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "ocs",
            "--no-sync")  # fmt: skip
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"), "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
            + "".join(f" -c {k}={v}" for k, v in (settings or {}).items()), "start")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        return f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-300:]}"
    return PrivatePostgres(port, data, bindir, as_user, itertools.count())


def stop_postgres(pg: PrivatePostgres) -> None:
    subprocess.run([*pg.as_user, str(pg.bin / "pg_ctl"), "-D", str(pg.data / "db"), "-m", "fast",
                    "-w", "stop"], check=False, capture_output=True)  # fmt: skip
    shutil.rmtree(pg.data, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres | str]:
    pg = start_postgres()
    try:
        yield pg
    finally:
        if isinstance(pg, PrivatePostgres):
            stop_postgres(pg)


@pytest.fixture(params=["sqlite", "postgresql"])
def billing_url(
    request: pytest.FixtureRequest, tmp_path: Path, private_postgres: PrivatePostgres | str
) -> str:
    """An empty billing database's URL: a SQLite file, or a new database on the cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'billing.db'}"
    if isinstance(private_postgres, str):
        pytest.skip(private_postgres)
    return private_postgres.url(private_postgres.create_database())


@pytest.fixture
def billing_engine(billing_url: str) -> Iterator[Engine]:
    """The billing database, migrated."""
    engine = open_billing_db(billing_url)
    try:
        yield engine
    finally:
        engine.dispose()


# -- a small hierarchy many tests share ----------------------------------------------------

#: 2026-11-01T00:00:00+01:00 (Europe/Berlin) in Unix ms: the start of period 2026-11.
NOV_START_MS = 1_793_487_600_000
#: 2026-12-01T00:00:00+01:00: the cut-off of period 2026-11.
DEC_START_MS = 1_796_079_600_000


def build_sample(engine: Engine) -> None:
    """national NAT > region R-N > agency AG-1 > account ACC-1 (Europe/Berlin, 19 % VAT
    exclusive) with line 491700000001 since 2026-10-01 and a leased line L-1 of 300.00 a
    month in arrears from 2026-11-11 (SLA silver 99.9 %, the default ladder); a contract with
    LAD of 10.00 a day after 2 days' grace, capped at 50.00."""
    from ocs.billing import model as M

    with engine.begin() as c:
        M.create_org(c, "national", {"code": "NAT", "name": "National"})
        M.create_org(c, "region", {"code": "R-N", "name": "North", "parent": "NAT"})
        M.create_org(c, "agency", {"code": "AG-1", "name": "Ministry One", "parent": "R-N"})
        M.put_tax_profile(c, "VAT19", {"rate": "19", "mode": "exclusive"})
        M.create_account(
            c,
            {
                "code": "ACC-1",
                "name": "Ministry One HQ",
                "agency": "AG-1",
                "tax_profile": "VAT19",
                "timezone": "Europe/Berlin",
            },
            None,
        )
        M.assign_line(c, "ACC-1", {"msisdn": "491700000001", "valid_from": 1_790_805_600_000}, None)
        M.put_service(
            c,
            "ACC-1",
            "L-1",
            {
                "description": "Leased line L-1",
                "monthly_charge": "300.00",
                "charging": "arrears",
                "start_date": "2026-11-11",
                "sla_tier": "silver",
            },
            None,
        )
        M.put_contract(
            c,
            "ACC-1",
            {
                "start_date": "2026-11-01",
                "end_date": "2027-11-01",
                "lad": {
                    "rate_kind": "fixed",
                    "rate": "10.00",
                    "grace_days": 2,
                    "cap_kind": "amount",
                    "cap": "50.00",
                },
            },
            None,
        )
