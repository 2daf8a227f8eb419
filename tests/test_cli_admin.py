"""``ocs subscriber`` paging, adjust/refund/update, ``ocs events`` in readable names, ``--api``
anywhere on the line, one money format, ``ocs config show``, shell completion: the command as
a user runs it (subprocesses) against a real OCS on a private Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cli_batch import run_all
from secure import ADMIN, AUTH, SECURE

from ocs.config import Settings
from ocs.service import Running, run_ocs
from tests.contract import contract_trace

OCS = [sys.executable, "-m", "ocs.cli"]


def ocs_cmd(*args: str, env: dict[str, str] | None = None,
            api: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    full["OCS_API_TOKEN"] = ADMIN
    if api:
        full["OCS_API_URL"] = api
    full.update(env or {})
    return subprocess.run([*OCS, *args], capture_output=True, text=True, env=full, timeout=60,
                          check=False)  # fmt: skip


async def run(*args: str, **kw: str | None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(ocs_cmd, *args, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    settings = Settings(redis_url=redis_url, native_port=0, http_port=0, **SECURE)
    async with run_ocs(settings) as running:
        yield running


async def _add(api: str, msisdns: list[str]) -> None:
    async with aiohttp.ClientSession(headers=AUTH, trace_configs=[contract_trace()]) as http:
        for m in msisdns:
            body = {"msisdn": m, "balance": "10.00", "plan": "prepaid-basic"}
            async with http.post(f"{api}/v1/subscribers", json=body) as resp:
                assert resp.status == 201, await resp.text()


async def test_list_pages_with_cursor_and_all(ocs: Running) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"
    wanted = [f"4917055{i:05d}" for i in range(40)]
    await _add(api, wanted)
    # One page: a few lines and how to get the next one.
    first, every, bad = await run_all(["subscriber", "list", "--count", "15"],
                                      ["subscriber", "list", "--count", "5", "--all", "--json"],
                                      ["subscriber", "list", "--cursor", "x"], api=api)  # fmt: skip
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[-1].startswith("more: --cursor "), first.stdout
    page = json.loads(every.stdout)
    assert sorted(page["subscribers"]) == sorted(wanted) and page["cursor"] is None
    assert bad.returncode == 1 and "cursor" in bad.stderr
    # The cursor printed gives the next page (a scan may repeat one during a rehash).
    cursor = lines[-1].split()[-3]
    (r,) = await run_all(["subscriber", "list", "--count", "15", "--cursor", cursor, "--json"],
                         api=api)  # fmt: skip
    assert r.returncode == 0, r.stderr
    nxt = json.loads(r.stdout)
    assert set(nxt["subscribers"]) <= set(wanted)


async def test_api_option_anywhere_on_the_line(ocs: Running) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"
    await _add(api, ["491706600001"])
    dead = "http://127.0.0.1:9"
    shows = (["--api", api, "subscriber", "show", "491706600001"],
             ["subscriber", "--api", api, "show", "491706600001"],
             ["subscriber", "show", "491706600001", "--api", api],
             # the last one given wins, and it beats OCS_API_URL
             ["--api", dead, "subscriber", "show", "--api", api, "491706600001"])  # fmt: skip
    results = await run_all(*shows, ["events", "491706600001", "--api", api],
                            ["tariffs", "list", "--api", api], api=dead)  # fmt: skip
    for args, r in zip(shows, results, strict=False):
        assert r.returncode == 0, (args, r.stderr)
        assert json.loads(r.stdout)["balance"] == "10.00"
    events, tariffs = results[-2:]
    assert events.returncode == 0, events.stderr
    assert tariffs.returncode == 0 and "prepaid-basic" in tariffs.stdout, tariffs.stderr
    (r,) = await run_all(["provisioning", "dead-letters", "--api", dead], api=api)
    assert r.returncode == 1 and "cannot reach" in r.stderr


async def test_adjust_refund_update_and_readable_events(ocs: Running) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"
    await _add(api, ["491707700001"])
    m = "491707700001"
    bad_amounts = [("refund", "-1.00"), ("adjust", "1.2.3"), ("refund", "0.1234567")]
    (adjust, refund, replay, conflict, *bad, update, empty, unknown_plan, events, fields) = (
        await run_all(
            ["subscriber", "adjust", m, "-2.5", "--reference", "CASE-1", "--reason",
             "double charge"],
            ["subscriber", "refund", m, "0.75", "--reference", "CASE-2", "--note", "failed SMS"],
            # A replay changes nothing; another amount under the same reference is refused.
            ["subscriber", "refund", m, "0.75", "--reference", "CASE-2"],
            ["subscriber", "refund", m, "9.00", "--reference", "CASE-2"],
            # Bad amounts are refused before anything is sent: a refund is positive.
            *[["subscriber", action, m, amount, "--reference", "R",
               *(["--reason", "x"] if action == "adjust" else [])]
              for action, amount in bad_amounts],
            ["subscriber", "update", m, "--credit-limit", "5", "--state", "barred-outgoing"],
            ["subscriber", "update", m],
            ["subscriber", "update", m, "--plan", "gold"],
            ["events", m],
            ["events", m, "--fields", "--limit", "2"],
            api=api,
        )
    )  # fmt: skip
    assert adjust.returncode == 0, adjust.stderr
    answer = json.loads(adjust.stdout)
    assert (answer["amount"], answer["balance"]) == ("-2.50", "7.50")
    assert refund.returncode == 0 and json.loads(refund.stdout)["balance"] == "8.25"
    assert replay.returncode == 0 and json.loads(replay.stdout)["balance"] == "8.25"
    assert conflict.returncode == 1 and "409" in conflict.stderr
    for r in bad:
        assert r.returncode == 1 and r.stderr.startswith("ocs: amount"), r.stderr
    assert update.returncode == 0, update.stderr
    shown = json.loads(update.stdout)
    assert (shown["credit_limit"], shown["state"], shown["available"]) == (
        "5.00", "barred-outgoing", "13.25")  # fmt: skip
    assert empty.returncode == 1 and "at least one of" in empty.stderr
    assert unknown_plan.returncode == 1 and "422" in unknown_plan.stderr
    assert "plan" in unknown_plan.stderr

    # The ledger, newest first, in words: no "amt", "bal", "rk" or micro-units.
    assert events.returncode == 0, events.stderr
    lines = events.stdout.splitlines()
    assert lines[0].split() == ["at", "type", "amount", "balance", "details"]
    upd, ref, adj = lines[1], lines[2], lines[3]
    assert "update" in upd and "credit_limit=5.00" in upd and "state=barred-outgoing" in upd
    assert ref.split()[1:4] == ["refund", "0.75", "8.25"]
    assert "request=refund:CASE-2" in ref and "note=failed SMS" in ref
    assert adj.split()[1:4] == ["adjust", "-2.50", "7.50"] and "note=double charge" in adj
    assert "amt" not in events.stdout and "750000" not in events.stdout
    page = json.loads(fields.stdout)
    assert page["events"][1] == {
        "id": page["events"][1]["id"], "type": "refund", "at": page["events"][1]["at"],
        "subscriber": m, "amount": "0.75", "balance": "8.25", "reserved": "0.00",
        "version": page["events"][1]["version"], "request": "refund:CASE-2", "note": "failed SMS",
    }  # fmt: skip
    # Paging the ledger: the next page starts after the id printed.
    (older,) = await run_all(["events", m, "--limit", "2", "--before", page["next"], "--json"],
                             api=api)  # fmt: skip
    assert [e["type"] for e in json.loads(older.stdout)["events"]] == ["adjust", "create"]


def test_rate_prints_one_money_format() -> None:
    """Every amount with at least two decimals, as the API's balances ("0.10", not "0.1")."""
    r = ocs_cmd("rate", "--local", "--plan", "prepaid-basic", "--service", "voice", "--to",
                "0049301234", "--at", "2026-11-23T20:00:00Z", "--duration", "100")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].split()[-2:] == ["0.10", "EUR"]
    r = ocs_cmd("rate", "--local", "--json", "--plan", "prepaid-basic", "--service", "voice",
                "--to", "0049301234", "--at", "2026-11-23T20:00:00Z",
                "--duration", "100")  # fmt: skip
    answer = json.loads(r.stdout)
    assert (answer["total"], answer["charge"], answer["total_used"]) == ("0.10", "0.10", "0.00")
    assert answer["lines"][0]["amount"] == "0.10"


def test_config_show_sources_and_masking(tmp_path: Path) -> None:
    conf = tmp_path / "ocs.toml"
    conf.write_text("http_port = 9090\nsweep_interval = 2.5\n")
    secret = tmp_path / "key"
    secret.write_text("s" * 64)
    env = {"OCS_CONFIG": str(conf), "OCS_ADMIN_TOKEN": "very-secret-token",
           "OCS_SECRET_KEY_FILE": str(secret), "OCS_LOG_LEVEL": "DEBUG",
           "OCS_REDIS_URL": "redis://app:hunter2@redis.example:6379/0"}  # fmt: skip
    r = ocs_cmd("config", "show", "--json", "--data-dir", str(tmp_path / "d"), env=env)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert (rows["http_port"]["value"], rows["http_port"]["source"]) == (
        9090,
        f"config file {conf}",
    )
    assert rows["log_level"]["source"] == "env OCS_LOG_LEVEL"
    assert rows["data_dir"]["source"] == "--data-dir"
    assert (rows["native_port"]["value"], rows["native_port"]["source"]) == (3869, "default")
    assert rows["admin_token"] == {"name": "admin_token", "env": "OCS_ADMIN_TOKEN",
                                   "value": "********",
                                   "source": "env OCS_ADMIN_TOKEN"}  # fmt: skip
    assert rows["secret_key"]["source"] == "env OCS_SECRET_KEY_FILE"
    assert rows["redis_url"]["value"] == "redis://app:********@redis.example:6379/0"
    assert "very-secret-token" not in r.stdout and "hunter2" not in r.stdout
    assert "s" * 64 not in r.stdout
    r = ocs_cmd("config", "show", "--changed", env=env)
    assert r.returncode == 0, r.stderr
    assert "OCS_HTTP_PORT" in r.stdout and "OCS_NATIVE_PORT" not in r.stdout
    assert "hunter2" not in r.stdout and "very-secret-token" not in r.stdout
    # Nothing changed: it says so (it printed nothing at all).
    r = ocs_cmd("config", "show", "--changed")
    assert (r.returncode, r.stdout) == (0, "every setting is at its default (ocs config show "
                                           "lists them)\n")  # fmt: skip
    # A bad setting is one line naming it.
    r = ocs_cmd("config", "show", env={"OCS_HTTP_PORT": "x"})
    assert r.returncode == 1 and "OCS_HTTP_PORT" in r.stderr and r.stderr.count("\n") == 1


def test_help_says_what_outbox_export_needs() -> None:
    r = ocs_cmd("outbox", "export", "--help")
    text = " ".join(r.stdout.split())
    assert "embedded" not in text and "required: the OCS's Redis" in text


def test_shell_completion(tmp_path: Path) -> None:
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}  # fmt: skip
        r = ocs_cmd(env=env)
        assert r.returncode == 0, r.stderr
        return out.read_text().split()

    assert {"adjust", "add"} <= set(complete("ocs subscriber ad"))
    assert set(complete("ocs config ")) - {"-h", "--help"} == {"show"}
    assert "--cursor" in complete("ocs subscriber list --c")
