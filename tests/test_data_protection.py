"""Data protection: the admin API over HTTPS (OCS_HTTP_TLS_*; trustme's CA), secrets read
from files and kept out of reprs, subscriber numbers masked in the logs at INFO."""

from __future__ import annotations

import logging
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import trustme
from secure import AUTH
from test_service import FLAT, SETTINGS

from ocs.auth.masking import MaskingFilter, install_masking, mask
from ocs.config import ConfigError, load_settings
from ocs.service import auth_config, run_ocs
from tests.contract import contract_trace


async def test_the_admin_api_over_https(redis_url: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "api.pem", tmp_path / "api.key"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    settings = replace(SETTINGS, redis_url=redis_url, http_tls_cert=str(chain),
                       http_tls_key=str(key))  # fmt: skip
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with (
        run_ocs(settings, plans=[FLAT]) as ocs,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), trace_configs=[contract_trace()]
        ) as http,
    ):
        url = f"https://127.0.0.1:{ocs.http_port}"
        async with http.get(f"{url}/v1/subscribers", headers=AUTH) as resp:
            assert resp.status == 200
        async with http.get(f"{url}/v1/subscribers") as resp:
            assert resp.status == 401
        # Plain HTTP is not served on the TLS port.
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{ocs.http_port}/healthz") as resp:
                await resp.read()


def test_secrets_from_files_and_out_of_reprs(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file-token\n")
    (tmp_path / "keys").write_text("ne1:0123456789abcdef0123\n")
    env = {"OCS_ADMIN_TOKEN_FILE": str(tmp_path / "token"),
           "OCS_NATIVE_KEYS_FILE": str(tmp_path / "keys"), "OCS_SECRET_KEY": "s" * 40}  # fmt: skip
    s = load_settings(env)
    assert s.admin_token == "from-a-file-token"
    assert s.native_key_map == {"ne1": b"0123456789abcdef0123"}
    for secret in ("from-a-file-token", "0123456789abcdef0123", "s" * 40):
        assert secret not in repr(s)
    # The variable itself wins over its _FILE.
    assert load_settings({**env, "OCS_ADMIN_TOKEN": "direct"}).admin_token == "direct"
    with pytest.raises(ConfigError, match="OCS_ADMIN_TOKEN_FILE: cannot read"):
        load_settings({"OCS_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="OCS_NATIVE_KEYS: must be id:secret"):
        load_settings({"OCS_NATIVE_KEYS": "ne1:short"})
    with pytest.raises(ConfigError, match="OCS_NATIVE_AUTH: must be required or off"):
        load_settings({"OCS_NATIVE_AUTH": "maybe"})
    with pytest.raises(ConfigError, match="OCS_POLICY_FILE"):
        auth_config(replace(s, policy_file=str(tmp_path / "missing.toml")))


def test_numbers_are_masked() -> None:
    assert mask("debit 491701112233 failed") == "debit 4917******33 failed"
    assert mask("imsi 262011234567890") == "imsi 2620*********90"
    assert mask("+4917012345678") == "+4917*******78"
    # Not subscriber numbers: stream ids, short numbers, decimals.
    for text in ("id 1714564800000-0", "port 8080", "12.3456789012", "n=123456789"):
        assert mask(text) == text


def test_logs_mask_at_info_not_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("ocs.test.masking")
    caplog.handler.addFilter(MaskingFilter())
    try:
        with caplog.at_level(logging.DEBUG, logger="ocs.test.masking"):
            log.info("top-up of %s: %s", "491701112233", "ok")
            log.debug("debit of %s", "491701112233")
    finally:
        caplog.handler.filters.clear()
    assert caplog.messages == ["top-up of 4917******33: ok", "debit of 491701112233"]
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        install_masking("DEBUG")
        assert handler.filters == []
        install_masking("INFO")
        install_masking("INFO")
        assert len(handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_exposure_is_warned_of_off_loopback() -> None:
    from ocs.config import Settings
    from ocs.service import exposure_warnings

    assert exposure_warnings(Settings()) == []  # 127.0.0.1
    warnings = exposure_warnings(Settings(bind="0.0.0.0", native_auth="off", diameter_peers="pgw1"))
    assert len(warnings) == 3 and "plain HTTP" in warnings[0]
    assert "Origin-Host they claim" in warnings[2]
    # No Diameter peer configured: none is admitted, so nothing is exposed there.
    assert len(exposure_warnings(Settings(bind="0.0.0.0", native_auth="off"))) == 2
    assert "any peer" in exposure_warnings(Settings(bind="0.0.0.0", diameter_peers="*"))[-1]
    bound = Settings(bind="0.0.0.0", diameter_peers="pgw1@10.0.0.0/8", http_tls_cert="c",
                     http_tls_key="k")  # fmt: skip
    assert exposure_warnings(bound) == []
    secured = Settings(bind="0.0.0.0", http_tls_cert="c", http_tls_key="k", diameter_tls_ca="ca")
    assert exposure_warnings(secured) == []
