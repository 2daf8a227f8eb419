"""Bad input on the HTTP, native and Diameter ports: answered in the protocol's own terms,
changing nothing, and stalled clients closed.

HTTP money fields with other scripts' digits (every money field of the API), plan files too
deep or too large, requests aiohttp's parser refuses (through raw sockets against a running
OCS), a client that goes away mid-body, and the idle, frame, CER, header and body timeouts.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import test_api
from secure import ADMIN, SECURE
from test_api import Client, create, snapshot
from test_diameter_server import Gateway

from ocs.config import ConfigError, Settings, load_settings
from ocs.provisioning.signing import sign
from ocs.service import Running, run_ocs
from ocs.store.store import Store
from protocols.lifecycle import StallTimer

api = test_api.api
store = test_api.store
clock = test_api.clock
metrics = test_api.metrics

#: Ten, in fullwidth, Arabic-Indic, mathematical bold and Devanagari digits (Python's
#: Decimal() takes them all), and one foreign digit among ASCII ones.
TEN = ["１０", "١٠", "𝟏𝟎", "१०", "1٠"]

# --- money fields ------------------------------------------------------------------------------

_MSISDN = "46700000001"
#: (method, path, body without the money field, the money field).
MONEY_FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", f"/v1/subscribers/{_MSISDN}/topups", {"reference": "t1"}, "amount"),
    ("POST", f"/v1/subscribers/{_MSISDN}/refunds", {"reference": "r1"}, "amount"),
    ("POST", f"/v1/subscribers/{_MSISDN}/adjustments", {"reference": "a1", "reason": "x"},
     "amount"),
    ("POST", "/v1/subscribers", {"msisdn": "46700000002", "plan": "prepaid-basic"}, "balance"),
    ("POST", "/v1/subscribers",
     {"msisdn": "46700000002", "plan": "prepaid-basic", "balance": "1"}, "credit_limit"),
    ("PATCH", f"/v1/subscribers/{_MSISDN}", {}, "credit_limit"),
    ("POST", "/v1/rate", {"plan": "prepaid-basic", "service": "sms", "units": 1,
                          "at": "2026-06-01T12:00:00Z"}, "money"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), MONEY_FIELDS)
@pytest.mark.parametrize("amount", TEN)
async def test_money_in_other_scripts_digits_is_422_and_changes_nothing(
    api: Client, store: Store, method: str, path: str, body: dict[str, Any], field: str,
    amount: str,
) -> None:  # fmt: skip
    await create(api, _MSISDN)
    before = await snapshot(store)
    resp = await api.request(method, path, json={**body, field: amount})
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await snapshot(store) == before
    # The same request in ASCII digits is fine (the field is the only fault).
    resp = await api.request(method, path, json={**body, field: "10"})
    assert resp.status in (200, 201), await resp.text()


# --- plan files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml",
    [
        "a = " + "[" * 5000 + "]" * 5000,
        "a = " + "{b = " * 5000 + "1" + "}" * 5000,
        "a = " + "[" * 17 + "]" * 17,
        "[" + ".".join(["t"] * 5000) + "]\nx = 1",
    ],
    ids=["arrays-5000", "inline-tables-5000", "arrays-17", "dotted-header-5000"],
)
async def test_deep_plans_are_422(api: Client, store: Store, toml: str) -> None:
    before = await snapshot(store)
    resp = await api.post("/v1/tariffs", data=toml, headers={"Content-Type": "application/toml"})
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert "nested deeper than 16" in (await resp.json())["errors"][0]
    assert await snapshot(store) == before


async def test_plans_over_one_mib_are_413(api: Client) -> None:
    big = io.BytesIO(b"# " + b"x" * (1024 * 1024) + b"\n")
    resp = await api.post("/v1/tariffs", data=big, headers={"Content-Type": "application/toml"})
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"


# --- a running OCS, through raw sockets ---------------------------------------------------------

FAST = Settings(
    native_port=0, http_port=0, diameter_port=0, native_frame_timeout=0.3,
    native_idle_timeout=0.6, diameter_cer_timeout=0.3, diameter_frame_timeout=0.3,
    http_idle_timeout=0.3, http_body_timeout=0.3,
    admin_token=ADMIN, secret_key=SECURE["secret_key"], diameter_peers="pgw.test@127.0.0.1",
)  # fmt: skip


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    async with run_ocs(replace(FAST, redis_url=redis_url)) as running:
        yield running


async def exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes (TimeoutError if it does not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        await writer.wait_closed()


def status_and_body(raw: bytes) -> tuple[int, str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, headers.get("Content-Type", ""), body


_BEARER = f"Authorization: Bearer {ADMIN}\r\n".encode()
_POST = b"POST /v1/subscribers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + _BEARER
MALFORMED: dict[str, tuple[bytes, int]] = {
    "unknown method": (b"BREW /v1/subscribers HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "HTTP/9.9": (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    "request line over 8 KB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "header over 8 KB": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
                         400),
    "space in a header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400),
    "bad chunk size": (_POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
    "Content-Length with Transfer-Encoding": (
        _POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "two Content-Lengths": (_POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    "negative Content-Length": (_POST + b"Content-Length: -1\r\n\r\n{}", 400),
    "NUL in the path": (b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "raw UTF-8 in the request line": ("GET /v1/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    "TLS ClientHello": (bytes.fromhex("16030100f8010000f40303") + bytes(40), 501),
}  # fmt: skip


async def test_malformed_http_is_problem_json(
    ocs: Running, caplog: pytest.LogCaptureFixture
) -> None:
    before = await snapshot(ocs.store)
    with caplog.at_level(logging.INFO):
        for name, (data, expected) in MALFORMED.items():
            status, content_type, body = status_and_body(await exchange(ocs.http_port, data))
            assert (status, content_type.split(";")[0]) == (
                expected, "application/problem+json"), name  # fmt: skip
            assert re.fullmatch(rb'\{"type": "about:blank".*"status": %d.*\}' % expected, body)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert await snapshot(ocs.store) == before
    # A known route with a method it does not have stays a 405 (with Allow).
    status, content_type, _ = status_and_body(
        await exchange(ocs.http_port, b"PUT /v1/subscribers HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (status, content_type.split(";")[0]) == (405, "application/problem+json")


async def _until(check: Callable[[], Any], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_client_gone_mid_body_is_499_at_debug(
    ocs: Running, caplog: pytest.LogCaptureFixture
) -> None:
    port = ocs.http_port
    with caplog.at_level(logging.DEBUG):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_POST + b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def counted() -> bool:
            text = (await exchange(port, b"GET /metrics HTTP/1.0\r\n" + _BEARER + b"\r\n")).decode()
            return 'result="499",verb="POST /v1/subscribers"' in text

        await _until(counted)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("closed the connection" in r.getMessage() for r in caplog.records)


# --- stalled clients ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "data", "answer"),
    [
        ("native", b"\x00\x00\x00\x10abc", b""),  # half a frame
        ("native", b"", b""),  # nothing at all (idle)
        ("diameter", b"", b""),  # no CER
        ("diameter", b"\x01\x00\x00", b""),  # half a header
        ("http", b"", b""),  # no request (idle)
        ("http", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b""),  # half the headers
        ("http", _POST + b"Content-Length: 100\r\n\r\n{", b"HTTP/1.1 408"),  # half the body
    ],
)
async def test_stalled_clients_are_closed(
    ocs: Running, port: str, data: bytes, answer: bytes
) -> None:
    number = {"native": ocs.native.port, "diameter": ocs.diameter_port, "http": ocs.http_port}
    got = await exchange(number[port], data)
    assert got.startswith(answer)
    if port == "native":
        assert ocs.native.timed_out >= 1
    if answer:
        assert b"application/problem+json" in got


# --- the stall timer itself, on a clock we move ------------------------------------------------


class _Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self.dead = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.dead = True


class ManualLoop:
    """Just what StallTimer uses of a loop: time() and call_at(), on a clock we move."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(when, callback)
        self.timers.append(handle)
        return handle

    def advance(self, to: float) -> None:
        self.now = to
        while due := [h for h in self.timers if h.when() <= to and not h.dead]:
            h = min(due, key=_Handle.when)
            self.timers.remove(h)
            h.callback()


def _timer(idle: float, frame: float, busy: list[bool]) -> tuple[ManualLoop, list[str]]:
    loop, stalls = ManualLoop(), list[str]()
    StallTimer(loop, idle_timeout=idle, frame_timeout=frame,  # type: ignore[arg-type]
               busy=lambda: busy[0], on_stall=stalls.append)  # fmt: skip
    return loop, stalls


def test_stall_timer_idle_waits_while_busy() -> None:
    busy = [True]
    loop, stalls = _timer(10, 0, busy)
    loop.advance(10)
    assert stalls == []  # a request in flight: not idle
    busy[0] = False
    loop.advance(19.9)
    assert stalls == []
    loop.advance(20)
    assert stalls and "silent" in stalls[0]


def test_stall_timer_frame_deadline_comes_first() -> None:
    loop = ManualLoop()
    stalls: list[str] = []
    timer = StallTimer(loop, idle_timeout=100, frame_timeout=5,  # type: ignore[arg-type]
                       busy=lambda: False, on_stall=stalls.append)  # fmt: skip
    loop.advance(1)
    timer.received(partial=True)
    loop.advance(3)
    timer.received(partial=True)  # more of the same frame: its clock keeps running
    loop.advance(5.9)
    assert stalls == []
    loop.advance(6)
    assert stalls and "incomplete" in stalls[0]


def test_stall_timer_complete_frames_reset_it() -> None:
    loop = ManualLoop()
    stalls: list[str] = []
    timer = StallTimer(loop, idle_timeout=0, frame_timeout=5,  # type: ignore[arg-type]
                       busy=lambda: False, on_stall=stalls.append)  # fmt: skip
    timer.received(partial=True)
    loop.advance(4)
    timer.received(partial=False)
    loop.advance(100)
    assert stalls == []
    with pytest.raises(ValueError, match="negative"):
        StallTimer(loop, idle_timeout=-1, frame_timeout=0,  # type: ignore[arg-type]
                   busy=lambda: False, on_stall=stalls.append)  # fmt: skip


# --- JSON and TOML nested too deep elsewhere ---------------------------------------------------


async def test_signed_callback_nested_too_deep_is_400(redis_url: str) -> None:
    settings = replace(FAST, redis_url=redis_url, provisioning_secret="s3cret")
    body = b"[" * 100_000 + b"]" * 100_000
    async with run_ocs(settings) as running:
        head = (
            b"POST /v1/provisioning/callbacks HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        )
        for name, value in sign("s3cret", body).items():
            head += f"{name}: {value}\r\n".encode()
        status, content_type, _ = status_and_body(
            await exchange(running.http_port, head + b"Connection: close\r\n\r\n" + body)
        )
    assert (status, content_type.split(";")[0]) == (400, "application/problem+json")


def test_config_file_nested_too_deep_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "ocs.toml"
    f.write_text("a = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested too deep"):
        load_settings({}, f)


async def test_open_diameter_peer_with_half_a_message_is_closed(ocs: Running) -> None:
    gw = await Gateway.connect(ocs.diameter_port)  # CER/CEA: the peer is open
    try:
        request = gw.cer().to_bytes()
        gw.writer.write(request[: len(request) // 2])
        await gw.writer.drain()
        await asyncio.wait_for(gw.closed.wait(), 5)
    finally:
        await gw.close()
    assert ocs.diameter.timed_out == 1
