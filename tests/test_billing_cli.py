"""``ocs billing`` as a user runs it (subprocesses): a bill run killed with SIGKILL midway and
run again gives the same invoices as a run never interrupted, none doubled, and issuing
numbers them without gaps; explain, show, pdf, feeds and the simulators from the command
line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bench.billing import PERIOD, build_dataset, make_events
from ocs.billing import runs, usage
from ocs.billing import schema as S
from ocs.billing.db import open_billing_db

ACCOUNTS = 200
#: These tests start several ``ocs`` processes (a few seconds each on a loaded machine).
SUBPROCESS_TIMEOUT = 180


def ocs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocs.cli", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def populate(engine: Engine) -> None:
    build_dataset(engine, ACCOUNTS, 3, 2)
    events = make_events(ACCOUNTS, 3, 8_000)
    usage.store_usage(engine, [usage.usage_row(0, f"{i}-0", f) for i, (_, f) in enumerate(events)])


def snapshot(engine: Engine) -> dict[str, Any]:
    out = {}
    with engine.connect() as c:
        invs = c.execute(
            select(
                S.invoice.c.id,
                S.account.c.code,
                S.invoice.c.net,
                S.invoice.c.tax,
                S.invoice.c.total,
                S.invoice.c.status,
            ).select_from(S.invoice.join(S.account))
        ).all()
        for inv_id, code, net, tax, total, status in invs:
            lines = c.execute(
                select(S.invoice_line.c.kind, S.invoice_line.c.ref, S.invoice_line.c.amount)
                .where(S.invoice_line.c.invoice_id == inv_id)
                .order_by(S.invoice_line.c.seq)
            ).all()
            billed = c.execute(
                select(func.count()).where(
                    S.usage_event.c.line_id.in_(
                        select(S.invoice_line.c.id).where(S.invoice_line.c.invoice_id == inv_id)
                    )
                )
            ).scalar_one()
            out[code] = (net, tax, total, status, [tuple(x) for x in lines], billed)
    return out


def drafts(engine: Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(S.invoice)).scalar_one())


@pytest.mark.timeout(SUBPROCESS_TIMEOUT)
def test_a_run_killed_midway_then_run_again_gives_the_same_invoices(
    billing_url: str, tmp_path: Path
) -> None:
    reference = open_billing_db(f"sqlite:///{tmp_path / 'reference.db'}")
    populate(reference)
    runs.run(reference, PERIOD, now_ms=1)
    expected = snapshot(reference)
    reference.dispose()
    assert len(expected) == ACCOUNTS

    engine = open_billing_db(billing_url)
    try:
        populate(engine)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ocs.cli",
                "billing",
                "--db",
                billing_url,
                "run",
                "--period",
                PERIOD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while drafts(engine) < 5:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        done_before = drafts(engine)
        assert 5 <= done_before < ACCOUNTS  # killed midway
        out = ocs("billing", "--db", billing_url, "run", "--period", PERIOD)
        assert f"{ACCOUNTS} draft(s)" in out.stdout
        assert snapshot(engine) == expected
        # the usage rollup moved with each account's transaction: none half-applied
        check = ocs("billing", "--db", billing_url, "check")
        assert "usage rollup: exact" in check.stdout
        # issue: numbered 1..N in account order, no gaps
        out = ocs("billing", "--db", billing_url, "issue", "--period", PERIOD)
        numbers = out.stdout.split()
        assert numbers == [f"INV-2026-{n:06d}" for n in range(1, ACCOUNTS + 1)]
        again = ocs("billing", "--db", billing_url, "run", "--period", PERIOD)
        assert f"0 draft(s), {ACCOUNTS} already issued" in again.stdout
        # explain from the command line recomputes the line
        ex = ocs("billing", "--db", billing_url, "explain", "INV-2026-000001", "1")
        assert "matches" in ex.stdout
        bad = ocs("billing", "--db", billing_url, "explain", "INV-2026-999999", "1", check=False)
        assert bad.returncode == 1
        assert "no invoice 'INV-2026-999999'" in bad.stderr
    finally:
        engine.dispose()


@pytest.mark.timeout(SUBPROCESS_TIMEOUT)
def test_feeds_and_simulators_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = open_billing_db(url)
    build_dataset(engine, 3, 2, 2)
    engine.dispose()
    feeds_dir = tmp_path / "feeds"
    for sim in ("sim-orders", "sim-tickets"):
        out = ocs("billing", "--db", url, sim, "--period", PERIOD, "--dir", str(feeds_dir))
        assert "records" in out.stdout
    out = ocs("billing", "--db", url, "feeds", "--dir", str(feeds_dir))
    assert "0 rejected" in out.stdout
    assert (feeds_dir / "done" / "orders" / f"sim-orders-{PERIOD}.csv").exists()
    ocs("billing", "--db", url, "run", "--period", PERIOD)
    ocs("billing", "--db", url, "issue", "--period", PERIOD)
    pdf = tmp_path / "i.pdf"
    ocs("billing", "--db", url, "pdf", "INV-2026-000001", "-o", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")
    show = ocs("billing", "--db", url, "--json", "show", "INV-2026-000002")
    assert '"number": "INV-2026-000002"' in show.stdout
    bad = ocs("billing", "--db", url, "run", "--period", "2026-13", check=False)
    assert (bad.returncode, "period:" in bad.stderr) == (1, True)
