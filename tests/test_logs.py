"""OCS_LOG_FORMAT=json: one JSON object a line with the request/session ids in context and
MSISDNs masked above DEBUG; a lost Redis said in one wording, at most once per interval."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ocs import logs
from ocs.auth.masking import MaskingFilter
from ocs.config import ConfigError, load_settings


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("ocs.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_ids_and_mask_msisdns(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    rid = logs.REQUEST_ID.set("4f0c2a")
    sid = logs.SESSION_ID.set("pgw.example;4915112345678;1")
    try:
        logger.info("top-up for %s", "4915112345678")
        logger.debug("debug keeps %s", "4915112345678")
    finally:
        logs.REQUEST_ID.reset(rid)
        logs.SESSION_ID.reset(sid)
    logger.warning("outside a request")
    info, debug, outside = lines(out)
    assert info["level"] == "INFO" and info["logger"] == "ocs.test-logs"
    assert info["request_id"] == "4f0c2a"
    assert "4915112345678" not in json.dumps(info)
    assert "4915112345678" in str(debug["message"]) and "4915112345678" in str(debug["session_id"])
    assert "request_id" not in outside and "session_id" not in outside
    assert str(info["ts"]).endswith("+00:00")


def test_a_lost_redis_is_said_once_per_interval(
    captured: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, out = captured
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(logs, "_last_lost", -float("inf"))
    monkeypatch.setattr(logs, "_lost_since", 0)
    for _ in range(5):
        logs.redis_lost(logger, "expiry-sweeper", ConnectionError("connection refused"))
    now[0] += logs.REDIS_LOST_EVERY
    logs.redis_lost(logger, "GET /v1/subscribers/{msisdn}", ConnectionError("refused"))
    said = [str(d["message"]) for d in lines(out)]
    assert said == [
        "Redis unavailable (expiry-sweeper): connection refused",
        "Redis unavailable (GET /v1/subscribers/{msisdn}): refused (4 more since the last warning)",
    ]


def test_the_setting_takes_text_or_json() -> None:
    assert load_settings({"OCS_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="text or json"):
        load_settings({"OCS_LOG_FORMAT": "yaml"})
