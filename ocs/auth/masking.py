"""Subscriber numbers out of the logs: MSISDNs and IMSIs are masked in every line logged at
INFO and above (data protection; docs/security.md). At DEBUG level (OCS_LOG_LEVEL=DEBUG,
for an engineer at work) they are left whole.

What is masked: a run of 10 to 15 digits (E.164 numbers without their '+', IMSIs) not part of
a longer number, except a Redis stream id ("1714564800000-0"); its first 4 and last 2 digits
stay, so that lines about one subscriber can still be matched by eye: 4917*******33.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["MaskingFilter", "install_masking", "mask"]

_NUMBER: Final = re.compile(r"(?<![\d.])(\+?)(\d{4})(\d{4,9})(\d{2})(?![\d-])")


def mask(text: str) -> str:
    return _NUMBER.sub(lambda m: f"{m[1]}{m[2]}{'*' * len(m[3])}{m[4]}", text)


class MaskingFilter(logging.Filter):
    """Rewrites each record's message with its numbers masked (records below ``level`` pass
    unchanged)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            message = record.getMessage()
            masked = mask(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


def install_masking(level: str | int) -> None:
    """Mask on every handler of the root logger, unless logging at DEBUG."""
    if logging.getLevelName(level) == logging.DEBUG or level == logging.DEBUG:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
