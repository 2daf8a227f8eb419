"""The native protocol server and client over real sockets on 127.0.0.1 (no Redis).

The handler is a fake that echoes the request into the reply's ``detail``.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest

from protocols.native import (
    ChargingRequest,
    NativeClient,
    NativeServer,
    Reply,
    Reserve,
)
from protocols.native import constants as c
from protocols.native.server import _ServerProtocol

HOST = "127.0.0.1"


def echo_detail(request: ChargingRequest) -> str:
    return f"{request.verb}:{request!r}"


async def echo(request: ChargingRequest) -> Reply:
    return Reply(request.id, c.RESULT_SUCCESS, granted=7, balance=-3, detail=echo_detail(request))


def frame(obj: Any) -> bytes:
    payload: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return msgpack.unpackb(await reader.readexactly(size), raw=False)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, leaked


@pytest.fixture
async def server() -> AsyncIterator[NativeServer]:
    async with NativeServer(echo, HOST, 0) as srv:
        yield srv


@pytest.fixture
async def client(server: NativeServer) -> AsyncIterator[NativeClient]:
    async with NativeClient(HOST, server.port) as cl:
        yield cl


class Gate:
    """A handler that blocks every request until opened, counting how many wait at once."""

    def __init__(self, expected: int = 0) -> None:
        self.open = asyncio.Event()
        self.started = 0
        self.running = 0
        self.max_running = 0
        self.expected = expected
        self.all_started = asyncio.Event()

    async def __call__(self, request: ChargingRequest) -> Reply:
        self.started += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        if self.started == self.expected:
            self.all_started.set()
        try:
            await self.open.wait()
        finally:
            self.running -= 1
        return Reply(request.id, c.RESULT_SUCCESS, detail=echo_detail(request))


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


# --- basics ----------------------------------------------------------------------------------


async def test_every_verb(server: NativeServer, client: NativeClient) -> None:
    calls: list[tuple[Callable[[], Awaitable[Reply]], str]] = [
        (
            lambda: client.reserve("s1", "255700000001", "voice", 0, 60, destination="2557"),
            "reserve",
        ),
        (lambda: client.commit("s1", 1, 60, 0, subscriber="255700000001"), "commit"),
        (lambda: client.release("s1", 2, 5), "release"),
        (lambda: client.debit("255700000001", "sms", "k1", 2, force=True), "debit"),
        (lambda: client.balance("255700000001"), "balance"),
    ]
    for call, verb in calls:
        reply = await call()
        assert reply.ok
        assert (reply.granted, reply.balance) == (7, -3)
        assert reply.detail.startswith(f"{verb}:")
    reserve = await client.reserve("s1", "255700000001", "voice", 0, 60, destination="2557")
    assert "destination='2557'" in reserve.detail
    assert "units=60" in reserve.detail
    commit = await client.commit("s1", 1, 60, 0, subscriber="255700000001")
    assert "subscriber='255700000001'" in commit.detail
    # ping is answered by the server itself, not the handler.
    assert await client.ping() == Reply(commit.id + 1, c.RESULT_SUCCESS)
    assert server.requests == 8
    assert server.connections == 1
    assert server.open_connections == 1


async def test_invalid_request_keeps_the_connection(server: NativeServer) -> None:
    reader, writer = await open_raw(server.port)
    try:
        writer.write(
            frame({"id": 5, "verb": "steal"})
            + frame({"id": 6, "verb": "reserve", "session": "s", "seq": 1.0})
            + frame({"id": 7, "verb": "ping"})
        )
        replies = [await read_frame(reader) for _ in range(3)]
    finally:
        await close_raw(writer)
    assert replies[0] == {"id": 5, "result": "invalid-request", "detail": "unknown verb 'steal'"}
    assert replies[1]["id"] == 6
    assert replies[1]["result"] == "invalid-request"
    assert replies[2] == {"id": 7, "result": "success"}
    assert server.invalid_requests == 2
    assert server.frames_rejected == 0


async def test_pipelining_1000_answered_out_of_order() -> None:
    n = 1000
    gate: dict[int, asyncio.Future[None]] = {}
    all_in = asyncio.Event()
    order: list[int] = []

    async def handler(request: ChargingRequest) -> Reply:
        assert isinstance(request, Reserve)
        gate[request.seq] = asyncio.get_running_loop().create_future()
        if len(gate) == n:
            all_in.set()
        await gate[request.seq]
        order.append(request.seq)
        return Reply(request.id, c.RESULT_SUCCESS, granted=request.seq, detail=request.session)

    async with (
        NativeServer(handler, HOST, 0, max_inflight_per_connection=n) as server,
        NativeClient(HOST, server.port) as client,
    ):
        calls = asyncio.gather(*(client.reserve(f"s{i}", "a", "voice", i) for i in range(n)))
        await all_in.wait()
        seqs = list(range(n))
        random.Random(7).shuffle(seqs)
        for seq in seqs:
            gate[seq].set_result(None)
        replies = await calls
    assert order == seqs
    assert [(r.granted, r.detail) for r in replies] == [(i, f"s{i}") for i in range(n)]
    assert len({r.id for r in replies}) == n


async def test_pipelined_raw_frames_in_one_write(server: NativeServer) -> None:
    reader, writer = await open_raw(server.port)
    try:
        writer.write(
            b"".join(
                frame({"id": i, "verb": "balance", "subscriber": f"a{i}"}) for i in range(1, 501)
            )
        )
        replies = [await read_frame(reader) for _ in range(500)]
    finally:
        await close_raw(writer)
    assert sorted(r["id"] for r in replies) == list(range(1, 501))
    assert all(
        r["detail"] == f"balance:Balance(id={r['id']}, subscriber='a{r['id']}')" for r in replies
    )


async def test_half_close_still_gets_replies(server: NativeServer) -> None:
    reader, writer = await open_raw(server.port)
    try:
        writer.write(b"".join(frame({"id": i, "verb": "ping"}) for i in range(1, 4)))
        writer.write(frame({"id": 4, "verb": "balance", "subscriber": "a"}))
        writer.write_eof()
        replies = [await read_frame(reader) for _ in range(4)]
        assert await reader.read() == b""
    finally:
        await close_raw(writer)
    assert {r["id"] for r in replies} == {1, 2, 3, 4}


# --- broken frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(struct.pack(">I", c.DEFAULT_MAX_FRAME + 1), id="oversize"),
        pytest.param(struct.pack(">I", 1) + b"\xc1", id="bad msgpack"),
        pytest.param(frame([1, 2]), id="not a map"),
        pytest.param(frame({"verb": "ping"}), id="no id"),
    ],
)
async def test_broken_frame_closes_only_its_connection(
    server: NativeServer, client: NativeClient, bad: bytes
) -> None:
    reader, writer = await open_raw(server.port)
    try:
        writer.write(frame({"id": 1, "verb": "ping"}) + bad + frame({"id": 2, "verb": "ping"}))
        assert await read_frame(reader) == {"id": 1, "result": "success"}
        error = await read_frame(reader)
        assert error["id"] == 0
        assert error["result"] == "invalid-request"
        assert error["detail"]
        assert await reader.read() == b""  # closed; the ping after the bad frame is not read
    finally:
        await close_raw(writer)
    assert server.frames_rejected == 1
    # Another connection is still served.
    assert (await client.ping()).ok
    assert (await client.balance("a")).ok


async def test_client_sees_a_rejected_frame_as_connection_error() -> None:
    async with (
        NativeServer(echo, HOST, 0, max_frame=256) as server,
        NativeClient(HOST, server.port) as client,
    ):
        ok = await client.balance("a")
        assert ok.ok
        # The client allows bigger frames than this server: the server cannot read it.
        with pytest.raises(ConnectionError, match="server rejected a frame"):
            await client.reserve("s" * 256, "a", "voice", 0)
        assert not client.connected
        with pytest.raises(ConnectionError):
            await client.ping()
        assert server.frames_rejected == 1


# --- handler failures ------------------------------------------------------------------------


async def test_handler_exceptions_are_answered(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: ChargingRequest) -> Reply:
        if isinstance(request, Reserve):
            raise ConnectionError("redis down")
        if request.verb == "commit":
            raise TimeoutError
        if request.verb == "balance":
            return Reply(request.id + 1, c.RESULT_USER_UNKNOWN)
        raise RuntimeError("bug")

    async with (
        NativeServer(handler, HOST, 0) as server,
        NativeClient(HOST, server.port) as client,
    ):
        assert (await client.reserve("s", "a", "voice", 0)).result == c.RESULT_STORE_UNAVAILABLE
        assert (await client.commit("s", 1, 1)).result == c.RESULT_STORE_UNAVAILABLE
        failed = await client.release("s", 2)
        assert (failed.result, failed.detail) == (c.RESULT_INVALID_REQUEST, "internal error")
        # A wrong id is corrected, so the caller still gets its answer.
        assert (await client.balance("a")).result == c.RESULT_USER_UNKNOWN
        assert (await client.ping()).ok
    assert server.handler_errors == 3
    assert "bug" in caplog.text


# --- back-pressure, timeouts, lifecycle ------------------------------------------------------


async def test_reading_pauses_at_max_inflight() -> None:
    gate = Gate(expected=4)
    async with (
        NativeServer(gate, HOST, 0, max_inflight_per_connection=4) as server,
        NativeClient(HOST, server.port) as client,
    ):
        calls = asyncio.gather(*(client.debit("a", "sms", f"k{i}") for i in range(20)))
        await gate.all_started.wait()
        assert server.paused_connections == 1
        assert server.inflight == 4
        for _ in range(20):
            await asyncio.sleep(0)  # give the server turns: it must not start more
        assert gate.started == 4
        gate.open.set()
        replies = await calls
        assert all(r.ok for r in replies)
        assert gate.max_running == 4
        assert gate.started == 20
        assert server.paused_connections == 0
        assert (await client.ping()).ok


async def test_client_call_timeout() -> None:
    gate = Gate(expected=1)
    async with (
        NativeServer(gate, HOST, 0) as server,
        NativeClient(HOST, server.port, timeout=0.05) as client,
    ):
        with pytest.raises(TimeoutError):
            await client.balance("a")
        assert client.inflight == 0
        gate.open.set()
        client.timeout = 5.0
        # The late reply is dropped; the connection is still good.
        assert (await client.balance("b")).detail.endswith("subscriber='b')")


async def test_graceful_close_drains_inflight_requests() -> None:
    gate = Gate(expected=3)
    server = NativeServer(gate, HOST, 0)
    await server.start()
    client = NativeClient(HOST, server.port)
    await client.connect()
    try:
        calls = asyncio.gather(*(client.reserve(f"s{i}", "a", "voice", 0) for i in range(3)))
        await gate.all_started.wait()
        closing = asyncio.create_task(server.close())
        await asyncio.sleep(0)
        assert not closing.done()
        # No new connections once closing has begun.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, server.port)
        gate.open.set()
        replies = await calls
        assert [r.detail.split("session='")[1][:2] for r in replies] == ["s0", "s1", "s2"]
        assert all(r.ok for r in replies)
        await closing
        assert server.open_connections == 0
        with pytest.raises(ConnectionError):
            await client.ping()
    finally:
        await client.close()
        await server.close()


async def test_close_cancels_what_outlives_the_drain_timeout() -> None:
    gate = Gate(expected=2)
    server = NativeServer(gate, HOST, 0, drain_timeout=0.05)
    async with server, NativeClient(HOST, server.port) as client:
        calls = asyncio.gather(client.balance("a"), client.balance("b"), return_exceptions=True)
        await gate.all_started.wait()
        await server.close()
        results = await calls
        assert all(isinstance(r, ConnectionError) for r in results)
        assert gate.running == 0
        assert server.inflight == 0


async def test_client_fails_inflight_calls_when_the_connection_drops() -> None:
    gate = Gate(expected=1)
    async with NativeServer(gate, HOST, 0, drain_timeout=0) as server:
        client = NativeClient(HOST, server.port)
        await client.connect()
        call = asyncio.ensure_future(client.balance("a"))
        await gate.all_started.wait()
        await server.close()
        with pytest.raises(ConnectionError):
            await call
        await client.close()
        await client.close()  # idempotent


async def test_connect_refused() -> None:
    server = NativeServer(echo, HOST, 0)
    await server.start()
    port = server.port
    await server.close()
    client = NativeClient(HOST, port)
    with pytest.raises(ConnectionRefusedError):
        await client.connect()
    await client.close()
    with pytest.raises(ConnectionError, match="cannot connect"):
        await client.ping()


class FakeTransport(asyncio.Transport):
    """Records what the protocol asks of its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.written = bytearray()
        self.writes = 0
        self.closing = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


async def test_reading_pauses_while_the_peer_does_not_read_replies() -> None:
    server = NativeServer(echo, HOST, 0)
    protocol = _ServerProtocol(server, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.pause_writing()
    assert not transport.reading
    # Frames already received wait in the codec until the peer reads again.
    protocol.data_received(frame({"id": 1, "verb": "ping"}) + frame({"id": 2, "verb": "ping"}))
    assert server.requests == 0
    protocol.resume_writing()
    assert transport.reading
    assert server.requests == 2
    await asyncio.sleep(0)  # one loop turn: the flush runs
    assert transport.written == frame({"id": 1, "result": "success"}) + frame(
        {"id": 2, "result": "success"}
    )
    assert transport.writes == 1  # the replies of one loop turn go out in one write
    protocol.connection_lost(None)
    await protocol.closed
