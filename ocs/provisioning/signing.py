"""Request signatures: HMAC-SHA256 (pycryptodome) over the timestamp and the body.

Every request the OCS sends (commands to the provisioning gateway, webhooks) and every
callback it accepts carries::

    X-OCS-Timestamp: <Unix seconds>
    X-OCS-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver recomputes the MAC over the raw body and refuses a mismatch or a timestamp more
than ``tolerance`` seconds away from its clock (a replayed old request).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from Crypto.Hash import HMAC, SHA256

from tariffs.digits import is_digits

TIMESTAMP_HEADER: Final = "X-OCS-Timestamp"
SIGNATURE_HEADER: Final = "X-OCS-Signature"
#: Seconds a signed request stays acceptable.
TOLERANCE: Final = 300


class SignatureError(ValueError):
    """A request whose signature is missing, malformed, wrong or too old."""


def _mac(secret: str, timestamp: str, body: bytes) -> HMAC.HMAC:
    mac = HMAC.new(secret.encode(), digestmod=SHA256)
    mac.update(timestamp.encode() + b"." + body)
    return mac


def sign(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body``."""
    ts = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: "v1=" + _mac(secret, ts, body).hexdigest(),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> None:
    """Check a signed request; SignatureError says what is wrong."""
    ts, sig = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not ts or not sig:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not is_digits(ts):
        raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix seconds")
    if abs((time.time() if now is None else now) - int(ts)) > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is more than {tolerance} s away")
    if not sig.startswith("v1="):
        raise SignatureError(f"{SIGNATURE_HEADER} must be v1=<hex>")
    try:
        _mac(secret, ts, body).hexverify(sig[3:])
    except ValueError:
        raise SignatureError("signature does not match") from None
