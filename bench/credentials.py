"""Credentials of the OCS processes the benchmarks and load tests start (docs/security.md):
generated once per run and inherited by every process of the run through the environment
(``BENCH_*``), so that the OCS, the load generators and Locust's workers agree."""

from __future__ import annotations

import os
import secrets


def _shared(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        value = os.environ[name] = secrets.token_hex(16)
    return value


#: The bootstrap admin token of the benchmark's OCS.
ADMIN_TOKEN = _shared("BENCH_ADMIN_TOKEN")
#: The native-protocol key the load generators authenticate with (key id, secret).
NATIVE_KEY = ("bench", _shared("BENCH_NATIVE_SECRET").encode())


def ocs_env() -> dict[str, str]:
    """The OCS_* settings that make an `ocs serve` accept these credentials."""
    return {
        "OCS_ADMIN_TOKEN": ADMIN_TOKEN,
        "OCS_NATIVE_KEYS": f"{NATIVE_KEY[0]}:{NATIVE_KEY[1].decode()}",
        "OCS_SECRET_KEY": _shared("BENCH_SECRET_KEY"),
        # The load generators' gateways, on loopback (a deployment lists its peers).
        "OCS_DIAMETER_PEERS": "*",
    }


def native_key_from_env() -> tuple[str, bytes] | None:
    """OCS_NATIVE_KEY ("id:secret") for a load generator started on its own (Locust against
    a running OCS), else the run's key."""
    text = os.environ.get("OCS_NATIVE_KEY")
    if text:
        key_id, _, secret = text.partition(":")
        return key_id, secret.encode()
    return NATIVE_KEY
