"""The ``ocs`` command as a user runs it: subprocesses, real ports, a private Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_batch import run_all, run_batch
from secure import ADMIN, SECURE

from ocs.config import ConfigError, Settings, load_settings
from ocs.service import Running, run_ocs
from tests.contract import contract_trace

OCS = [sys.executable, "-m", "ocs.cli"]


def ocs_cmd(*args: str, api: str | None = None, cwd: Path | None = None,
            timeout: float = 60, env: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = dict(os.environ)
    full.pop("OCS_REDIS_URL", None)
    if api:
        full.update(OCS_API_URL=api, OCS_API_TOKEN=ADMIN)
    full.update(env or {})
    return subprocess.run(
        [*OCS, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout,
        check=False, input=stdin,
    )  # fmt: skip


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    settings = Settings(redis_url=redis_url, native_port=0, http_port=0, **SECURE)
    async with run_ocs(settings) as running:
        yield running


async def test_subscriber_commands_through_the_api(ocs: Running) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"
    m = "491701112233"
    add, topup, conflict, show, events, listed, unknown, bad = await run_all(
        ["subscriber", "add", m, "--balance", "10.00", "--plan", "prepaid-basic",
         "--credit-limit", "1.50"],
        ["subscriber", "topup", m, "2.50", "--reference", "v-1"],
        # The same reference with another amount: refused with a message, and nothing changes.
        ["subscriber", "topup", m, "25.00", "--reference", "v-1"],
        ["subscriber", "show", m],
        ["events", m, "--json"],
        ["subscriber", "list", "--json"],
        ["subscriber", "show", "000"],
        ["subscriber", "add", "491701112234", "--balance", "1.5.0", "--plan", "prepaid-basic"],
        api=api,
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["balance"] == "10.00"
    assert topup.returncode == 0, topup.stderr
    assert conflict.returncode == 1 and "409" in conflict.stderr and "'v-1'" in conflict.stderr
    shown = json.loads(show.stdout)
    assert (shown["balance"], shown["credit_limit"], shown["available"]) == (
        "12.50", "1.50", "14.00"
    )  # fmt: skip
    assert [e["type"] for e in json.loads(events.stdout)["events"]] == ["topup", "create"]
    assert m in json.loads(listed.stdout)["subscribers"]
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "404" in unknown.stderr
    assert bad.returncode == 1 and "balance" in bad.stderr


def test_unreachable_api_is_one_clear_line() -> None:
    r = ocs_cmd("subscriber", "show", "1", api="http://127.0.0.1:9")
    assert r.returncode == 1
    assert r.stderr.startswith("ocs: cannot reach the OCS admin API") and r.stderr.count("\n") == 1


def test_bad_configuration_is_one_clear_line() -> None:
    env = {**os.environ, "OCS_NATIVE_PORT": "many"}
    r = subprocess.run([*OCS, "serve"], capture_output=True, text=True, env=env, timeout=30,
                       check=False)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == "ocs: OCS_NATIVE_PORT: must be an integer, got 'many'"


def test_log_level_in_any_case_and_a_bad_one_refused() -> None:
    assert load_settings({"OCS_LOG_LEVEL": "warning"}).log_level == "WARNING"
    with pytest.raises(ConfigError, match="OCS_LOG_LEVEL: must be one of DEBUG, INFO"):
        load_settings({"OCS_LOG_LEVEL": "loud"})


def test_unreachable_redis_at_start_is_waited_for_then_one_line() -> None:
    env = {**os.environ, "OCS_REDIS_WAIT": "0.5"}
    r = subprocess.run([*OCS, "serve", "--redis-url", "redis://127.0.0.1:1/0", "--native-port",
                        "0", "--http-port", "0", "--diameter-port", "0"], capture_output=True,
                       text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert "waiting up to 0.5 s for Redis at 127.0.0.1:1" in lines[0]
    assert lines[-1].startswith("ocs: Redis at 127.0.0.1:1 did not answer within 0.5 s")
    assert len(lines) == 2
    env["OCS_REDIS_URL"] = "rediss://127.0.0.1:1/0?ssl_ca_certs=/no/such/ca.pem"
    r = subprocess.run([*OCS, "serve"], capture_output=True, text=True, env=env, timeout=30,
                       check=False)  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("ocs: OCS_REDIS_URL: TLS settings of Redis URL")


def test_help_everywhere() -> None:
    commands = [[], ["serve"], ["demo"], ["subscriber"], ["subscriber", "add"], ["events"],
                ["redis"], ["rate"], ["tariffs"], ["tariffs", "load"], ["tariffs", "check"],
                ["tariffs", "list"], ["provisioning"], ["provisioning", "reconcile"],
                ["hlr-sim"], ["subscriber", "list"], ["subscriber", "adjust"], ["config", "show"],
                ["switch-sim"], ["msc-sim"], ["outbox", "export"]]  # fmt: skip
    for c, r in zip(commands, run_batch([[*c, "--help"] for c in commands]), strict=True):
        assert r.returncode == 0 and "usage: ocs" in r.stdout, c


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    r = ocs_cmd("demo", "--duration", "6", "--http-port", "0", "--subscribers", "60",
                cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "60 subscribers loaded" in out
    assert "Redis: redis://" in out and "starts from fresh data" in out
    assert "TOP-UP    " in out  # the keep-alive top-ups
    # Barring on the real-time path: overdraft subscribers charged past -5.00 are barred at
    # the HLR, and a keep-alive top-up lifts the bar.
    assert "BARRING   6 prepaid subscribers start in overdraft" in out
    assert re.search(r"^HLR       4917\d{8} barred outgoing", out, re.M), out
    assert re.search(r"^HLR       4917\d{8} unbarred", out, re.M), out
    assert "of them barred (the top-up lifts the bar)" in out
    # The Redis is emptied before the OCS starts: no consumer finds its group gone.
    assert "NOGROUP" not in r.stderr, r.stderr
    assert "granted" in out
    assert "refused: credit-limit-reached" in out
    # The barring story: below the limit, barred in the simulated HLR, topped up, unbarred.
    assert "HLR       4919000000001 barred outgoing" in out, out
    assert "CDR file  MSC02_-_0001." in out  # the story's calls, charged from a CDR file
    assert "STORY     top-up 50.00" in out
    assert "HLR       4919000000001 unbarred" in out
    # CAMEL calls from the simulated MSC (where libusrsctp2 is installed, as .ci/run does).
    if "CAMEL     not in this demo" not in out:
        assert "CAMEL     camel 4917" in out and " ended after " in out, out
    assert "Stopping" in out
    # Enterprise billing: the hierarchy, the feeds, a summary per agency, the PDFs.
    assert "BILLING   24 enterprise accounts of 8 agencies" in out
    assert "0 rejected" in out
    assert "bill summary" in out
    assert "MIN-INT" in out
    invoices = sorted((tmp_path / ".ocs" / "demo" / "invoices").glob("*.pdf"))
    assert len(invoices) == 24
    assert invoices[0].read_bytes().startswith(b"%PDF")
    # The embedded Redis kept its data under the working directory and is gone now.
    assert (tmp_path / ".ocs" / "demo" / "redis").is_dir()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path) not in ps.stdout


def test_the_demos_audit_chain_verifies_against_its_redis(tmp_path: Path) -> None:
    """A change made through the demo's API is in its audit chain, and `ocs audit verify`
    against the demo's Redis finds the chain intact: the secret generated for the run is kept
    in that Redis, as a fresh install keeps the one it generates (it said BROKEN before)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    demo = subprocess.Popen(
        [*OCS, "demo", "--duration", "20", "--http-port", "0", "--subscribers", "20",
         "--callers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        api = token = ""
        for line in demo.stdout:
            if m := re.search(r"admin API on (http://\S+)", line):
                api = m[1]
            if m := re.search(r"admin token \(OCS_ADMIN_TOKEN\): (\S+)", line):
                token = m[1]
                break
        assert api and token
        topup = urllib.request.Request(
            f"{api}/v1/subscribers/491700000001/topups", method="POST",
            data=json.dumps({"amount": "1.00", "reference": "audit-1"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(topup, timeout=30) as answer:
            assert answer.status == 201
        demo.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops cleanly
    finally:
        _, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err
    redis = subprocess.Popen([*OCS, "redis", "--data-dir", ".ocs/demo", "--port", "0"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert redis.stdout is not None
        started = re.search(r" at (redis://\S+) .*Ctrl-C to stop", redis.stdout.readline())
        assert started, "ocs redis did not start"
        r = ocs_cmd("audit", "verify", "--redis-url", started[1])
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert re.match(r"audit chain intact: [1-9]\d* records, head signed", r.stdout)
    finally:
        redis.send_signal(signal.SIGINT)
        redis.communicate(timeout=30)


# -- rating and tariffs ---------------------------------------------------------------------------

#: docs/tariffs.md: a call that starts 30 s before the peak band ends.
RATE = ["rate", "--plan", "prepaid-basic", "--service", "voice", "--to", "0049301234",
        "--at", "2026-11-23T18:59:30+01:00", "--duration", "125"]  # fmt: skip

SMALL = """\
name = "small"
version = 1
effective_from = 2026-01-01T00:00:00Z
currency = "EUR"

[numbering]
country_code = "49"

[destinations]
national = ["49"]

[services.sms]
unit = "events"
default_quota = 1

[[rates]]
service = "sms"
price = "0.07"
"""


def test_rate_local_without_a_server() -> None:
    r, used = run_batch(
        [[*RATE, "--local"],
         # Used and money: the units after the first minute, and what 1.00 buys.
         [*RATE[:-4], "--at", "2026-11-23T17:59:30Z", "--duration", "65", "--used", "60",
          "--money", "1.00", "--local", "--json"]],
        {"OCS_API_URL": "http://127.0.0.1:9", "OCS_API_TOKEN": ADMIN},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == (
        "prepaid-basic v1  voice  49301234 (national-fixed)  home  start 2026-11-23T17:59:30.000Z "
        "(peak)"
    )
    assert lines[1] == "units 125, billed 125"
    assert "peak: 30 x 0.09 per 60" in lines[2] and lines[2].endswith(" 0.045 EUR")
    assert "offpeak: 95 x 0.06 per 60" in lines[3] and lines[3].endswith(" 0.095 EUR")
    assert lines[-1].split() == ["total", "half-even", "to", "2", "decimals", "0.14", "EUR"]
    assert used.returncode == 0, used.stderr
    answer = json.loads(used.stdout)
    assert (answer["units"], answer["total"], answer["total_used"], answer["charge"]) == (
        125, "0.14", "0.08", "0.06"
    )  # fmt: skip
    assert (answer["money"], answer["affordable"]) == ("1.00", 1480)


def test_rate_local_errors_are_one_line(tmp_path: Path) -> None:
    errors = [
        (["--to", "abc"], "not a phone number"),
        (["--plan", "gold"], "no plan named 'gold'"),
        (["--at", "soon"], "--at: not a time"),
        # A time without its offset is refused, as the API refuses it (docs/api.md).
        (["--at", "2026-11-23T17:59:30"], "has no UTC offset"),
        (["--at", "2020-01-01T00:00:00Z"], "no version in force"),
        (["--service", "sms"], "--duration is for services counted in seconds"),
        (["--money", "1.5.0"], "--money"),
        (["--units", "5"], "--duration SECONDS or --units N"),
    ]
    # And a plan of one's own, from --plans-dir.
    (tmp_path / "small.toml").write_text(SMALL)
    *results, r = run_batch(
        [*([*RATE, *args, "--local"] for args, _ in errors),
         ["rate", "--local", "--plans-dir", str(tmp_path), "--plan", "small", "--service", "sms",
          "--units", "3", "--at", "2026-05-01T12:00:00Z"]],
    )  # fmt: skip
    for (args, message), e in zip(errors, results, strict=True):
        assert e.returncode == 1, (args, e.stdout)
        assert e.stderr.startswith("ocs: ") and e.stderr.count("\n") == 1, e.stderr
        assert message in e.stderr, e.stderr
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].split()[-2:] == ["0.21", "EUR"]


def test_tariffs_check(tmp_path: Path) -> None:
    good = tmp_path / "small.toml"
    good.write_text(SMALL)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        SMALL.replace('price = "0.07"', "price = 0.07").replace("version = 1", "version = 0")
    )
    ok, r, missing = run_batch([["tariffs", "check", str(f)]
                                for f in (good, bad, tmp_path / "missing.toml")])  # fmt: skip
    assert (ok.returncode, ok.stdout) == (0, f"OK {good}: plan small v1\n")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{bad}:2: version: must be an integer >= 1, got 0",
        f'{bad}:18: rates[0].price: must be a decimal string such as "0.09" (floats are not exact)',
    ]
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "cannot read" in missing.stderr


async def test_tariffs_load_list_and_rate_through_the_api(ocs: Running, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"
    good = tmp_path / "small.toml"
    good.write_text(SMALL)
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace('name = "small"', 'name = "small2"').replace(
        'price = "0.07"', "price = 0.07").replace('unit = "events"', 'unit = "sms"'))  # fmt: skip
    (load_bad, listed, load, listed_json, show, gold, rate, remote, local, bad_to) = await run_all(
        ["tariffs", "load", str(bad)],
        ["tariffs", "list"],
        ["tariffs", "load", str(good)],
        ["tariffs", "list", "--json"],
        ["tariffs", "show", "small"],
        ["tariffs", "show", "gold"],
        ["rate", "--plan", "small", "--service", "sms", "--units", "3", "--at",
         "2026-05-01T12:00:00Z", "--money", "0.50"],
        # Through the API, the same text as --local.
        RATE,
        [*RATE, "--local"],
        [*RATE, "--to", "abc"],
        api=api,
    )  # fmt: skip
    assert load_bad.returncode == 1
    assert load_bad.stdout == ""
    assert load_bad.stderr.splitlines() == [
        f"{bad}:13: services.sms.unit: must be one of seconds, octets, events",
        f'{bad}:18: rates[0].price: must be a decimal string such as "0.09" (floats are not exact)',
    ]
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == [
        "bundle-10", "gov-payu", "prepaid-basic"
    ]  # fmt: skip
    assert load.returncode == 0, load.stderr
    assert json.loads(load.stdout) == {
        "name": "small", "version": 1, "effective_from": "2026-01-01T00:00:00.000Z"
    }  # fmt: skip
    plans = {p["name"]: p for p in json.loads(listed_json.stdout)["plans"]}
    assert plans["small"]["versions"][0]["services"] == ["sms"]
    assert json.loads(show.stdout)["versions"][0]["services"]["sms"]["unit"] == "events"
    assert gold.returncode == 1 and gold.stderr.count("\n") == 1 and "404" in gold.stderr
    assert rate.returncode == 0, rate.stderr
    lines = rate.stdout.splitlines()
    assert lines[-2].split()[-2:] == ["0.21", "EUR"]
    assert lines[-1] == "affordable: 7 units for 0.50 EUR"
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert bad_to.returncode == 1
    assert bad_to.stderr.count("\n") == 1 and "422 to: not a phone number" in bad_to.stderr


# ~20 `ocs` processes, each importing the package: a minute on a loaded 2-core machine.
@pytest.mark.timeout(180)
async def test_auth_commands(ocs: Running) -> None:
    """Keys and users administered against Redis; the key works on the API, then is revoked;
    ``--token`` and OCS_API_TOKEN carry it; each change is audited."""
    api = f"http://127.0.0.1:{ocs.http_port}"
    redis_env = {"OCS_REDIS_URL": ocs.redis_url, "OCS_SECRET_KEY": SECURE["secret_key"]}

    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return ocs_cmd(*args, env=redis_env, **kw)

    r = await asyncio.to_thread(run, "auth", "key", "create", "--role", "auditor",
                                "--expires", "30d", "--label", "nightly report")  # fmt: skip
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("ocsk_") and "shown once" in r.stderr
    key_id = token.split("_")[1]
    r = await asyncio.to_thread(run, "auth", "key", "list", "--json")
    (listed,) = json.loads(r.stdout)
    assert (listed["id"], listed["role"], listed["label"]) == (key_id, "auditor", "nightly report")
    assert token not in r.stdout
    env = {"OCS_API_URL": api, "OCS_API_TOKEN": ""}
    r = await asyncio.to_thread(ocs_cmd, "--token", token, "subscriber", "list", env=env)
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(ocs_cmd, "subscriber", "list", env=env)
    assert r.returncode == 1 and "401" in r.stderr
    r = await asyncio.to_thread(ocs_cmd, "subscriber", "add", "491701112299", "--balance", "1",
                                "--plan", "prepaid-basic",
                                env={**env, "OCS_API_TOKEN": token})  # fmt: skip
    assert r.returncode == 1 and "403" in r.stderr
    r = await asyncio.to_thread(ocs_cmd, "audit", "list", "--action", "auth.key",
                                env={**env, "OCS_API_TOKEN": token})  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)["records"]
    assert [x["action"] for x in records] == ["auth.key.create"]
    assert records[0]["who"].startswith("cli:") and records[0]["target"] == f"key:{key_id}"
    r = await asyncio.to_thread(run, "auth", "key", "revoke", key_id)
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(ocs_cmd, "--token", token, "subscriber", "list", env=env)
    assert r.returncode == 1 and "revoked" in r.stderr
    # A user: created with a password on stdin, logs in through the API.
    r = await asyncio.to_thread(run, "auth", "user", "create", "ana", "--role", "operator",
                                "--password-stdin", stdin="correct horse\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(run, "auth", "user", "create", "bob", "--role", "root",
                                "--password-stdin", stdin="x\n")  # fmt: skip
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = await asyncio.to_thread(run, "auth", "user", "list")
    assert r.stdout.split() == ["ana", "operator", "-", "active"]

    async def login(password: str) -> int:
        async with (
            aiohttp.ClientSession(trace_configs=[contract_trace()]) as http,
            http.post(
                f"{api}/v1/auth/token", json={"username": "ana", "password": password}
            ) as resp,
        ):
            return resp.status

    assert await login("correct horse") == 200
    r = await asyncio.to_thread(run, "auth", "user", "passwd", "ana", "--password-stdin",
                                stdin="battery staple\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (await login("correct horse"), await login("battery staple")) == (401, 200)
    r = await asyncio.to_thread(run, "auth", "user", "disable", "ana")
    assert r.returncode == 0 and "disabled" in r.stdout
    assert await login("battery staple") == 401
    r = await asyncio.to_thread(run, "auth", "user", "enable", "ana")
    assert await login("battery staple") == 200
    r = await asyncio.to_thread(run, "audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout, r.stdout + r.stderr
    r = await asyncio.to_thread(ocs_cmd, "auth", "key", "list")
    assert r.returncode == 1 and "--redis-url" in r.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`ocs ... | head`: the pipe's reader closes it; the command stops without a word on
    stderr, with the status of a command killed by SIGPIPE (141), as shell tools do."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe fails at once: EPIPE
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    try:
        r = subprocess.run([*OCS, "config", "show"], stdout=write, stderr=subprocess.PIPE,
                           text=True, env=env, timeout=30, check=False)  # fmt: skip
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")
