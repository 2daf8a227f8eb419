"""Diameter over TLS (RFC 6733 §13): the listener with a certificate, and with client
certificates required. Certificates come from trustme (a test CA)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from test_diameter_e2e import GY, INIT, SETTINGS, add, ccr, mscc
from test_diameter_server import Gateway

from ocs.config import ConfigError
from ocs.service import diameter_tls, run_ocs
from protocols.diameter import constants as c


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def files(ca: trustme.CA, tmp: Path, *, mutual: bool,
          names: tuple[str, ...] = ("ocs.test",)) -> dict[str, str]:  # fmt: skip
    cert = ca.issue_cert(*names)
    chain, key, ca_file = tmp / "ocs.pem", tmp / "ocs.key", tmp / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    with open(chain, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    out = {"diameter_tls_cert": str(chain), "diameter_tls_key": str(key)}
    if mutual:
        out["diameter_tls_ca"] = str(ca_file)
    return out


async def tls_gateway(port: int, ca: trustme.CA, *, client_cert: bool) -> Gateway:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert:
        ca.issue_cert("pgw.test").configure_cert(context)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="ocs.test"
    )
    gw = Gateway(reader, writer, "pgw.test")
    cea = await gw.request(gw.cer())
    assert cea.result_code == c.DIAMETER_SUCCESS
    return gw


@pytest.mark.parametrize("mutual", [False, True])
async def test_credit_control_over_tls(
    redis_url: str, ca: trustme.CA, tmp_path: Path, mutual: bool
) -> None:
    settings = replace(SETTINGS, redis_url=redis_url, **files(ca, tmp_path, mutual=mutual))
    async with run_ocs(settings, plans=[GY]) as ocs:
        await add(ocs, "4917000001", 1_000_000)
        gw = await tls_gateway(ocs.diameter_port, ca, client_cert=mutual)
        try:
            a = await gw.request(ccr(gw, "pgw.test;tls;1", INIT, 0, mscc(10, rsu=[])))
            assert a.result_code == c.DIAMETER_SUCCESS
        finally:
            await gw.close()
        if mutual:
            # Without a certificate the CA signed, no Diameter at all.
            context = ssl.create_default_context()
            ca.configure_trust(context)
            await refused(ocs.diameter_port, context)
        # Plain TCP to a TLS listener: the handshake fails and the connection closes.
        await refused(ocs.diameter_port, None)


async def refused(port: int, context: ssl.SSLContext | None) -> None:
    """The connection (or its TLS handshake) fails, or the CER is never answered."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="ocs.test" if context else None
        )
    except (ssl.SSLError, ConnectionError):
        return
    gw = Gateway(reader, writer, "pgw.refused")
    gw.send(gw.cer())
    async with asyncio.timeout(10):
        await gw.closed.wait()
    await gw.close()


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        diameter_tls(replace(SETTINGS, diameter_tls_cert="x.pem"))
    with pytest.raises(ConfigError, match="OCS_DIAMETER_TLS"):
        diameter_tls(replace(SETTINGS, diameter_tls_cert=str(tmp_path / "missing.pem"),
                             diameter_tls_key=str(tmp_path / "missing.key")))  # fmt: skip
