"""The native protocol codec, on bytes only (no sockets).

Frames are built and read back with the ``msgpack`` library directly, independently of the
codec's own encoder, so that a symmetric bug in encoder and decoder cannot hide.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocs.charging.types import Outcome
from protocols.native import (
    NEED_DATA,
    Balance,
    ClientConnection,
    Commit,
    Debit,
    InvalidRequest,
    LocalProtocolError,
    Ping,
    ProtocolError,
    Release,
    Reply,
    Request,
    Reserve,
    ServerConnection,
)
from protocols.native import constants as c

U32 = 2**32 - 1


def frame(obj: Any) -> bytes:
    """A frame built with msgpack directly (the independent reference)."""
    payload: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def unframe(data: bytes) -> list[Any]:
    """Every message in ``data``, read with msgpack directly."""
    out = []
    while data:
        (size,) = struct.unpack(">I", data[:4])
        assert len(data) >= 4 + size
        out.append(msgpack.unpackb(data[4 : 4 + size], raw=False))
        data = data[4 + size :]
    return out


def read_all(conn: ServerConnection | ClientConnection) -> list[Any]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def server_events(data: bytes, max_frame: int = c.DEFAULT_MAX_FRAME) -> list[Any]:
    conn = ServerConnection(max_frame)
    conn.receive_data(data)
    return read_all(conn)


def one_event(message: dict[str, Any]) -> Any:
    events = server_events(frame(message))
    assert len(events) == 1
    return events[0]


def broken(data: bytes, max_frame: int = c.DEFAULT_MAX_FRAME) -> ProtocolError:
    conn = ServerConnection(max_frame)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        read_all(conn)
    # The connection stays broken.
    with pytest.raises(ProtocolError):
        conn.next_event()
    return info.value


# --- examples --------------------------------------------------------------------------------

REQUESTS: list[Request] = [
    Reserve(1, "gw1;1;42", "255700000001", "voice", 0),
    Reserve(2, "s" * 256, "9" * 32, "v" * 64, U32, c.MAX_UNITS, "d" * 64, "l" * 64),
    Reserve(3, "s", "a", "data", 7, 0, "", "cell-17"),
    Commit(4, "gw1;1;42", 1, 60),
    Commit(5, "gw1;1;42", 2, 0, 0),
    Commit(6, "gw1;1;42", 3, c.MAX_UNITS, c.MAX_UNITS, "9" * 32),
    Release(7, "gw1;1;42", 4),
    Release(8, "gw1;1;42", 5, 13, "255700000001"),
    Debit(9, "255700000001", "sms", "cdr-2024-0001"),
    Debit(10, "255700000001", "sms", "k" * 256, c.MAX_UNITS, "255711", "TZ", True),
    Balance(11, "255700000001"),
    Ping(0),
    Ping(U32),
]


@pytest.mark.parametrize("request_event", REQUESTS, ids=repr)
def test_request_round_trip(request_event: Request) -> None:
    data = ClientConnection().send(request_event)
    assert server_events(data) == [request_event]


def test_request_bytes_read_by_msgpack() -> None:
    data = ClientConnection().send(Reserve(7, "s1", "255700000001", "voice", 3, 60, "2557"))
    assert data[:4] == struct.pack(">I", len(data) - 4)
    assert unframe(data) == [
        {
            "id": 7,
            "verb": "reserve",
            "session": "s1",
            "subscriber": "255700000001",
            "service": "voice",
            "seq": 3,
            "units": 60,
            "destination": "2557",
        }
    ]
    assert unframe(ClientConnection().send(Release(8, "s1", 4))) == [
        {"id": 8, "verb": "release", "session": "s1", "seq": 4, "used": 0}
    ]
    assert unframe(ClientConnection().send(Release(8, "s1", 4, 3, "255700000001"))) == [
        {
            "id": 8,
            "verb": "release",
            "session": "s1",
            "seq": 4,
            "used": 3,
            "subscriber": "255700000001",
        }
    ]
    assert unframe(ClientConnection().send(Ping(9))) == [{"id": 9, "verb": "ping"}]


def test_reply_round_trip_and_bytes() -> None:
    reply = Reply(
        5, "success", granted=60, final=True, charged=1500, buckets=3, balance=-20, validity=300
    )
    data = ServerConnection().send(reply)
    assert unframe(data) == [
        {
            "id": 5,
            "result": "success",
            "granted": 60,
            "final": True,
            "charged": 1500,
            "buckets": 3,
            "balance": -20,
            "validity": 300,
        }
    ]
    client = ClientConnection()
    client.receive_data(data)
    assert client.next_event() == reply
    assert client.next_event() is NEED_DATA
    assert reply.ok


def test_reply_defaults_left_off_the_wire() -> None:
    assert unframe(ServerConnection().send(Reply(1, "user-unknown"))) == [
        {"id": 1, "result": "user-unknown"}
    ]


def test_reply_read_from_msgpack_frame() -> None:
    client = ClientConnection()
    client.receive_data(
        frame(
            {
                "id": 3,
                "result": "success",
                "balance": 100,
                "reserved": 5,
                "available": 95,
                "credit_limit": 0,
                "state": "active",
                "plan": "basic",
                "extra": [1, 2, 3],
            }
        )
    )
    assert client.next_event() == Reply(
        3, "success", balance=100, reserved=5, available=95, state="active", plan="basic"
    )


def test_result_constants_match_outcomes() -> None:
    assert set(c.RESULTS) == {o.value for o in Outcome}


def test_doc_example_is_what_the_codec_produces() -> None:
    doc = Path(__file__).parent.parent / "docs" / "native-protocol.md"
    blocks = re.findall(r"```hex\n(.*?)```", doc.read_text(), re.S)
    session = "gw1;1700000000;42"
    client, server = ClientConnection(), ServerConnection()
    frames = [
        client.send(Reserve(1, session, "255700000001", "voice", 0, 60, "255711000000")),
        client.send(Debit(2, "255700000001", "sms", "sms-7f3a")),
        server.send(Reply(2, "success", charged=50000, balance=9950000)),
        server.send(Reply(1, "success", granted=60, balance=9950000, validity=300)),
        client.send(Commit(3, session, 1, 60)),
        server.send(Reply(3, "success", granted=60, charged=90000, balance=9860000, validity=300)),
    ]
    huge = ServerConnection()
    huge.receive_data(struct.pack(">I", 1 << 20))
    with pytest.raises(ProtocolError) as info:
        huge.next_event()
    frames.append(server.send(info.value.reply))
    assert [bytes.fromhex(block) for block in blocks] == frames


# --- invalid requests: answered, connection kept ---------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "reserve": {"session": "s", "subscriber": "a", "service": "voice", "seq": 0},
    "commit": {"session": "s", "seq": 1, "used": 10},
    "release": {"session": "s", "seq": 2},
    "debit": {"subscriber": "a", "service": "sms", "key": "k"},
    "balance": {"subscriber": "a"},
}


def invalid_cases() -> list[tuple[str, dict[str, Any], str]]:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("unknown verb", {"verb": "steal"}, "unknown verb"),
        ("no verb", {}, "missing field 'verb'"),
        ("verb int", {"verb": 1}, "'verb' must be a string"),
        ("verb list", {"verb": ["reserve"]}, "'verb' must be a string"),
        ("verb map", {"verb": {"a": 1}}, "'verb' must be a string"),
        ("verb bytes", {"verb": b"reserve"}, "'verb' must be a string"),
    ]
    for verb, base in BASE.items():
        for name in base:
            if verb == "release" and name == "used":
                continue
            fields = {k: v for k, v in base.items() if k != name}
            cases.append((f"{verb} without {name}", {"verb": verb, **fields}, "missing"))
            cases.append((f"{verb} {name} None", {"verb": verb, **base, name: None}, "missing"))
    wrong: list[tuple[str, str, Any, str]] = [
        ("reserve", "session", "", "1..256 characters"),
        ("reserve", "session", "s" * 257, "1..256 characters"),
        ("reserve", "session", 5, "must be a string"),
        ("reserve", "session", b"s", "must be a string"),
        ("reserve", "subscriber", "9" * 33, "1..32 characters"),
        ("reserve", "subscriber", "", "1..32 characters"),
        ("reserve", "service", "v" * 65, "1..64 characters"),
        ("reserve", "seq", -1, "must be in"),
        ("reserve", "seq", 2**32, "must be in"),
        ("reserve", "seq", 1.0, "must be an integer"),
        ("reserve", "seq", True, "must be an integer"),
        ("reserve", "seq", "1", "must be an integer"),
        ("reserve", "units", -1, "must be in"),
        ("reserve", "units", 10**15 + 1, "must be in"),
        ("reserve", "units", 2**64 - 1, "must be in"),
        ("reserve", "units", -(2**63), "must be in"),
        ("reserve", "units", 60.0, "must be an integer"),
        ("reserve", "units", False, "must be an integer"),
        ("reserve", "destination", "d" * 65, "0..64 characters"),
        ("reserve", "destination", 255, "must be a string"),
        ("reserve", "location", ["x"], "must be a string"),
        ("commit", "used", -5, "must be in"),
        ("commit", "used", 1.5, "must be an integer"),
        ("commit", "units", 10**16, "must be in"),
        ("commit", "subscriber", "9" * 33, "0..32 characters"),
        ("release", "subscriber", 255700000001, "must be a string"),
        ("release", "used", -1, "must be in"),
        ("release", "used", 0.0, "must be an integer"),
        ("debit", "units", 0, "must be in"),
        ("debit", "units", 1.0, "must be an integer"),
        ("debit", "key", "k" * 257, "1..256 characters"),
        ("debit", "key", "", "1..256 characters"),
        ("debit", "force", 1, "must be a boolean"),
        ("debit", "force", "yes", "must be a boolean"),
        ("balance", "subscriber", {"a": 1}, "must be a string"),
    ]
    for verb, name, value, detail in wrong:
        cases.append(
            (f"{verb} {name}={value!r:.20}", {"verb": verb, **BASE[verb], name: value}, detail)
        )
    return cases


@pytest.mark.parametrize(
    ("message", "detail"),
    [pytest.param(m, d, id=name) for name, m, d in invalid_cases()],
)
def test_invalid_request(message: dict[str, Any], detail: str) -> None:
    conn = ServerConnection()
    conn.receive_data(frame({"id": 42, **message}) + frame({"id": 43, "verb": "ping"}))
    event = conn.next_event()
    assert isinstance(event, InvalidRequest)
    assert event.id == 42
    assert detail in event.detail
    # The connection goes on.
    assert conn.next_event() == Ping(43)
    assert conn.next_event() is NEED_DATA


def test_unknown_fields_and_none_optionals_are_accepted() -> None:
    event = one_event(
        {
            "id": 1,
            "verb": "reserve",
            **BASE["reserve"],
            "units": None,
            "destination": None,
            "future": {"nested": [1, 2.5, None]},
            "x": 1.5,
        }
    )
    assert event == Reserve(1, "s", "a", "voice", 0)
    assert one_event({"id": 2, "verb": "debit", **BASE["debit"], "force": None}) == Debit(
        2, "a", "sms", "k"
    )
    assert one_event({"id": 3, "verb": "ping", "session": 5}) == Ping(3)


def test_unicode_lengths_are_characters() -> None:
    event = one_event({"id": 1, "verb": "balance", "subscriber": "é" * 32})
    assert event == Balance(1, "é" * 32)


def _nested(kind: type, levels: int) -> Any:
    """A map or array ``levels`` deep (one level: an empty one); in the payload's map it
    sits one level lower."""
    value: Any = kind()
    for _ in range(levels - 1):
        value = {"a": value} if kind is dict else [value]
    return value


def test_what_unknown_fields_may_hold() -> None:
    """Anything msgpack has (bin, ext, timestamps, floats, nested maps and arrays up to
    MAX_NESTING levels in all), ignored; invalid UTF-8 anywhere is a broken frame."""
    payload = msgpack.packb(
        {
            "id": 1,
            "verb": "ping",
            "blob": b"\x00\xff",
            "ext": msgpack.ExtType(5, b"xyz"),
            "when": msgpack.Timestamp(1, 2),
            "deep": _nested(dict, c.MAX_NESTING - 1),
            "list": _nested(list, c.MAX_NESTING - 1),
        },
        use_bin_type=True,
    )
    assert server_events(payload_frame(payload)) == [Ping(1)]
    # bin where a string is expected is an invalid request, not a broken frame.
    event = one_event({"id": 2, "verb": "balance", "subscriber": b"4917"})
    assert isinstance(event, InvalidRequest) and "subscriber" in event.detail


# --- broken frames: ProtocolError, connection closed -----------------------------------------


def payload_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param(payload_frame(b"\xc1"), "bad msgpack", id="reserved byte"),
        pytest.param(payload_frame(b""), "bad msgpack", id="empty payload"),
        pytest.param(payload_frame(b"\x81\xa2id"), "bad msgpack", id="truncated map"),
        pytest.param(
            payload_frame(msgpack.packb({"id": 1, "verb": "ping"}) + b"\xc0"),
            "bad msgpack",
            id="trailing data",
        ),
        pytest.param(frame([1, "ping"]), "not a map", id="array"),
        pytest.param(frame(7), "not a map", id="int"),
        pytest.param(frame("ping"), "not a map", id="str"),
        pytest.param(frame(None), "not a map", id="nil"),
        pytest.param(frame({"verb": "ping"}), "invalid id", id="no id"),
        pytest.param(frame({"id": -1, "verb": "ping"}), "invalid id", id="negative id"),
        pytest.param(frame({"id": 2**32, "verb": "ping"}), "invalid id", id="id too big"),
        pytest.param(frame({"id": 1.0, "verb": "ping"}), "invalid id", id="float id"),
        pytest.param(frame({"id": True, "verb": "ping"}), "invalid id", id="bool id"),
        pytest.param(frame({"id": "1", "verb": "ping"}), "invalid id", id="str id"),
        pytest.param(frame({1: 1, "verb": "ping"}), "bad msgpack", id="int key"),
        pytest.param(payload_frame(b"\x81\xc4\x02id\x01"), "not a string", id="bin key id"),
        # {"id": 1, "verb": "ping", b"x": 1}: a bin key among str keys.
        pytest.param(
            payload_frame(b"\x83\xa2id\x01\xa4verb\xa4ping\xc4\x01x\x01"),
            "not a string",
            id="bin key",
        ),
        # {"id": 1, "verb": "ping", "id": 2}: msgpack would keep the last id silently.
        pytest.param(
            payload_frame(b"\x83\xa2id\x01\xa4verb\xa4ping\xa2id\x02"),
            "appears twice",
            id="repeated key",
        ),
        # {"id": 1, "verb": "ping", "x": {"a": 1, "a": 2}}: in an unknown field too.
        pytest.param(
            payload_frame(b"\x83\xa2id\x01\xa4verb\xa4ping\xa1x\x82\xa1a\x01\xa1a\x02"),
            "appears twice",
            id="repeated key nested",
        ),
        pytest.param(
            payload_frame(b"\x83\xa2id\x01\xa4verb\xa4ping\xa1x\x81\xc4\x01a\x01"),
            "not a string",
            id="bin key nested",
        ),
        pytest.param(
            frame({"id": 1, "verb": "ping", "x": _nested(dict, c.MAX_NESTING)}),
            "nested deeper",
            id="maps 17 deep",
        ),
        pytest.param(
            frame({"id": 1, "verb": "ping", "x": _nested(list, c.MAX_NESTING)}),
            "nested deeper",
            id="arrays 17 deep",
        ),
        pytest.param(
            frame({"id": 1, "verb": "ping", "x": _nested(dict, 500)}),
            "nested deeper",
            id="maps 500 deep",
        ),
        pytest.param(
            payload_frame(b"\x83\xa2id\x01\xa4verb\xa4ping\xa1x" + b"\x91" * 2000 + b"\xc0"),
            "bad msgpack",
            id="arrays 2000 deep",
        ),
        pytest.param(
            payload_frame(b"\xdf\xff\xff\xff\xff"), "bad msgpack", id="map32 claims 2**32"
        ),
        pytest.param(
            payload_frame(b"\x81\xa1x\xdd\xff\xff\xff\xff"), "bad msgpack", id="array32 claims"
        ),
        pytest.param(
            payload_frame(b"\x81\xa1x\xdb\xff\xff\xff\xff"), "bad msgpack", id="str32 claims"
        ),
        pytest.param(
            payload_frame(b"\x81\xa1x\xc6\xff\xff\xff\xff"), "bad msgpack", id="bin32 claims"
        ),
        pytest.param(payload_frame(b"\x91" * 5000 + b"\xc0"), "bad msgpack", id="deep nesting"),
        pytest.param(payload_frame(b"\x81\xa1x\xa2\xff\xfe"), "bad msgpack", id="bad utf-8"),
        pytest.param(
            frame({f"k{i}": i for i in range(c.MAX_MAP_LEN + 1)} | {"id": 1}),
            "bad msgpack",
            id="too many fields",
        ),
        pytest.param(
            frame({"id": 1, "verb": "ping", "x": list(range(c.MAX_ARRAY_LEN + 1))}),
            "bad msgpack",
            id="long array",
        ),
    ],
)
def test_broken_frame(data: bytes, detail: str) -> None:
    error = broken(data)
    assert detail in error.detail
    assert error.reply == Reply(0, "invalid-request", detail=error.detail)
    assert unframe(ServerConnection().send(error.reply)) == [
        {"id": 0, "result": "invalid-request", "detail": error.detail}
    ]


def test_oversize_length_is_rejected_before_the_payload_arrives() -> None:
    conn = ServerConnection(max_frame=1024)
    conn.receive_data(struct.pack(">I", 1025))
    with pytest.raises(ProtocolError, match="over max_frame"):
        conn.next_event()
    assert ServerConnection(max_frame=1024).next_event() is NEED_DATA
    big = {"id": 1, "verb": "balance", "subscriber": "a", "pad": "x" * 2000}
    broken(frame(big), max_frame=1024)
    # Exactly max_frame is allowed.
    # "pad" grows from a 1-byte fixstr header to a 3-byte str16 header.
    pad = "x" * (1024 - len(frame({"id": 1, "verb": "ping", "pad": ""})) + 4 - 2)
    exact = frame({"id": 1, "verb": "ping", "pad": pad})
    assert len(exact) == 4 + 1024
    assert server_events(exact, max_frame=1024) == [Ping(1)]
    broken(frame({"id": 1, "verb": "ping", "pad": pad + "x"}), max_frame=1024)
    broken(struct.pack(">I", 2**32 - 1))


def test_data_after_a_broken_frame_is_ignored() -> None:
    conn = ServerConnection()
    conn.receive_data(payload_frame(b"\xc1") + frame({"id": 1, "verb": "ping"}))
    with pytest.raises(ProtocolError):
        conn.next_event()
    conn.receive_data(frame({"id": 2, "verb": "ping"}))
    with pytest.raises(ProtocolError):
        conn.next_event()
    assert conn.buffered == 0


def test_frames_fed_byte_by_byte() -> None:
    client = ClientConnection()
    data = b"".join(client.send(r) for r in REQUESTS)
    conn = ServerConnection()
    events: list[Any] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == REQUESTS
    assert conn.buffered == 0


def test_truncated_frame_needs_data_at_every_cut() -> None:
    data = ClientConnection().send(REQUESTS[1])
    for cut in range(len(data)):
        conn = ServerConnection()
        conn.receive_data(data[:cut])
        assert conn.next_event() is NEED_DATA
        conn.receive_data(data[cut:])
        assert conn.next_event() == REQUESTS[1]


def test_many_frames_in_one_chunk() -> None:
    client = ClientConnection()
    requests = [Reserve(i, f"s{i}", "a", "voice", i) for i in range(1, 1001)]
    assert server_events(b"".join(client.send(r) for r in requests)) == requests


# --- the client side -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"result": "success"},
        {"id": 1},
        {"id": 1, "result": ""},
        {"id": 1, "result": 0},
        {"id": 1, "result": "success", "granted": 1.0},
        {"id": 1, "result": "success", "balance": True},
        {"id": 1, "result": "success", "final": 1},
        {"id": 1, "result": "success", "state": 3},
    ],
)
def test_bad_reply_is_a_protocol_error(message: dict[str, Any]) -> None:
    client = ClientConnection()
    client.receive_data(frame(message))
    with pytest.raises(ProtocolError):
        client.next_event()


def test_send_refuses_what_cannot_be_carried() -> None:
    with pytest.raises(LocalProtocolError, match="over max_frame"):
        ClientConnection(max_frame=256).send(Balance(1, "a" * 300))
    with pytest.raises(LocalProtocolError):
        ClientConnection().send(Reserve(1, "s", "a", "v", 0, 2**70))
    # The packer recovers after a failure.
    assert unframe(ClientConnection().send(Ping(1))) == [{"id": 1, "verb": "ping"}]
    with pytest.raises(LocalProtocolError):
        ServerConnection().send(Ping(1))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ClientConnection().send(Reply(1, "success"))  # type: ignore[arg-type]


@pytest.mark.parametrize("max_frame", [0, 255, 2**32, 1.5])
def test_max_frame_is_checked(max_frame: Any) -> None:
    with pytest.raises(ValueError, match="max_frame"):
        ServerConnection(max_frame)


# --- properties ------------------------------------------------------------------------------

ids = st.integers(0, U32)
seqs = st.integers(0, c.MAX_SEQ)
amounts = st.integers(0, c.MAX_UNITS)


def text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(min_size=low, max_size=high)


requests_st: st.SearchStrategy[Request] = st.one_of(
    st.builds(
        Reserve,
        ids,
        text(1, 256),
        text(1, 32),
        text(1, 64),
        seqs,
        st.none() | amounts,
        text(0, 64),
        text(0, 64),
    ),
    st.builds(Commit, ids, text(1, 256), seqs, amounts, st.none() | amounts, text(0, 32)),
    st.builds(Release, ids, text(1, 256), seqs, amounts, text(0, 32)),
    st.builds(
        Debit,
        ids,
        text(1, 32),
        text(1, 64),
        text(1, 256),
        st.integers(1, c.MAX_UNITS),
        text(0, 64),
        text(0, 64),
        st.booleans(),
    ),
    st.builds(Balance, ids, text(1, 32)),
    st.builds(Ping, ids),
)

money = st.integers(-c.MAX_UNITS, c.MAX_UNITS)
replies_st = st.builds(
    Reply,
    ids,
    st.sampled_from(c.RESULTS),
    granted=amounts,
    final=st.booleans(),
    charged=money,
    buckets=amounts,
    balance=money,
    validity=st.integers(0, 2**31),
    reserved=money,
    available=money,
    credit_limit=money,
    state=text(0, 20),
    plan=text(0, 20),
    detail=text(0, 200),
)


@given(st.lists(requests_st, min_size=1, max_size=5), st.integers(1, 50))
def test_requests_round_trip(requests: list[Request], chunk: int) -> None:
    data = b"".join(ClientConnection().send(r) for r in requests)
    conn = ServerConnection()
    events: list[Any] = []
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == requests
    # msgpack reads our bytes too, and finds the same fields.
    for message, request in zip(unframe(data), requests, strict=True):
        assert message["id"] == request.id
        assert message["verb"] == request.verb
        for name in ("session", "subscriber", "service", "seq", "used", "key"):
            if name in message:
                assert message[name] == getattr(request, name)


@given(replies_st)
def test_replies_round_trip(reply: Reply) -> None:
    data = ServerConnection().send(reply)
    (message,) = unframe(data)
    expected = Reply(**message)
    assert expected == reply
    client = ClientConnection()
    client.receive_data(data)
    assert client.next_event() == reply


def drain(conn: ServerConnection | ClientConnection) -> None:
    """Read events until NEED_DATA or ProtocolError; anything else raised fails the test."""
    error = None
    try:
        read_all(conn)
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert error.reply.id == 0
        assert error.reply.result == "invalid-request"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    for conn in (ServerConnection(max_frame=256), ClientConnection(max_frame=256)):
        conn.receive_data(data)
        drain(conn)
    # With a plausible length prefix, so that the payload reaches msgpack.
    for conn in (ServerConnection(), ClientConnection()):
        conn.receive_data(payload_frame(data))
        drain(conn)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(
    [
        "id",
        "verb",
        "session",
        "subscriber",
        "service",
        "seq",
        "units",
        "used",
        "key",
        "destination",
        "location",
        "force",
        "result",
        "granted",
        "final",
        "balance",
        "state",
        "detail",
    ]
)
field_values = st.one_of(
    msgpack_values, st.sampled_from(c.VERBS), st.sampled_from(c.RESULTS), st.integers(0, 100)
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, field_values, max_size=12), ids)
def test_random_maps_give_events_or_invalid_request(message: dict[str, Any], rid: int) -> None:
    message["id"] = rid
    events = server_events(frame(message))
    assert len(events) == 1
    assert events[0].id == rid
    if isinstance(events[0], InvalidRequest):
        assert events[0].detail
    client = ClientConnection()
    client.receive_data(frame(message))
    drain(client)


@settings(max_examples=300)
@given(msgpack_values)
def test_random_msgpack_values_never_raise_anything_else(value: Any) -> None:
    for conn in (ServerConnection(), ClientConnection()):
        conn.receive_data(frame(value))
        drain(conn)
