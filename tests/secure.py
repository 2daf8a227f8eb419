"""The credentials the tests' OCS processes are started with (ocs.auth, docs/security.md):
a bootstrap admin token for the HTTP API and one native-protocol key."""

from __future__ import annotations

from typing import Final

ADMIN: Final = "test-admin-token"
NATIVE_KEY: Final = ("test-ne", b"native-secret-of-the-tests-0001")
#: Settings(**SECURE): the OCS under test knows these credentials.
SECURE: Final = {
    "admin_token": ADMIN,
    "secret_key": "test-secret-key-" * 4,
    "native_keys": f"{NATIVE_KEY[0]}:{NATIVE_KEY[1].decode()}",
    # The tests' gateways have many Origin-Hosts; a deployment lists its own (docs/security.md).
    "diameter_peers": "*",
}
#: Headers of an admin request.
AUTH: Final = {"Authorization": f"Bearer {ADMIN}"}
