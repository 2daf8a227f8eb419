"""Declarations of what a request may carry: each field once, with the rule that checks it
and the JSON Schema that documents it, so the OpenAPI contract (:mod:`ocs.api.openapi`) and
the validation (:class:`ocs.api.request.Fields`) cannot drift apart.

A :class:`Body` names its fields in order (the order in which errors are listed); each field
is a :class:`Spec` that reads one member through :class:`~ocs.api.request.Fields` (which
collects every error in the problem's terms) and says what it accepts as a JSON Schema.
:class:`Param` does the same for a query or path parameter.

Money is a decimal string of ASCII digits with at most six decimals (:func:`ocs.money.parse_money`),
never a JSON number with a fraction: the schema says so with a pattern, as the parser does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from ocs.constants import MAX_AMOUNT, MONEY_DECIMALS
from ocs.money import format_money

if TYPE_CHECKING:
    from ocs.api.request import Fields

__all__ = [
    "MONEY",
    "Body",
    "Buckets",
    "Choice",
    "Instant",
    "Integer",
    "Money",
    "Param",
    "Plan",
    "Sign",
    "Spec",
    "Text",
    "Thresholds",
    "Timestamp",
]

Sign = Literal["positive", "non-negative", "non-zero"]
JSON = dict[str, object]

#: What parse_money accepts, as JSON Schema: an optional sign, ASCII digits, up to six
#: decimals (an integer of whole units is also taken, for callers that send 10 for "10").
MONEY: Final[JSON] = {
    "oneOf": [
        {
            "type": "string",
            "pattern": rf"^[+-]?[0-9]{{1,12}}(\.[0-9]{{1,{MONEY_DECIMALS}}})?$",
            "examples": ["12.50"],
        },
        {
            "type": "integer",
            "minimum": -(MAX_AMOUNT // 10**MONEY_DECIMALS),
            "maximum": MAX_AMOUNT // 10**MONEY_DECIMALS,
        },
    ],
    "description": "a decimal string of ASCII digits with at most "
    f"{MONEY_DECIMALS} decimals (largest {format_money(MAX_AMOUNT)}); never a float",
}
#: Money as the API writes it: always a decimal string.
MONEY_OUT: Final[JSON] = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,6}$"}
TIME_OUT: Final[JSON] = {"type": ["string", "null"], "format": "date-time"}


class Spec:
    """One member of a request body: how it is read, and its JSON Schema."""

    #: Absent is an error.
    required: bool = False
    description: str = ""

    def read(self, f: Fields, name: str) -> object:
        raise NotImplementedError

    def schema(self) -> JSON:
        raise NotImplementedError

    def _doc(self, out: JSON) -> JSON:
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Money(Spec):
    sign: Sign
    required: bool = False
    #: When absent and not required: this amount (None: the field was not given).
    default: int | None = None
    description: str = ""

    def read(self, f: Fields, name: str) -> int | None:
        if not self.required and not f.has(name):
            return self.default
        return f.money(name, self.sign)

    def schema(self) -> JSON:
        rule = {"positive": "greater than 0", "non-negative": "not negative", "non-zero": "not 0"}
        out = dict(MONEY)
        out["description"] = f"{self.description or MONEY['description']}; {rule[self.sign]}"
        return out


@dataclass(frozen=True)
class Text(Spec):
    max_len: int
    required: bool = False
    pattern: re.Pattern[str] | None = None
    pattern_detail: str = ""
    description: str = ""

    def read(self, f: Fields, name: str) -> str | None:
        text = f.text(
            name,
            required=self.required,
            max_len=self.max_len,
            pattern=self.pattern,
            pattern_detail=self.pattern_detail,
        )
        return (text or "") if self.required else text

    def schema(self) -> JSON:
        out: JSON = {"type": "string", "minLength": 1, "maxLength": self.max_len}
        if self.pattern is not None:
            out["pattern"] = f"^{self.pattern.pattern}$"
        return self._doc(out)


@dataclass(frozen=True)
class Choice(Spec):
    options: Collection[str]
    what: str
    description: str = ""

    def read(self, f: Fields, name: str) -> str | None:
        return f.choice(name, self.options, what=self.what)

    def schema(self) -> JSON:
        return self._doc({"type": "string", "enum": sorted(self.options)})


@dataclass(frozen=True)
class Integer(Spec):
    minimum: int
    maximum: int
    required: bool = False
    default: int = 0
    description: str = ""

    def read(self, f: Fields, name: str) -> int:
        default = None if self.required else self.default
        return f.integer(name, default=default, minimum=self.minimum, maximum=self.maximum)

    def schema(self) -> JSON:
        return self._doc({"type": "integer", "minimum": self.minimum, "maximum": self.maximum})


@dataclass(frozen=True)
class Timestamp(Spec):
    """A future RFC 3339 time with its offset, or null (never)."""

    description: str = ""

    def read(self, f: Fields, name: str) -> int:
        return f.timestamp(name, now=f.now)

    def schema(self) -> JSON:
        return self._doc({"type": ["string", "null"], "format": "date-time"})


@dataclass(frozen=True)
class Instant(Spec):
    """An RFC 3339 time with its offset, 1970 to 2199; absent is now."""

    description: str = ""

    def read(self, f: Fields, name: str) -> int:
        return f.instant(name, default=f.now)

    def schema(self) -> JSON:
        return self._doc({"type": "string", "format": "date-time"})


@dataclass(frozen=True)
class Plan(Spec):
    """The name of a plan the tariffs know (asked per request)."""

    max_len: int
    required: bool = False
    description: str = ""

    def read(self, f: Fields, name: str) -> str | None:
        return f.plan(name, f.plans, required=self.required)

    def schema(self) -> JSON:
        return self._doc({"type": "string", "minLength": 1, "maxLength": self.max_len})


@dataclass(frozen=True)
class Buckets(Spec):
    """A list of unit bucket objects, each a :class:`Body` of its own."""

    item: Body
    description: str = ""

    def read(self, f: Fields, name: str) -> object:
        return f.buckets(name, self.item)

    def schema(self) -> JSON:
        return self._doc({"type": "array", "items": self.item.schema()})


@dataclass(frozen=True)
class Thresholds(Spec):
    """Balance thresholds as in a plan file (tariffs.parse_thresholds); null: the plan's."""

    description: str = ""

    def read(self, f: Fields, name: str) -> object:
        raise NotImplementedError("read by ocs.api.subscribers")  # parsed by the tariffs

    def schema(self) -> JSON:
        item: JSON = {
            "type": "object",
            "properties": {
                "below": MONEY,
                "action": {"type": "string"},
                "lift": MONEY,
            },
            "required": ["below", "action"],
        }
        return self._doc({"type": ["array", "null"], "items": item})


@dataclass(frozen=True)
class Body:
    """A JSON object request body: its members in order; any other member is an error."""

    name: str
    fields: Mapping[str, Spec]
    description: str = ""
    #: Alternatives of required members (JSON Schema ``oneOf``), checked by the handler.
    one_of_required: tuple[tuple[str, ...], ...] = ()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.fields)

    def schema(self) -> JSON:
        out: JSON = {
            "type": "object",
            "properties": {n: s.schema() for n, s in self.fields.items()},
            "additionalProperties": False,
        }
        required = [n for n, s in self.fields.items() if s.required]
        if required:
            out["required"] = required
        if self.one_of_required:
            out["oneOf"] = [{"required": list(names)} for names in self.one_of_required]
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Param:
    """A query or path parameter, for the contract (its handler checks it by the same
    constants)."""

    name: str
    where: Literal["query", "path"]
    schema: JSON = field(default_factory=lambda: {"type": "string"})
    description: str = ""
