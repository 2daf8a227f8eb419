"""The outbox's compact events read back by name (ocs/store/events.py); the scripts' side is
tests/test_script_equivalence.py (every event as the frozen scripts wrote it)."""

from __future__ import annotations

from ocs.store.events import EVENT_FIELD, LAYOUTS, RELATIVE, SEPARATOR, expand

HEAD = ["46700000001", "1800000000000", "5000000", "120000", "7"]


def packed(*values: str) -> dict[str, str]:
    return {EVENT_FIELD: SEPARATOR.join(values)}


def test_a_compact_event_reads_as_its_named_fields() -> None:
    e = expand(packed("debit", *HEAD, "sms", "db-1", "1", "0", "-20000", "0", "4671"))
    assert e == {
        "t": "debit", "sub": "46700000001", "ts": "1800000000000", "bal": "5000000",
        "rsv": "120000", "ver": "7", "svc": "sms", "rk": "db-1", "u": "1", "ub": "0",
        "amt": "-20000", "forced": "0", "dst": "4671",
    }  # fmt: skip
    assert list(e) == list(LAYOUTS["debit"])


def test_a_request_key_after_its_session_id() -> None:
    e = expand(packed("reserve" + RELATIVE, *HEAD, "s.1", "voice", "/0", "60", "0", "120000"))
    assert (e["t"], e["sid"], e["rk"]) == ("reserve", "s.1", "s.1/0")
    # (empty values stay: a release with no destination)
    e = expand(packed("release", *HEAD, "s.1", "voice", "k", "3", "0", "-1", "2", "3", "1", ""))
    assert e["dst"] == "" and e["rk"] == "k"


def test_what_it_cannot_read_is_returned_as_stored() -> None:
    named = {"t": "commit", "sub": "46700000001", "amt": "-5"}
    assert expand(named) == named and expand(named) is not named
    for odd in (
        packed("reserve", *HEAD),  # too few values
        packed("bonus", *HEAD, "x"),  # a kind this version does not know
        packed("debit" + RELATIVE, *HEAD, "sms", "db-1", "1", "0", "-2", "0", ""),  # no sid
        packed("expire" + RELATIVE, *HEAD, "s.1", "voice", "1", "2", "3"),  # no request key
        packed(""),
        {EVENT_FIELD: "reserve", "t": "reserve"},  # two fields: not compact
    ):
        assert expand(odd) == odd
