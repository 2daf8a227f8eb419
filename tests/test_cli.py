"""The ``ocs`` command as a user runs it: subprocesses, real ports, a private Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ocs.config import Settings
from ocs.service import Running, run_ocs

OCS = [sys.executable, "-m", "ocs.cli"]


def ocs_cmd(*args: str, api: str | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = dict(os.environ)
    env.pop("OCS_REDIS_URL", None)
    if api:
        env["OCS_API_URL"] = api
    return subprocess.run(
        [*OCS, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    settings = Settings(redis_url=redis_url, native_port=0, http_port=0)
    async with run_ocs(settings) as running:
        yield running


async def test_subscriber_commands_through_the_api(ocs: Running) -> None:
    api = f"http://127.0.0.1:{ocs.http_port}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return ocs_cmd(*args, api=api)

    r = await asyncio.to_thread(run, "subscriber", "add", "491701112233", "--balance", "10.00",
                                "--plan", "prepaid-basic", "--credit-limit", "1.50")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["balance"] == "10.00"
    r = await asyncio.to_thread(run, "subscriber", "topup", "491701112233", "2.50",
                                "--reference", "v-1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(run, "subscriber", "show", "491701112233")
    shown = json.loads(r.stdout)
    assert (shown["balance"], shown["credit_limit"], shown["available"]) == (
        "12.50", "1.50", "14.00"
    )  # fmt: skip
    r = await asyncio.to_thread(run, "events", "491701112233")
    assert [e["type"] for e in json.loads(r.stdout)["events"]] == ["topup", "create"]
    r = await asyncio.to_thread(run, "subscriber", "list")
    assert "491701112233" in json.loads(r.stdout)["subscribers"]
    r = await asyncio.to_thread(run, "subscriber", "show", "000")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "404" in r.stderr
    r = await asyncio.to_thread(run, "subscriber", "add", "491701112234", "--balance", "1.5.0",
                                "--plan", "prepaid-basic")  # fmt: skip
    assert r.returncode == 1 and "balance" in r.stderr


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


def test_help_everywhere() -> None:
    commands = [[], ["serve"], ["demo"], ["subscriber"], ["subscriber", "add"], ["events"],
                ["redis"]]  # fmt: skip
    for args in ([*c, "--help"] for c in commands):
        r = ocs_cmd(*args)
        assert r.returncode == 0 and "usage: ocs" in r.stdout


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    r = ocs_cmd("demo", "--duration", "4", "--http-port", "0", "--subscribers", "60",
                cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "60 subscribers loaded" in out
    assert "granted" in out
    assert "refused: credit-limit-reached" in out
    assert "Stopping" in out
    # The embedded Redis kept its data under the working directory and is gone now.
    assert (tmp_path / ".ocs" / "demo" / "redis").is_dir()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path) not in ps.stdout
