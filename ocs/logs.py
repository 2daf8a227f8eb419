"""Log set-up of the OCS processes: text or JSON lines (``OCS_LOG_FORMAT``), the ids of the
request and session being handled, MSISDNs masked above DEBUG (ocs/auth/masking.py), and one
rate-limited wording for a lost Redis.

The ids ride in context variables: the HTTP API sets the request id (its ``X-Request-Id``) and
the Diameter agent the Session-Id for the task handling one request, so every line logged
while handling it carries them, in JSON as ``request_id`` / ``session_id``.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final

from ocs.auth.masking import install_masking, mask

__all__ = ["FORMATS", "REQUEST_ID", "SESSION_ID", "JsonFormatter", "redis_lost", "setup"]

#: The values of OCS_LOG_FORMAT.
FORMATS: Final = ("text", "json")
#: The id of the HTTP request being handled ("" outside one).
REQUEST_ID: ContextVar[str] = ContextVar("ocs_request_id", default="")
#: The charging session (Diameter Session-Id) being handled ("" outside one).
SESSION_ID: ContextVar[str] = ContextVar("ocs_session_id", default="")
#: Seconds between two "Redis unavailable" warnings of one process (the others are counted
#: and said with the next).
REDIS_LOST_EVERY: Final = 10.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC, ms), level, logger, pid, message, the ids
    in context, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", REQUEST_ID), ("session_id", SESSION_ID)):
            value = var.get()
            if value:
                doc[key] = mask(value) if record.levelno > logging.DEBUG else value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str, fmt: str = "text", *, pid: bool = False) -> None:
    """Configure the root logger for an ``ocs`` command (``pid``: text lines name the process,
    as the workers of ``ocs serve --workers N`` do)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        text = "%(asctime)s %(levelname)s " + ("[%(process)d] " if pid else "") + "%(message)s"
        handler.setFormatter(logging.Formatter(text))
    logging.basicConfig(level=level, handlers=[handler])
    install_masking(level)


_last_lost = -float("inf")
_lost_since = 0


def redis_lost(logger: logging.Logger, where: str, exc: BaseException) -> None:
    """Say that Redis could not answer, in one wording everywhere, at most once every
    :data:`REDIS_LOST_EVERY` seconds per process (how many were not said comes with the next)."""
    global _last_lost, _lost_since  # noqa: PLW0603 - one budget per process, on purpose
    now = time.monotonic()
    if now - _last_lost < REDIS_LOST_EVERY:
        _lost_since += 1
        return
    more = f" ({_lost_since} more since the last warning)" if _lost_since else ""
    _last_lost, _lost_since = now, 0
    logger.warning("Redis unavailable (%s): %s%s", where, exc, more)
