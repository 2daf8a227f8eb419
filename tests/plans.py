"""Tariff plans the tests share: a flat per-second voice rate at home in 262 01, in UTC,
rounded to the micro-unit, so that every figure is easy to compute by hand (0.06 a minute:
1,000 micro-units a second)."""

from __future__ import annotations

from tariffs import PlanVersion, parse_plan

#: 0.06 a minute, in micro-units a second.
VOICE_PER_SECOND = 1_000

_HEAD = """\
name = "{name}"
timezone = "UTC"
rounding = {{ method = "half-even", decimals = 6 }}
[places]
home = ["26201"]
[services.voice]
unit = "seconds"
default_quota = 60
[services.voice.network]
cdr_record_types = ["moCallRecord"]
"""
_VOICE_RATE = """
[[rates]]
service = "voice"
{increments}price = "0.06"
per = 60
"""


def flat_voice(name: str, *, per_second: bool = False, services: str = "",
               rates: str = "") -> PlanVersion:  # fmt: skip
    """The flat voice plan named ``name``; ``per_second``: billed by the second from the
    first (``first_increment = increment = 1``); ``services`` and ``rates``: TOML added after
    the voice service and after its rate."""
    increments = "first_increment = 1\nincrement = 1\n" if per_second else ""
    text = (_HEAD.format(name=name) + services + _VOICE_RATE.format(increments=increments)
            + rates)  # fmt: skip
    return parse_plan(text)
