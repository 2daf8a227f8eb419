"""Server-initiated Diameter: RAR when a top-up, a lifted bar or new tariffs change what an
open session may use, ASR when the account is barred from all service or suspended; RAA 5002
(the gateway no longer has the session) releases what the session holds.

A gateway (tests/test_diameter_server.py's ``Gateway``) with open Gy sessions against a whole
OCS (run_ocs) and a private Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import test_diameter_e2e
from diameter.message import Message as TheirMessage
from diameter.message.commands.abort_session import AbortSessionRequest
from diameter.message.commands.re_auth import ReAuthRequest
from test_diameter_e2e import INIT, add, balance, ccr, mscc
from test_diameter_server import Gateway

from ocs.service import Running
from protocols.diameter import Message
from protocols.diameter import constants as c

E = 1_000_000


# The end-to-end tests' fixtures: a whole OCS on the Gy plan, a gateway connected to it.
ocs, gw = test_diameter_e2e.ocs, test_diameter_e2e.gw


async def open_session(gw: Gateway, sid: str, msisdn: str = "4917000001") -> None:
    a = await gw.request(ccr(gw, sid, INIT, 0, mscc(10, rsu=[]), subscriber=msisdn))
    assert a.result_code == c.DIAMETER_SUCCESS


async def server_request(gw: Gateway) -> Message:
    async with asyncio.timeout(10):
        while True:
            m = await gw.requests.get()
            if m.name != "DWR":
                return m


def check_request(m: Message, name: str, sid: str) -> None:
    assert (m.name, m.session_id) == (name, sid)
    assert m.get_str("Destination-Host") == "pgw.test"
    assert m.get_str("Destination-Realm") == "gw.test"
    assert m.get_str("Origin-Host") == "ocs.test"
    assert m.get_int("Auth-Application-Id") == 4
    # The independent implementation reads the same request from our bytes.
    theirs: Any = TheirMessage.from_bytes(m.to_bytes())
    expected = ReAuthRequest if name == "RAR" else AbortSessionRequest
    assert isinstance(theirs, expected)
    assert (theirs.session_id, theirs.destination_host, theirs.auth_application_id) == (
        sid, b"pgw.test", 4
    )  # fmt: skip
    if name == "RAR":
        assert theirs.re_auth_request_type == 0


async def test_topup_sends_rar_to_open_sessions(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1 * E)
    await open_session(gw, "pgw.test;rar;1")
    await open_session(gw, "pgw.test;rar;2")
    await ocs.store.credit("4917000001", kind="topup", amount=5 * E, reference="v1", now=0)
    got = {(m := await server_request(gw)).session_id: m for _ in range(2)}
    assert set(got) == {"pgw.test;rar;1", "pgw.test;rar;2"}
    for sid, m in got.items():
        check_request(m, "RAR", sid)
        assert m.get_int("Re-Auth-Request-Type") == 0  # AUTHORIZE_ONLY
        gw.send(gw.answer(m))
    # A top-up of an account without open sessions asks nothing.
    await add(ocs, "4917000002", 1 * E)
    await ocs.store.credit("4917000002", kind="topup", amount=E, reference="v2", now=0)
    await ocs.store.credit("4917000001", kind="adjust", amount=-E, reference="a1", now=0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await server_request(gw)


async def test_suspension_sends_asr_and_lifting_sends_rar(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1 * E)
    await open_session(gw, "pgw.test;asr;1")
    await ocs.store.update_subscriber("4917000001", state="suspended", now=0)
    m = await server_request(gw)
    check_request(m, "ASR", "pgw.test;asr;1")
    gw.send(gw.answer(m))
    await ocs.store.update_subscriber("4917000001", state="active", now=0)
    m = await server_request(gw)
    check_request(m, "RAR", "pgw.test;asr;1")
    gw.send(gw.answer(m))


async def test_balance_bars_by_threshold(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1 * E)
    ladder = [(-1 * E, 0, "bar-outgoing"), (-3 * E, 0, "bar-all")]
    await ocs.store.update_subscriber("4917000001", thresholds=ladder, now=0)
    await open_session(gw, "pgw.test;bar;1")
    await ocs.store.credit("4917000001", kind="adjust", amount=-2_500_000, reference="a", now=0)
    m = await server_request(gw)  # barred outgoing: re-authorise (the next CCR-U is refused)
    check_request(m, "RAR", "pgw.test;bar;1")
    gw.send(gw.answer(m))
    await ocs.store.credit("4917000001", kind="adjust", amount=-2 * E, reference="b", now=0)
    m = await server_request(gw)  # barred all: abort
    check_request(m, "ASR", "pgw.test;bar;1")
    gw.send(gw.answer(m))


async def test_new_tariffs_send_rar(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1 * E)
    await open_session(gw, "pgw.test;tariff;1")
    await ocs.tariffs.load(NEW_GY_VERSION, "test:gy@2")  # data now costs twice as much
    m = await server_request(gw)
    check_request(m, "RAR", "pgw.test;tariff;1")
    gw.send(gw.answer(m))


async def test_raa_unknown_session_releases_it(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1 * E)
    await open_session(gw, "pgw.test;gone;1")
    assert (await balance(ocs))[2] == 1
    await ocs.store.credit("4917000001", kind="topup", amount=E, reference="v1", now=0)
    m = await server_request(gw)
    gw.send(gw.answer(m, result_code=c.DIAMETER_UNKNOWN_SESSION_ID))

    async def released() -> None:
        while (await balance(ocs))[2] != 0:  # noqa: ASYNC110 (the store is polled)
            await asyncio.sleep(0.01)

    async with asyncio.timeout(10):
        await released()
    assert await balance(ocs) == (2 * E, 0, 0)


NEW_GY_VERSION = """
name = "gy"
version = 2
timezone = "UTC"
[services.data]
unit = "octets"
default_quota = 1000000
[services.data.network]
rating_groups = [10]
service_contexts = ["32251@3gpp.org"]
[[rates]]
service = "data"
price = "0.02"
per = 1000000
"""
