"""The Diameter transport through real TCP sockets: peers, watchdog, DPR, errors, pipelining.

The handler here is a stub (no charging): these tests are about the base protocol. ``Gateway``
is a small asyncio client speaking our codec; tests/test_diameter_e2e.py uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from protocols.diameter import (
    NEED_DATA,
    Framer,
    Item,
    LocalIdentity,
    Message,
    RemotePeer,
    make_answer,
    make_request,
    raw_avp,
)
from protocols.diameter import constants as c
from protocols.diameter import peer as peer_module
from protocols.diameter.server import DiameterServer

OCS = LocalIdentity("ocs.test", "test", ("127.0.0.1",))


class Gateway:
    """A Diameter client (the initiator) over asyncio streams: CER on connect, DWA to every
    DWR, answers matched to requests by Hop-by-Hop id, other server requests queued."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin_host: str,
        *,
        answer_dwr: bool = True,
        answer_dpr: bool = True,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.origin_host = origin_host
        self.answer_dwr = answer_dwr
        self.answer_dpr = answer_dpr
        self.framer = Framer(1 << 20)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        #: Requests the server sent (DWR, DPR, RAR...), in order.
        self.requests: asyncio.Queue[Message] = asyncio.Queue()
        #: Answers that matched no request of ours.
        self.stray: list[Message] = []
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, port: int, origin_host: str = "pgw.test", *, cer: bool = True, **kw: Any
    ) -> Gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        gw = cls(reader, writer, origin_host, **kw)
        if cer:
            cea = await gw.request(gw.cer())
            assert cea.result_code == c.DIAMETER_SUCCESS, cea
        return gw

    def cer(self, apps: Iterable[Item] = (("Auth-Application-Id", 4),)) -> Message:
        return make_request(
            c.CMD_CAPABILITIES_EXCHANGE,
            0,
            [
                ("Origin-Host", self.origin_host),
                ("Origin-Realm", "gw.test"),
                ("Host-IP-Address", "127.0.0.1"),
                ("Vendor-Id", 10415),
                ("Product-Name", "test-gw"),
                ("Supported-Vendor-Id", 10415),
                *apps,
            ],
            hop_by_hop=0,
            end_to_end=0,
        )

    def base(self) -> list[Item]:
        return [("Origin-Host", self.origin_host), ("Origin-Realm", "gw.test")]

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.framer.receive_data(data)
                while (m := self.framer.next_message()) is not NEED_DATA:
                    assert isinstance(m, Message)
                    self._dispatch(m)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for f in self._pending.values():
                if not f.done():
                    f.set_exception(ConnectionError("closed"))

    def _dispatch(self, m: Message) -> None:
        if not m.is_request:
            f = self._pending.pop(m.hop_by_hop, None)
            if f is not None and not f.done():
                f.set_result(m)
            else:
                self.stray.append(m)
            return
        auto = {c.CMD_DEVICE_WATCHDOG: self.answer_dwr, c.CMD_DISCONNECT_PEER: self.answer_dpr}
        if auto.get(m.command_code):
            self.send(self.answer(m))
        self.requests.put_nowait(m)

    def answer(self, request: Message, result_code: int = c.DIAMETER_SUCCESS) -> Message:
        return make_answer(
            request, result_code=result_code, origin_host=self.origin_host, origin_realm="gw.test"
        )

    def send(self, m: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(m.to_bytes())

    def submit(self, m: Message) -> asyncio.Future[Message]:
        """Send a request (Hop-by-Hop and End-to-End ids set here); the future gets its answer."""
        m.hop_by_hop = next(self._ids)
        m.end_to_end = m.hop_by_hop
        f: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[m.hop_by_hop] = f
        self.send(m)
        return f

    async def request(self, m: Message, within: float = 5.0) -> Message:
        return await asyncio.wait_for(self.submit(m), within)

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        await self._task
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def app_request(gw: Gateway, *items: Item, app: int = 4, command: int = 8388700) -> Message:
    # An experimental command code (RFC 6733 §11.2.1): validate has no rules for it.
    return make_request(
        command,
        app,
        [("Session-Id", f"{gw.origin_host};1"), *gw.base(), *items],
        hop_by_hop=0,
        end_to_end=0,
        proxiable=True,
    )


async def echo(request: Message, peer: RemotePeer) -> Message:
    """Answers 2001 after the delay (seconds) in Validity-Time, echoing Origin-State-Id."""
    delay = request.get_int("Validity-Time", default=0) / 1000
    if delay:
        await asyncio.sleep(delay)
    if request.get_int("Origin-State-Id") == 666:
        raise RuntimeError("handler bug")
    return make_answer(
        request,
        [("Origin-State-Id", request.get_int("Origin-State-Id", default=0))],
        result_code=c.DIAMETER_SUCCESS,
        origin_host=OCS.origin_host,
        origin_realm=OCS.origin_realm,
    )


@pytest.fixture
async def server() -> AsyncIterator[DiameterServer]:
    async with DiameterServer(OCS, echo, "127.0.0.1", 0, drain_timeout=3) as s:
        yield s


@pytest.fixture
async def gw(server: DiameterServer) -> AsyncIterator[Gateway]:
    g = await Gateway.connect(server.port)
    yield g
    await g.close()


async def until(predicate: Any, within: float = 5.0) -> None:
    """Poll server counters (they have no events to wait on)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_cer_cea(server: DiameterServer) -> None:
    g = await Gateway.connect(server.port, cer=False)
    cea = await g.request(g.cer())
    assert cea.result_code == c.DIAMETER_SUCCESS
    assert cea.get_str("Origin-Host") == "ocs.test"
    assert cea.get_int("Auth-Application-Id") == 4
    assert cea.get_int("Supported-Vendor-Id") == c.VENDOR_3GPP
    assert str(cea.get("Host-IP-Address")) == "127.0.0.1"
    await until(lambda: server.open_peers == ["pgw.test"])
    await g.close()
    await until(lambda: server.open_connections == 0)
    assert server.open_peers == []


async def test_cer_without_credit_control_gets_5010(server: DiameterServer) -> None:
    g = await Gateway.connect(server.port, cer=False)
    cea = await g.request(g.cer(apps=[("Auth-Application-Id", 16777238)]))
    assert cea.result_code == c.DIAMETER_NO_COMMON_APPLICATION
    await asyncio.wait_for(g.closed.wait(), 5)
    await g.close()


async def test_peer_not_allowed_gets_3010() -> None:
    async with DiameterServer(
        OCS, echo, "127.0.0.1", 0, allowed_peers=frozenset({"pgw.allowed"})
    ) as s:
        g = await Gateway.connect(s.port, "pgw.other", cer=False)
        cea = await g.request(g.cer())
        assert (cea.result_code, cea.is_error) == (c.DIAMETER_UNKNOWN_PEER, True)
        await asyncio.wait_for(g.closed.wait(), 5)
        await g.close()
        ok = await Gateway.connect(s.port, "pgw.allowed")
        await ok.close()


async def test_realm_not_allowed_gets_3010() -> None:
    """The allow-list of Origin-Realms (OCS_DIAMETER_REALMS): the gateways' realm is gw.test."""
    async with DiameterServer(
        OCS, echo, "127.0.0.1", 0, allowed_realms=frozenset({"other.realm"})
    ) as s:
        g = await Gateway.connect(s.port, "pgw.test", cer=False)
        cea = await g.request(g.cer())
        assert (cea.result_code, cea.is_error) == (c.DIAMETER_UNKNOWN_PEER, True)
        await asyncio.wait_for(g.closed.wait(), 5)
        await g.close()
    async with DiameterServer(
        OCS, echo, "127.0.0.1", 0, allowed_realms=frozenset({"gw.test"})
    ) as s:
        ok = await Gateway.connect(s.port, "pgw.test")
        await ok.close()


async def test_request_before_cer_closes_without_answer(server: DiameterServer) -> None:
    g = await Gateway.connect(server.port, cer=False)
    answer = g.submit(app_request(g, ("Auth-Application-Id", 4)))
    await asyncio.wait_for(g.closed.wait(), 5)
    with pytest.raises(ConnectionError):
        await answer
    await g.close()
    assert server.requests == 0


async def test_dwr_dwa(gw: Gateway) -> None:
    dwa = await gw.request(
        make_request(c.CMD_DEVICE_WATCHDOG, 0, gw.base(), hop_by_hop=0, end_to_end=0)
    )
    assert (dwa.name, dwa.result_code) == ("DWA", c.DIAMETER_SUCCESS)


async def test_watchdog_sends_dwr_and_closes_a_silent_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 3539 wants Tw >= 6 s; a test may shrink it.
    monkeypatch.setattr(peer_module, "MIN_WATCHDOG_INTERVAL", 0.1)
    monkeypatch.setattr(peer_module, "WATCHDOG_JITTER", 0.02)
    async with DiameterServer(OCS, echo, "127.0.0.1", 0, watchdog_interval=0.2) as s:
        g = await Gateway.connect(s.port)
        dwr = await asyncio.wait_for(g.requests.get(), 2)
        assert dwr.name == "DWR"  # answered by the gateway: the connection stays
        dwr = await asyncio.wait_for(g.requests.get(), 2)
        assert dwr.name == "DWR"
        assert not g.closed.is_set()
        g.answer_dwr = False
        await asyncio.wait_for(g.closed.wait(), 3)  # DWR unanswered, SUSPECT, then closed
        await g.close()
        await until(lambda: s.open_connections == 0)


async def test_dpr_from_the_peer(server: DiameterServer, gw: Gateway) -> None:
    dpa = await gw.request(
        make_request(
            c.CMD_DISCONNECT_PEER, 0, [*gw.base(), ("Disconnect-Cause", 0)],
            hop_by_hop=0, end_to_end=0,
        )
    )  # fmt: skip
    assert (dpa.name, dpa.result_code) == ("DPA", c.DIAMETER_SUCCESS)
    await gw.close()
    await until(lambda: server.open_connections == 0)


async def test_close_sends_dpr_and_drains_requests() -> None:
    s = DiameterServer(OCS, echo, "127.0.0.1", 0, drain_timeout=5)
    await s.start()
    g = await Gateway.connect(s.port)
    slow = g.submit(app_request(g, ("Auth-Application-Id", 4), ("Validity-Time", 300)))
    await until(lambda: s.inflight == 1)
    await s.close()  # returns once the DPA came and the request was answered
    assert (await slow).result_code == c.DIAMETER_SUCCESS
    dpr = await asyncio.wait_for(g.requests.get(), 1)
    assert (dpr.name, dpr.get_int("Disconnect-Cause")) == ("DPR", c.DisconnectCause.REBOOTING)
    await asyncio.wait_for(g.closed.wait(), 2)
    await g.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", s.port)


async def test_close_does_not_wait_forever_for_a_silent_peer() -> None:
    s = DiameterServer(OCS, echo, "127.0.0.1", 0, drain_timeout=0.3)
    await s.start()
    g = await Gateway.connect(s.port, answer_dpr=False)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await s.close()
    assert loop.time() - t0 < 2
    await asyncio.wait_for(g.closed.wait(), 2)
    await g.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x02\x00\x00\x14" + bytes(16),  # version 2
        b"\x01\x00\x00\x13" + bytes(16),  # length not a multiple of 4
        b"\x01\xff\xff\xfc" + bytes(16),  # over the size limit
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_bytes_close_only_that_connection(
    server: DiameterServer, gw: Gateway, garbage: bytes
) -> None:
    bad = await Gateway.connect(server.port, "pgw.bad")
    bad.writer.write(garbage)
    await asyncio.wait_for(bad.closed.wait(), 5)
    await bad.close()
    assert server.framing_errors == 1
    answer = await gw.request(app_request(gw, ("Auth-Application-Id", 4)))
    assert answer.result_code == c.DIAMETER_SUCCESS


async def test_unreadable_request_header_is_answered_before_close(server: DiameterServer) -> None:
    # A request whose length is not a multiple of 4: 5015 DIAMETER_INVALID_MESSAGE_LENGTH,
    # answered (the header is readable) and then the connection closed.
    g = await Gateway.connect(server.port)
    header = struct.pack(">II", (1 << 24) | 22, (0x80 << 24) | 272)
    header += struct.pack(">III", 4, 77, 88)
    g.writer.write(header + bytes(2))
    await asyncio.wait_for(g.closed.wait(), 5)
    await g.close()
    assert server.framing_errors == 1
    [answer] = g.stray
    assert (answer.hop_by_hop, answer.end_to_end) == (77, 88)
    assert answer.result_code == c.DIAMETER_INVALID_MESSAGE_LENGTH


async def test_pipelined_requests_are_answered_as_they_complete(
    server: DiameterServer, gw: Gateway
) -> None:
    delays = [300, 10, 150, 0, 80]
    futures = [
        gw.submit(app_request(gw, ("Auth-Application-Id", 4), ("Validity-Time", d),
                              ("Origin-State-Id", i)))
        for i, d in enumerate(delays)
    ]  # fmt: skip
    order: list[int] = []
    for f in asyncio.as_completed(futures):
        order.append((await f).get_int("Origin-State-Id", default=-1))
    assert order == [3, 1, 4, 2, 0]
    assert server.requests == 5


async def test_many_pipelined_requests_with_back_pressure() -> None:
    async with DiameterServer(OCS, echo, "127.0.0.1", 0, max_inflight_per_connection=4) as s:
        g = await Gateway.connect(s.port)
        futures = [
            g.submit(app_request(g, ("Auth-Application-Id", 4), ("Validity-Time", 5),
                                 ("Origin-State-Id", i)))
            for i in range(200)
        ]  # fmt: skip
        answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert sorted(a.get_int("Origin-State-Id", default=-1) for a in answers) == list(range(200))
        await g.close()


async def test_unknown_mandatory_avp_is_answered_5001_with_failed_avp(
    server: DiameterServer, gw: Gateway
) -> None:
    unknown = raw_avp(99999, b"\x00\x00\x00\x01", vendor=10415, mandatory=True)
    answer = await gw.request(
        app_request(gw, ("Auth-Application-Id", 4), ("CC-Request-Type", 1),
                    ("CC-Request-Number", 0), unknown)
    )  # fmt: skip
    assert answer.result_code == c.DIAMETER_AVP_UNSUPPORTED
    failed = answer.find("Failed-AVP")
    assert failed is not None and [(a.code, a.vendor) for a in failed.avps] == [(99999, 10415)]
    assert server.rejected_requests == 1


async def test_unknown_avp_without_m_bit_is_passed_over(gw: Gateway) -> None:
    unknown = raw_avp(99999, b"\x00\x00\x00\x01", vendor=10415, mandatory=False)
    answer = await gw.request(app_request(gw, ("Auth-Application-Id", 4), unknown))
    assert answer.result_code == c.DIAMETER_SUCCESS


async def test_unsupported_application_and_command(gw: Gateway) -> None:
    answer = await gw.request(app_request(gw, ("Auth-Application-Id", 16777238), app=16777238))
    assert (answer.result_code, answer.is_error) == (c.DIAMETER_APPLICATION_UNSUPPORTED, True)
    answer = await gw.request(app_request(gw, app=0, command=999))
    assert (answer.result_code, answer.is_error) == (c.DIAMETER_COMMAND_UNSUPPORTED, True)


async def test_realm_check() -> None:
    async with DiameterServer(OCS, echo, "127.0.0.1", 0, realm_check=True) as s:
        g = await Gateway.connect(s.port)
        ok = await g.request(app_request(g, ("Destination-Realm", "TEST")))
        assert ok.result_code == c.DIAMETER_SUCCESS
        no = await g.request(app_request(g, ("Destination-Realm", "elsewhere")))
        assert no.result_code == c.DIAMETER_REALM_NOT_SERVED
        await g.close()


async def test_handler_failure_is_answered_5012(server: DiameterServer, gw: Gateway) -> None:
    answer = await gw.request(app_request(gw, ("Origin-State-Id", 666)))
    assert answer.result_code == c.DIAMETER_UNABLE_TO_COMPLY
    assert server.handler_errors == 1


async def test_send_request_to_a_peer(server: DiameterServer, gw: Gateway) -> None:
    rar = make_request(
        c.CMD_RE_AUTH,
        4,
        [("Session-Id", "pgw.test;1"), ("Origin-Host", "ocs.test"), ("Origin-Realm", "test"),
         ("Destination-Realm", "gw.test"), ("Destination-Host", "pgw.test"),
         ("Auth-Application-Id", 4), ("Re-Auth-Request-Type", 0)],
        hop_by_hop=0, end_to_end=0, proxiable=True,
    )  # fmt: skip
    pending = asyncio.create_task(server.send_request("pgw.test", rar))
    got = await asyncio.wait_for(gw.requests.get(), 5)
    assert got.name == "RAR"
    gw.send(gw.answer(got))
    raa = await pending
    assert (raa.name, raa.result_code) == ("RAA", c.DIAMETER_SUCCESS)
    with pytest.raises(ConnectionError):
        await server.send_request("pgw.nobody", rar)
