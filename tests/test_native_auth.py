"""Authentication of network elements on the native protocol: the hello handshake (sans-IO in
the codec, checked by the server), native over TLS with client certificates, and the OCS's
wiring (OCS_NATIVE_KEYS: metrics and audit of refused connections)."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import trustme
from secure import NATIVE_KEY
from test_diameter_tls import files
from test_service import FLAT, SETTINGS, add

from ocs.auth.audit import verify
from ocs.auth.credentials import derive_key
from ocs.service import run_ocs
from ocs.store.security import SecurityStore
from protocols.native import ChargingRequest, NativeClient, NativeServer, Reply
from protocols.native import constants as c
from protocols.native.codec import (
    NEED_DATA,
    Challenge,
    ClientConnection,
    Hello,
    Ping,
    ServerConnection,
    hello_mac,
)

HOST = "127.0.0.1"
SECRET = b"a shared secret of the element 1"


class Keys:
    """The OCS side of the interface, as plain data."""

    def __init__(self) -> None:
        self.keys = {"pgw-1": SECRET}
        self.refusals: list[str] = []

    def secret(self, key: str) -> bytes | None:
        return self.keys.get(key)

    def refused(self, peer: object, reason: str) -> None:
        self.refusals.append(reason)


async def echo(request: ChargingRequest) -> Reply:
    return Reply(request.id, c.RESULT_SUCCESS, detail=request.verb)


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def server(keys: Keys) -> AsyncIterator[NativeServer]:
    async with NativeServer(echo, HOST, 0, keys=keys) as srv:
        yield srv


def test_codec_round_trip_of_the_handshake() -> None:
    server, client = ServerConnection(), ClientConnection()
    nonce = bytes(range(16))
    client.receive_data(server.send(Challenge(nonce)))
    assert client.next_event() == Challenge(nonce)
    mac = hello_mac(SECRET, nonce, "pgw-1")
    server.receive_data(client.send(Hello(5, "pgw-1", mac)))
    assert server.next_event() == Hello(5, "pgw-1", mac)
    assert server.next_event() is NEED_DATA
    # A MAC of the wrong size is an invalid request, not a broken stream.
    server.receive_data(msgpack_frame({"id": 6, "verb": "hello", "key": "k", "mac": b"x"}))
    event = server.next_event()
    assert getattr(event, "detail", "") == "field 'mac' must be 32 bytes"
    # The MAC binds the nonce and the key id.
    assert hello_mac(SECRET, nonce, "pgw-2") != mac
    assert hello_mac(SECRET, bytes(16), "pgw-1") != mac


def msgpack_frame(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, object]:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    message: dict[str, object] = msgpack.unpackb(await reader.readexactly(n))
    return message


async def _challenged(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    challenge = await read_frame(reader)
    assert challenge["id"] == 0 and challenge["result"] == "hello"
    nonce = challenge["nonce"]
    assert isinstance(nonce, bytes) and len(nonce) == 16
    return reader, writer, nonce


async def _refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rid: int) -> None:
    reply = await read_frame(reader)
    assert reply["id"] == rid and reply["result"] == "unauthenticated"
    assert await reader.read() == b""  # closed
    writer.close()
    await writer.wait_closed()


async def test_a_good_hello_opens_the_connection(server: NativeServer) -> None:
    async with NativeClient(HOST, server.port, key=("pgw-1", SECRET)) as client:
        assert (await client.ping()).ok
        assert (await client.balance("4917000001")).detail == "balance"


async def test_no_handshake_is_refused_and_closed(server: NativeServer, keys: Keys) -> None:
    reader, writer, _ = await _challenged(server.port)
    writer.write(msgpack_frame({"id": 3, "verb": "balance", "subscriber": "4917000001"}))
    await _refused(reader, writer, 3)
    assert keys.refusals == ["no hello"] and server.refused == 1
    # The client library: without a key its first call fails, the connection is closed.
    async with NativeClient(HOST, server.port) as client:
        reply = await client.ping()
        assert reply.result == "unauthenticated"
    assert keys.refusals == ["no hello", "no hello"]


async def test_a_wrong_mac_or_unknown_key_is_refused(server: NativeServer, keys: Keys) -> None:
    with pytest.raises(ConnectionError, match="unauthenticated"):
        await NativeClient(HOST, server.port, key=("pgw-1", b"not the secret")).connect()
    with pytest.raises(ConnectionError, match="unauthenticated"):
        await NativeClient(HOST, server.port, key=("pgw-9", SECRET)).connect()
    assert keys.refusals == ["wrong mac", "unknown key"]


async def test_a_replayed_hello_is_refused(server: NativeServer, keys: Keys) -> None:
    reader, writer, nonce = await _challenged(server.port)
    hello = {"id": 1, "verb": "hello", "key": "pgw-1", "mac": hello_mac(SECRET, nonce, "pgw-1")}
    writer.write(msgpack_frame(hello))
    assert await read_frame(reader) == {"id": 1, "result": "success"}
    writer.close()
    await writer.wait_closed()
    # The same frame on another connection (another nonce) does not authenticate it.
    reader, writer, other = await _challenged(server.port)
    assert other != nonce
    writer.write(msgpack_frame(hello))
    await _refused(reader, writer, 1)
    assert keys.refusals == ["wrong mac"]


async def test_without_keys_there_is_no_handshake() -> None:
    async with NativeServer(echo, HOST, 0) as srv, NativeClient(HOST, srv.port) as client:
        assert (await client.ping()).ok


def _tls_files(ca: trustme.CA, tmp: Path) -> tuple[str, str, str]:
    f = files(ca, tmp, mutual=True, names=("ocs.test", "127.0.0.1"))
    return f["diameter_tls_cert"], f["diameter_tls_key"], f["diameter_tls_ca"]


@pytest.mark.parametrize("client_cert", [True, False])
async def test_native_over_tls_on_the_ocs(
    redis_url: str, tmp_path: Path, client_cert: bool
) -> None:
    """With a CA configured, a client certificate authenticates the element (no hello); a
    client without one is refused by TLS itself. Without a CA, TLS + hello."""
    ca = trustme.CA()
    cert, key, ca_file = _tls_files(ca, tmp_path)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert:
        ca.issue_cert("pgw.test").configure_cert(context)
    settings = replace(SETTINGS, redis_url=redis_url, native_tls_cert=cert, native_tls_key=key,
                       native_tls_ca=ca_file if client_cert else "")  # fmt: skip
    async with run_ocs(settings, plans=[FLAT]) as ocs:
        await add(ocs, "4917000001", 1_000_000)
        key_arg = None if client_cert else NATIVE_KEY
        async with NativeClient(HOST, ocs.native.port, ssl=context, key=key_arg) as client:
            assert (await client.balance("4917000001")).balance == 1_000_000
        if not client_cert:
            async with NativeClient(HOST, ocs.native.port, ssl=context) as client:
                assert (await client.ping()).result == "unauthenticated"


async def test_the_ocs_counts_and_audits_refused_elements(redis_url: str) -> None:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[FLAT]) as ocs:
        with pytest.raises(ConnectionError):
            await NativeClient(HOST, ocs.native.port, key=("test-ne", b"wrong" * 8)).connect()
        text = ocs.metrics.render().decode()
        assert 'ocs_auth_failures_total{interface="native",reason="wrong-mac"} 1.0' in text
        security_store = ocs.native.keys.refusals.security.store  # type: ignore[union-attr]
        deadline = asyncio.get_running_loop().time() + 5
        while not await security_store.audit_entries():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        (entry,) = await security_store.audit_entries()
        assert entry.fields["action"] == "auth.failure" and entry.fields["target"] == "native"
        assert entry.fields["detail"] == "wrong mac"
        key = derive_key(SETTINGS.secret_key, "audit")
        assert (await verify(security_store, key)).ok


def test_ping_needs_the_handshake_too() -> None:
    # Sans-IO: the codec reads a ping before hello as a Ping; the server refuses it (above).
    server = ServerConnection()
    server.receive_data(msgpack_frame({"id": 1, "verb": "ping"}))
    assert server.next_event() == Ping(1)


async def test_a_connection_that_never_says_hello_is_closed(keys: Keys) -> None:
    async with NativeServer(echo, HOST, 0, keys=keys, hello_timeout=0.1) as srv:
        reader, writer, _ = await _challenged(srv.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        await writer.wait_closed()
        assert keys.refusals == ["no hello in time"]


async def test_a_diameter_peer_not_allowed_is_counted_and_audited(redis_url: str) -> None:
    from test_diameter_e2e import GY
    from test_diameter_e2e import SETTINGS as GY_SETTINGS
    from test_diameter_server import Gateway

    from protocols.diameter import constants as dc

    settings = replace(GY_SETTINGS, redis_url=redis_url, diameter_peers="pgw.allowed")
    async with run_ocs(settings, plans=[GY]) as ocs:
        g = await Gateway.connect(ocs.diameter_port, "pgw.intruder", cer=False)
        cea = await g.request(g.cer())
        assert cea.result_code == dc.DIAMETER_UNKNOWN_PEER
        await asyncio.wait_for(g.closed.wait(), 5)
        await g.close()
        ok = await Gateway.connect(ocs.diameter_port, "pgw.allowed")
        await ok.close()
        text = ocs.metrics.render().decode()
        assert 'ocs_auth_failures_total{interface="diameter",reason="unknown-peer"} 1.0' in text
        store = SecurityStore(ocs.store.client)
        deadline = asyncio.get_running_loop().time() + 5
        while not await store.audit_entries():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        (entry,) = await store.audit_entries()
        assert (entry.fields["target"], entry.fields["detail"]) == ("diameter", "unknown peer")
