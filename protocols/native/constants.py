"""Verbs, result codes, field limits and default sizes of the native charging protocol.

The result strings are the values of ``ocs.charging.types.Outcome``; they are repeated here
because ``protocols`` must not import ``ocs`` (it is the lower layer). A test keeps the two
lists equal.
"""

from __future__ import annotations

from typing import Final

#: Every frame starts with this many bytes of big-endian unsigned length.
LENGTH_PREFIX_SIZE: Final = 4
#: Default largest payload (bytes after the length prefix) accepted in one frame.
DEFAULT_MAX_FRAME: Final = 64 * 1024
#: Smallest max_frame a codec accepts: a frame must at least hold an error reply.
MIN_MAX_FRAME: Final = 256

#: Request ids are unsigned 32-bit integers. Id 0 is what the server uses for an error reply
#: to a frame it could not read, so clients allocate ids from 1.
MAX_ID: Final = 2**32 - 1
#: Session request numbers (like Diameter CC-Request-Number, RFC 4006 8.2) are unsigned 32-bit.
MAX_SEQ: Final = 2**32 - 1
#: Largest unit count or amount (same as ``ocs.constants.MAX_UNITS``): exact in a Lua double.
MAX_UNITS: Final = 10**15

#: String field lengths, in characters.
MAX_SESSION_LEN: Final = 256
MAX_SUBSCRIBER_LEN: Final = 32
MAX_SERVICE_LEN: Final = 64
MAX_KEY_LEN: Final = 256
MAX_DESTINATION_LEN: Final = 64
MAX_LOCATION_LEN: Final = 64
#: An error reply's detail is cut to this many characters (it may quote hostile input).
MAX_DETAIL_LEN: Final = 200

#: msgpack guards: a request is one flat map of a dozen fields; unknown extra fields are
#: ignored but must not be allowed to allocate much.
MAX_MAP_LEN: Final = 64
MAX_ARRAY_LEN: Final = 256
#: Deepest nesting of maps and arrays in a payload (the payload's own map is level 1).
MAX_NESTING: Final = 16

#: Verbs.
VERB_RESERVE: Final = "reserve"
VERB_COMMIT: Final = "commit"
VERB_RELEASE: Final = "release"
VERB_DEBIT: Final = "debit"
VERB_BALANCE: Final = "balance"
VERB_PING: Final = "ping"
VERBS: Final = (VERB_RESERVE, VERB_COMMIT, VERB_RELEASE, VERB_DEBIT, VERB_BALANCE, VERB_PING)
#: The handshake (docs/native-protocol.md, "Authentication"): the server's first frame is a
#: challenge ``{"id": 0, "result": "hello", "nonce": <16 bytes>}``; the client's first request
#: is ``{"id": N, "verb": "hello", "key": <key id>, "mac": HMAC-SHA256(secret, HELLO_CONTEXT +
#: nonce + key id)}``, answered ``success`` or ``unauthenticated`` (then the server closes).
VERB_HELLO: Final = "hello"
RESULT_HELLO: Final = "hello"
RESULT_UNAUTHENTICATED: Final = "unauthenticated"
HELLO_CONTEXT: Final = b"ocs-native-hello\x00"
NONCE_SIZE: Final = 16
MAC_SIZE: Final = 32
MAX_KEY_ID_LEN: Final = 64
#: Seconds a challenged connection has to send its hello.
DEFAULT_HELLO_TIMEOUT: Final = 10.0

#: Result codes (the values of ``ocs.charging.types.Outcome``).
RESULT_SUCCESS: Final = "success"
RESULT_CREDIT_LIMIT_REACHED: Final = "credit-limit-reached"
RESULT_USER_UNKNOWN: Final = "user-unknown"
RESULT_SERVICE_DENIED: Final = "service-denied"
RESULT_RATING_FAILED: Final = "rating-failed"
RESULT_UNKNOWN_SESSION: Final = "unknown-session"
RESULT_INVALID_REQUEST: Final = "invalid-request"
RESULT_STORE_UNAVAILABLE: Final = "store-unavailable"
RESULTS: Final = (
    RESULT_SUCCESS,
    RESULT_CREDIT_LIMIT_REACHED,
    RESULT_USER_UNKNOWN,
    RESULT_SERVICE_DENIED,
    RESULT_RATING_FAILED,
    RESULT_UNKNOWN_SESSION,
    RESULT_INVALID_REQUEST,
    RESULT_STORE_UNAVAILABLE,
)

#: Server defaults.
DEFAULT_MAX_INFLIGHT_PER_CONNECTION: Final = 256
#: Seconds a graceful close waits for in-flight requests before cancelling them.
DEFAULT_DRAIN_TIMEOUT: Final = 10.0
#: Seconds a started frame may wait for the rest of it, and seconds a connection with nothing
#: in flight may stay silent, before the server closes it (a client keeps an idle connection
#: with ``ping``).
DEFAULT_FRAME_TIMEOUT: Final = 10.0
DEFAULT_IDLE_TIMEOUT: Final = 900.0
#: Client default per-call timeout (seconds).
DEFAULT_CALL_TIMEOUT: Final = 5.0
