"""Which Diameter peers the OCS admits (ocs.auth.diameter, docs/security.md): none until
configured, listed Origin-Hosts (optionally bound to addresses), certified peers under TLS
with client certificates, or anyone only when ``*`` says so; a refused CER gets 3010."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace

import pytest
from test_diameter_e2e import GY
from test_diameter_e2e import SETTINGS as GY_SETTINGS
from test_diameter_server import Gateway

from ocs.auth.diameter import NOT_CONFIGURED, DiameterAdmission, PeerListError, parse_peers
from ocs.config import ConfigError, Settings, load_settings
from ocs.service import run_ocs
from protocols.diameter import constants as dc
from protocols.diameter.peer import RemotePeer


def peer(host: str) -> RemotePeer:
    return RemotePeer(host, "gw.test", (), 10415, "gw", frozenset({4}), frozenset())


LOCAL = ("127.0.0.1", 40000)


def test_nothing_configured_admits_no_one() -> None:
    rule = parse_peers("")
    assert rule.closed and not rule.open_to_anyone
    assert rule.admit(peer("pgw1"), LOCAL) == NOT_CONFIGURED
    assert Settings().diameter_admission.closed


def test_listed_hosts_and_their_addresses() -> None:
    rule = parse_peers(" pgw1 , pgw2@10.0.0.0/24, pgw2@192.0.2.7, pgw3@2001:db8::/32")
    assert rule.hosts["pgw1"] == ()
    assert rule.hosts["pgw2"] == (ipaddress.ip_network("10.0.0.0/24"),
                                  ipaddress.ip_network("192.0.2.7/32"))  # fmt: skip
    assert rule.admit(peer("pgw1"), LOCAL) is None  # any address
    assert rule.admit(peer("pgw2"), ("10.0.0.99", 1)) is None
    assert rule.admit(peer("pgw2"), ("192.0.2.7", 1)) is None
    # An IPv4 peer on a dual-stack socket.
    assert rule.admit(peer("pgw2"), ("::ffff:10.0.0.5", 1, 0, 0)) is None
    assert rule.admit(peer("pgw3"), ("2001:db8::1", 1, 0, 0)) is None
    assert "not allowed from 10.0.1.1" in (rule.admit(peer("pgw2"), ("10.0.1.1", 1)) or "")
    assert "not allowed from" in (rule.admit(peer("pgw3"), ("10.0.0.1", 1)) or "")
    assert "not allowed from" in (rule.admit(peer("pgw2"), None) or "")
    assert rule.admit(peer("pgw9"), LOCAL) == "peer 'pgw9' is not allowed"
    # Listed once without an address: from anywhere, whatever else is listed for it.
    assert parse_peers("pgw1@10.0.0.1, pgw1").hosts["pgw1"] == ()


def test_star_and_certificates() -> None:
    anyone = parse_peers("*")
    assert anyone.open_to_anyone and anyone.admit(peer("x"), LOCAL) is None
    assert not parse_peers("*", certified=True).open_to_anyone
    certified = parse_peers("", certified=True)
    assert not certified.closed and certified.admit(peer("x"), LOCAL) is None
    # Certificates and a list: the list still decides.
    both = parse_peers("pgw1", certified=True)
    assert both.admit(peer("pgw1"), LOCAL) is None and both.admit(peer("x"), LOCAL) is not None
    assert DiameterAdmission().closed


@pytest.mark.parametrize("text", ["pgw1@", "pgw1@10.0.0.300", "@10.0.0.1", "a b", "*, pgw1",
                                  "pgw1@not-an-address"])  # fmt: skip
def test_bad_peer_lists_are_refused_at_start(text: str) -> None:
    with pytest.raises(PeerListError):
        parse_peers(text)
    with pytest.raises(ConfigError, match="OCS_DIAMETER_PEERS"):
        load_settings({"OCS_DIAMETER_PEERS": text})


async def cea_of(port: int, host: str) -> tuple[int, str]:
    g = await Gateway.connect(port, host, cer=False)
    try:
        cea = await g.request(g.cer())
        if cea.result_code != dc.DIAMETER_SUCCESS:
            await asyncio.wait_for(g.closed.wait(), 5)
        return cea.result_code, cea.get_str("Error-Message", default="")
    finally:
        await g.close()


async def test_a_fresh_ocs_admits_no_diameter_peer(redis_url: str) -> None:
    settings = replace(GY_SETTINGS, redis_url=redis_url, diameter_peers="")
    async with run_ocs(settings, plans=[GY]) as ocs:
        code, message = await cea_of(ocs.diameter_port, "pgw.test")
        assert code == dc.DIAMETER_UNKNOWN_PEER and message == NOT_CONFIGURED


async def test_peers_bound_to_addresses_through_the_ocs(redis_url: str) -> None:
    settings = replace(
        GY_SETTINGS, redis_url=redis_url,
        diameter_peers="pgw.local@127.0.0.0/8, pgw.remote@198.51.100.0/24",
    )  # fmt: skip
    async with run_ocs(settings, plans=[GY]) as ocs:
        assert await cea_of(ocs.diameter_port, "pgw.local") == (dc.DIAMETER_SUCCESS, "")
        code, message = await cea_of(ocs.diameter_port, "pgw.remote")
        assert code == dc.DIAMETER_UNKNOWN_PEER and "not allowed from 127.0.0.1" in message
        code, _ = await cea_of(ocs.diameter_port, "pgw.unknown")
        assert code == dc.DIAMETER_UNKNOWN_PEER
