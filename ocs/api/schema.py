"""Declarations of what a request may carry: each field once, with the rule that checks it
and the JSON Schema that documents it, so the OpenAPI contract (:mod:`ocs.api.openapi`) and
the validation (:class:`ocs.api.request.Fields`) cannot drift apart.

A :class:`Body` names its fields in order (the order in which errors are listed); each field
is a :class:`Spec` that reads one member through :class:`~ocs.api.request.Fields` (which
collects every error in the problem's terms) and says what it accepts as a JSON Schema.
:class:`Param` declares a query parameter by its JSON Schema, and that schema is its rule:
:meth:`Param.read` checks a value against it (:func:`ocs.api.request.query` reads every
declared parameter of the route a request matched, and refuses any other).

The answers are declared too (``Route.answer``): the helpers at the end (:func:`obj`,
:func:`array`, :data:`MONEY_OUT`, ...) build their schemas, and the tests check every JSON
answer against the schema of its route (tests/contract.py).

Money is a decimal string of ASCII digits with at most six decimals (:func:`ocs.money.parse_money`),
never a JSON number with a fraction: the schema says so with a pattern, as the parser does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from ocs.constants import MAX_AMOUNT, MONEY_DECIMALS
from ocs.money import format_money

if TYPE_CHECKING:
    from ocs.api.request import Fields

__all__ = [
    "BOOL",
    "INT",
    "MONEY",
    "MONEY_OUT",
    "STRING",
    "TIME_OUT",
    "Body",
    "Buckets",
    "Choice",
    "Day",
    "Instant",
    "Integer",
    "Items",
    "Money",
    "Nested",
    "Param",
    "Percent",
    "Plan",
    "Sign",
    "Spec",
    "Text",
    "Thresholds",
    "Timestamp",
    "array",
    "nullable",
    "obj",
    "parse_day",
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
    required: bool = False

    def read(self, f: Fields, name: str) -> str | None:
        return f.choice(name, self.options, what=self.what, required=self.required)

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


#: A percentage as a decimal string ("19", "99.95"): ASCII digits, at most six decimals.
_PERCENT_RE: Final = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


@dataclass(frozen=True)
class Percent(Spec):
    """A percentage as a decimal string from 0 to ``maximum`` (never a number: exact)."""

    required: bool = False
    maximum: int = 100
    description: str = ""
    #: null is a value of its own (an unbounded step).
    nullable: bool = False

    def read(self, f: Fields, name: str) -> str | None:
        if self.nullable and f.has(name) and f.data[name] is None:
            return None
        v = f.value_of(name, required=self.required)
        if v is None:
            return None
        detail = f'must be a decimal percentage string from 0 to {self.maximum}, such as "1.5"'
        if not isinstance(v, str) or not _PERCENT_RE.fullmatch(v):
            f.error(name, detail)
            return None
        whole, _, frac = v.partition(".")
        if int(whole) > self.maximum or (int(whole) == self.maximum and frac.strip("0")):
            f.error(name, detail)
            return None
        return v

    def schema(self) -> JSON:
        out: JSON = {"type": "string", "pattern": f"^{_PERCENT_RE.pattern}$", "examples": ["19"]}
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        return self._doc(out)


def parse_day(value: object) -> str:
    """``YYYY-MM-DD`` exactly (a real date), or ValueError."""
    if not isinstance(value, str) or len(value) != 10:
        raise ValueError(f"not a date YYYY-MM-DD: {value!r}")
    return date.fromisoformat(value).isoformat()


@dataclass(frozen=True)
class Day(Spec):
    """A calendar date, ``YYYY-MM-DD``."""

    required: bool = False
    description: str = ""

    def read(self, f: Fields, name: str) -> str | None:
        v = f.value_of(name, required=self.required)
        if v is None:
            return None
        try:
            return parse_day(v)
        except ValueError:
            f.error(name, "must be a date YYYY-MM-DD")
            return None

    def schema(self) -> JSON:
        return self._doc({"type": "string", "format": "date"})


@dataclass(frozen=True)
class Nested(Spec):
    """A JSON object member read by a :class:`Body` of its own (absent or null: none)."""

    item: Body
    description: str = ""

    def read(self, f: Fields, name: str) -> object:
        v = f.data.get(name)
        if v is None:
            return None
        return f.nested(name, v, self.item).values()

    def schema(self) -> JSON:
        return self._doc({"anyOf": [self.item.schema(), {"type": "null"}]})


@dataclass(frozen=True)
class Items(Spec):
    """A list of JSON objects, each read by ``item`` (a :class:`Body`)."""

    item: Body
    required: bool = False
    min_items: int = 0
    description: str = ""

    def read(self, f: Fields, name: str) -> list[dict[str, object]] | None:
        v = f.value_of(name, required=self.required)
        if v is None:
            return None
        if not isinstance(v, list) or len(v) < self.min_items:
            least = f"at least {self.min_items} " if self.min_items else ""
            f.error(name, f"must be a list of {least}{self.item.name} objects")
            return None
        out = []
        for i, entry in enumerate(v):
            out.append(f.nested(f"{name}[{i}]", entry, self.item).values())
        return out

    def schema(self) -> JSON:
        out: JSON = {"type": "array", "items": self.item.schema()}
        if self.min_items:
            out["minItems"] = self.min_items
        return self._doc(out)


@dataclass(frozen=True)
class Body:
    """A JSON object request body: its members in order; any other member is an error."""

    name: str
    fields: Mapping[str, Spec]
    description: str = ""
    #: Alternatives of required members (JSON Schema ``oneOf``), checked by the handler.
    one_of_required: tuple[tuple[str, ...], ...] = ()
    #: Examples of a valid body (in the contract; a test validates each against it).
    examples: tuple[Mapping[str, object], ...] = ()

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
        if self.examples:
            out["examples"] = [dict(e) for e in self.examples]
        return out


#: A query integer: ASCII digits (and a sign where negatives are allowed), short enough that
#: int() of hostile input stays cheap.
_QUERY_INT: Final = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class Param:
    """A query parameter; its JSON Schema is both the contract and the rule it is read by.

    :meth:`read` checks a value as the schema says: ``integer`` (ASCII digits within
    ``minimum``/``maximum``, returned as an int), ``string`` (``minLength``, ``maxLength``,
    ``enum``, ``pattern``; ``format: date-time`` is an RFC 3339 time with its offset, returned
    as Unix ms), ``object`` (free-form: every query member no other parameter declares, as
    a dict; the static pages take any). ``detail`` replaces the derived error message.
    """

    name: str
    where: Literal["query"] = "query"
    schema: JSON = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    #: The value when the parameter is absent.
    default: object = None
    detail: str = ""
    #: Absent is an error.
    required: bool = False

    @property
    def free_form(self) -> bool:
        return self.schema.get("type") == "object"

    def read(self, raw: str) -> object:
        """``raw`` as the schema types it; ValueError (the problem's detail) if it breaks it."""
        s = self.schema
        if s.get("type") == "integer":
            return self._integer(raw)
        if not raw.isprintable():
            raise ValueError("must not contain control characters")
        lo, hi = s.get("minLength"), s.get("maxLength")
        if (isinstance(lo, int) and len(raw) < lo) or (isinstance(hi, int) and len(raw) > hi):
            raise ValueError(self.detail or f"must be {lo or 0} to {hi or 'any number of'} "
                             "characters long")  # fmt: skip
        options = s.get("enum")
        if isinstance(options, list) and raw not in options:
            raise ValueError(self.detail or f"must be one of {', '.join(map(str, options))}")
        pattern = s.get("pattern")
        if isinstance(pattern, str) and re.search(pattern, raw) is None:
            raise ValueError(self.detail or f"must match {pattern}")
        if s.get("format") == "date-time":
            return self._instant(raw)
        return raw

    def _integer(self, raw: str) -> int:
        lo, hi = self.schema.get("minimum"), self.schema.get("maximum")
        bounds = f" from {lo} to {hi}" if lo is not None and hi is not None else ""
        detail = self.detail or f"must be an integer{bounds}"
        if not _QUERY_INT.fullmatch(raw):
            raise ValueError(detail)
        v = int(raw)
        if (isinstance(lo, int) and v < lo) or (isinstance(hi, int) and v > hi):
            raise ValueError(detail)
        return v

    def _instant(self, raw: str) -> int:
        detail = self.detail or "must be an RFC 3339 time such as 2026-11-23T08:59:30Z"
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(detail) from None
        if t.tzinfo is None:
            raise ValueError("must carry a time zone offset (Z or +hh:mm)")
        return (t - _EPOCH) // _MS

    def openapi(self) -> JSON:
        """The parameter object of the contract."""
        schema = dict(self.schema)
        if self.default is not None:
            schema["default"] = self.default
        out: JSON = {
            "name": self.name,
            "in": self.where,
            "required": self.required,
            "schema": schema,
        }
        if self.free_form:
            out["style"], out["explode"] = "form", True
        if self.description:
            out["description"] = self.description
        return out


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


# -- answers: schema helpers ---------------------------------------------------------------------

STRING: Final[JSON] = {"type": "string"}
INT: Final[JSON] = {"type": "integer"}
BOOL: Final[JSON] = {"type": "boolean"}


def nullable(schema: Mapping[str, object]) -> JSON:
    """``schema`` or null."""
    return {"anyOf": [dict(schema), {"type": "null"}]}


def array(items: Mapping[str, object]) -> JSON:
    return {"type": "array", "items": dict(items)}


def obj(
    props: Mapping[str, Mapping[str, object]],
    *,
    optional: Collection[str] = (),
    closed: bool = True,
) -> JSON:
    """An object with ``props``, every one required but the ``optional``; ``closed``: no
    other member (a member added to an answer without its schema fails the tests)."""
    out: JSON = {
        "type": "object",
        "properties": {k: dict(v) for k, v in props.items()},
        "required": [k for k in props if k not in optional],
    }
    if closed:
        out["additionalProperties"] = False
    return out
