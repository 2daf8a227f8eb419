"""What the ``/v1/billing`` routes take and answer, declared once (ocs.api.schema): the request
bodies the handlers read by (:class:`~ocs.api.schema.Body`, checked before the billing
functions run: 422 problems naming each bad field), the query parameters, and the answers'
JSON Schemas (the contract; the tests check every answer against them).

The billing functions (:mod:`ocs.billing.model`, :mod:`ocs.billing.runs`) check what only they
can know (a parent unit that exists, an end after the start, a required parent below the
national level); the CLI and the demo call them directly. Money is a decimal string (at most
six decimals), percentages too: never a number with a fraction.
"""

from __future__ import annotations

import re
from typing import Final

from ocs.api.request import page_size
from ocs.api.schema import (
    BOOL,
    INT,
    JSON,
    MONEY_OUT,
    STRING,
    Body,
    Choice,
    Day,
    Integer,
    Items,
    Money,
    Nested,
    Param,
    Percent,
    Text,
    array,
    nullable,
    obj,
)
from ocs.billing.feeds import EXCLUSIONS, ORDER_STATUS
from ocs.billing.formulas import ROUNDING_METHODS
from ocs.billing.model import CHARGING, SLA_TIERS, TAX_MODES

MAX_CODE: Final = 64
MAX_NAME: Final = 200
#: A billing period: the month it starts in.
PERIOD_RE: Final = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_DIGITS: Final = re.compile(r"[0-9]{1,32}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_MONTH: Final = "must be a month, YYYY-MM"

# -- request bodies ------------------------------------------------------------------------------

ORG: Final = Body(
    "BillingUnit",
    {
        "code": Text(MAX_CODE, required=True),
        "name": Text(MAX_NAME, required=True),
        "parent": Text(MAX_CODE, description="the parent unit's code: required below national"),
    },
    examples=({"code": "MIN-HEA", "name": "Ministry of Health", "parent": "RG-N"},),
)
ORG_UPDATE: Final = Body("BillingUnitUpdate", {"name": Text(MAX_NAME, required=True)})
ACCOUNT: Final = Body(
    "BillingAccount",
    {
        "code": Text(MAX_CODE, required=True),
        "name": Text(MAX_NAME, required=True),
        "agency": Text(MAX_CODE, required=True, description="the agency's code"),
        "currency": Text(3, pattern=_CURRENCY, pattern_detail="must be an ISO 4217 code",
                         description="ISO 4217; absent: EUR"),
        "tax_profile": Text(MAX_CODE, required=True),
        "billing_day": Integer(1, 31, default=1, description="the first day of each period"),
        "timezone": Text(64, description="an IANA zone (Europe/Berlin); absent: UTC"),
    },
    examples=({"code": "MIN-HEA-01", "name": "Health HQ", "agency": "MIN-HEA",
               "tax_profile": "VAT19", "timezone": "Europe/Berlin"},),
)  # fmt: skip
ACCOUNT_UPDATE: Final = Body(
    "BillingAccountUpdate",
    {
        "name": Text(MAX_NAME),
        "tax_profile": Text(MAX_CODE),
        "billing_day": Integer(1, 31, description="cannot change once it has invoices (409)"),
    },
    description="at least one of name, tax_profile, billing_day",
)
LINE: Final = Body(
    "BillingLine",
    {
        "msisdn": Text(32, required=True, pattern=_DIGITS,
                       pattern_detail="must be digits (E.164 without +)"),
        "valid_from": Integer(0, 2**53, description="Unix ms; the line's usage from then on"),
    },
    examples=({"msisdn": "4915100000001", "valid_from": 0},),
)  # fmt: skip
_STEP: Final = Body(
    "PenaltyStep",
    {
        "up_to": Percent(nullable=True, description="shortfall in points; null: the last step"),
        "penalty": Percent(required=True, description="% of the monthly charge"),
    },
)
SERVICE: Final = Body(
    "FixedService",
    {
        "description": Text(MAX_NAME, required=True),
        "monthly_charge": Money("non-negative", required=True),
        "charging": Choice(CHARGING, "charging", description="absent: arrears"),
        "start_date": Day(required=True),
        "end_date": Day(description="the first day no longer billed"),
        "sla_tier": Choice(tuple(SLA_TIERS), "SLA tier", description="absent: none"),
        "sla_target": Percent(description="availability %; absent: the tier's"),
        "sla_ladder": Items(_STEP, min_items=1, description="absent: the default ladder"),
    },
    examples=({"description": "Leased line L-1", "monthly_charge": "300.00",
               "charging": "arrears", "start_date": "2026-11-11", "sla_tier": "silver"},),
)  # fmt: skip
_LAD: Final = Body(
    "LadTerms",
    {
        "rate_kind": Choice(("fixed", "percent"), "rate kind"),
        "rate": Money("non-negative", description="per day late (rate_kind fixed)"),
        "rate_percent": Percent(description="% of the monthly charge per day (percent)"),
        "grace_days": Integer(0, 365),
        "cap_kind": Choice(("none", "amount", "percent"), "cap kind"),
        "cap": Money("non-negative"),
        "cap_percent": Percent(description="% of the contract value"),
    },
)
CONTRACT: Final = Body(
    "Contract",
    {
        "start_date": Day(required=True),
        "end_date": Day(),
        "usage_plan": Text(MAX_CODE, description="absent: gov-payu"),
        "lad": Nested(_LAD, description="late-delivery damages; absent: none"),
    },
    examples=({"start_date": "2026-01-01", "lad": {"rate_kind": "fixed", "rate": "10.00",
               "grace_days": 2, "cap_kind": "amount", "cap": "500.00"}},),
)  # fmt: skip
TAX: Final = Body(
    "TaxProfile",
    {
        "mode": Choice(TAX_MODES, "tax mode", required=True),
        "rate": Percent(description="required unless exempt"),
        "rounding": Choice(ROUNDING_METHODS, "rounding method", description="absent: half-even"),
    },
    examples=({"rate": "19", "mode": "exclusive"},),
)
RUN: Final = Body(
    "BillRun",
    {
        "period": Text(7, required=True, pattern=PERIOD_RE, pattern_detail=_MONTH),
        "account": Text(MAX_CODE, description="only this account; absent: every account"),
    },
    examples=({"period": "2026-11"},),
)
_NOTE_LINE: Final = Body(
    "NoteLine",
    {"description": Text(MAX_NAME, required=True), "amount": Money("non-negative", required=True)},
)
NOTE: Final = Body(
    "Note",
    {
        "kind": Choice(("credit", "debit"), "note kind", required=True),
        "reason": Text(500, required=True),
        "lines": Items(_NOTE_LINE, required=True, min_items=1),
    },
    examples=({"kind": "credit", "reason": "outage credit",
               "lines": [{"description": "goodwill", "amount": "25.00"}]},),
)  # fmt: skip

#: A feed record (read by ocs.billing.feeds, as the feed files are: the signature covers the
#: bytes, and a bad record is named ``records[i]``).
_TIME_IN: Final[JSON] = {"type": "string", "description": "ISO 8601 with an offset"}
_ORDER: Final = obj(
    {"schema": {"const": "orders/1"}, "order_id": STRING, "version": INT, "service_id": STRING,
     "account": STRING, "ordered_at": _TIME_IN, "committed_at": _TIME_IN,
     "delivered_at": nullable(_TIME_IN), "status": {"enum": list(ORDER_STATUS)}},
    optional=("schema", "delivered_at"),
)  # fmt: skip
_TICKET: Final = obj(
    {"schema": {"const": "tickets/1"}, "ticket_id": STRING, "version": INT, "service_id": STRING,
     "fault_start": _TIME_IN, "restored_at": nullable(_TIME_IN), "cause": STRING,
     "excluded": {"enum": list(EXCLUSIONS)}},
    optional=("schema", "restored_at", "cause", "excluded"),
)  # fmt: skip
_RECORD: Final[JSON] = {"oneOf": [_ORDER, _TICKET]}
FEED_SCHEMA: Final[JSON] = {"oneOf": [_RECORD, array(_RECORD)]}

# -- query parameters -----------------------------------------------------------------------------

PAGE: Final = (
    Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10**9},
          "items to skip", default=0),
    page_size("limit"),
)  # fmt: skip
_PERIOD_Q: Final[JSON] = {"type": "string", "pattern": f"^{PERIOD_RE.pattern}$"}
_CODE_Q: Final[JSON] = {"type": "string", "minLength": 1, "maxLength": MAX_CODE}
ACCOUNTS_QUERY: Final = (*PAGE, Param("agency", "query", _CODE_Q, "only this agency's"))
END_LINE_QUERY: Final = (
    Param("at", "query", {"type": "integer", "minimum": 0, "maximum": 2**53},
          "when the ownership ends (Unix ms); absent: now"),
)  # fmt: skip
INVOICES_QUERY: Final = (
    *PAGE,
    Param("period", "query", _PERIOD_Q, "only this period", detail=_MONTH),
    Param("account", "query", _CODE_Q, "only this account's"),
    Param("status", "query", {"type": "string", "enum": ["draft", "issued"]}),
)
AGGREGATES_QUERY: Final = (
    *PAGE,
    Param("level", "query",
          {"type": "string", "enum": ["national", "region", "agency", "account"]},
          "the level summed per unit", default="agency"),
    Param("period", "query", _PERIOD_Q, "the period", detail=_MONTH, required=True),
)  # fmt: skip

# -- answers --------------------------------------------------------------------------------------

_MS: Final[JSON] = {"type": "integer", "description": "Unix ms"}
_DATE: Final[JSON] = {"type": "string", "format": "date"}
_PCT: Final[JSON] = {"type": "string", "description": "a decimal percentage"}


def page(item: JSON) -> JSON:
    """A page of ``item``s."""
    return obj({"items": array(item), "offset": INT, "limit": INT})


ORG_OUT: Final = obj({"level": STRING, "code": STRING, "name": STRING, "parent": nullable(STRING)})
_LINE_OUT: Final = obj({"msisdn": STRING, "valid_from": _MS, "valid_to": nullable(_MS)})
SERVICE_OUT: Final = obj(
    {
        "service_id": STRING,
        "description": STRING,
        "monthly_charge": MONEY_OUT,
        "charging": {"enum": list(CHARGING)},
        "start_date": _DATE,
        "end_date": nullable(_DATE),
        "sla_tier": {"enum": list(SLA_TIERS)},
        "sla_target": nullable(_PCT),
        "sla_ladder": array(obj({"up_to": nullable(_PCT), "penalty": _PCT})),
    }
)
_CONTRACT_TERMS: Final = {
    "start_date": _DATE,
    "end_date": nullable(_DATE),
    "usage_plan": STRING,
    "lad": obj(
        {
            "rate_kind": STRING,
            "rate": MONEY_OUT,
            "rate_percent": _PCT,
            "grace_days": INT,
            "cap_kind": STRING,
            "cap": MONEY_OUT,
            "cap_percent": _PCT,
        }
    ),
}
CONTRACT_OUT: Final = obj(_CONTRACT_TERMS)
CONTRACT_VIEW: Final = obj({**_CONTRACT_TERMS, "services": array(SERVICE_OUT)})
ACCOUNT_OUT: Final = obj(
    {
        "code": STRING,
        "name": STRING,
        "agency": STRING,
        "currency": STRING,
        "tax_profile": STRING,
        "billing_day": INT,
        "timezone": STRING,
        "lines": array(_LINE_OUT),
        "services": array(SERVICE_OUT),
        "contract": nullable(CONTRACT_OUT),
    }
)
LINE_OUT: Final = obj({"msisdn": STRING, "account": STRING, "valid_from": _MS})
TAX_OUT: Final = obj({"code": STRING, "rate": _PCT, "mode": STRING, "rounding": STRING})
TAX_LIST: Final = obj({"items": array(TAX_OUT)})
_SUMS: Final = ("usage", "fixed", "lad", "penalty", "total")
PENDING_OUT: Final = obj(
    {
        "account": STRING,
        "agency": STRING,
        "period": STRING,
        "as_of": {"type": "string", "format": "date-time"},
        "currency": STRING,
        "last_usage_event_ts": nullable(_MS),
        **dict.fromkeys(_SUMS, MONEY_OUT),
        "micro": obj(dict.fromkeys(_SUMS, INT)),
    }
)
FEED_OUT: Final = obj({"stored": INT, "replays": INT})
FEED_HISTORY: Final = obj(
    {"id": STRING, "versions": array({"type": "object", "description": "as received"})}
)
RUN_OUT: Final = obj({"period": STRING, "drafted": array(STRING), "already_issued": array(STRING)})
ISSUE_OUT: Final = obj({"period": STRING, "issued": array(STRING)})
EXPORT_OUT: Final = obj({"period": STRING, "files": array(STRING)})
_TOTALS: Final = ("net", "net_rounded", "tax", "total")
INVOICE_LINE: Final = obj(
    {
        "seq": INT,
        "kind": STRING,
        "description": STRING,
        "service_id": nullable(STRING),
        "ref": nullable(STRING),
        "quantity": nullable({"type": ["string", "integer"]}),
        "amount": MONEY_OUT,
        "amount_micro": INT,
        "evidence": {"type": "object"},
    }
)
_INVOICE: Final[dict[str, JSON]] = {
    "id": INT,
    "number": nullable(STRING),
    "kind": {"enum": ["invoice", "credit-note", "debit-note"]},
    "status": {"enum": ["draft", "issued"]},
    "account": STRING,
    "agency": STRING,
    "period": STRING,
    "currency": STRING,
    **dict.fromkeys(_TOTALS, MONEY_OUT),
    "rounding": MONEY_OUT,
    "tax_rate": _PCT,
    "tax_mode": STRING,
    "rounding_method": STRING,
    "cutoff": nullable({"type": "string", "format": "date-time"}),
    "issued_at": nullable(_MS),
    "reason": nullable(STRING),
    "refers_to": nullable(STRING),
    "micro": obj(dict.fromkeys(_TOTALS, INT)),
}
INVOICE_OUT: Final = obj({**_INVOICE, "lines": array(INVOICE_LINE)})
INVOICE_LIST: Final = page(obj(_INVOICE))
EXPLAIN_OUT: Final = obj(
    {
        "invoice": {"type": ["string", "integer"]},
        "line": INT,
        "kind": STRING,
        "description": STRING,
        "amount": MONEY_OUT,
        "amount_micro": INT,
        "evidence": {"type": "object"},
        "steps": array(STRING),
        "recomputed_micro": nullable(INT),
        "recomputed": nullable(MONEY_OUT),
        "matches": BOOL,
    }
)
_AGG: Final = ("billed", "drafted", "usage", "lad", "penalties", "pending")
AGGREGATE: Final = obj(
    {
        "level": STRING,
        "code": STRING,
        "period": STRING,
        **dict.fromkeys(_AGG, MONEY_OUT),
        "accounts": INT,
        "invoices": INT,
        "micro": obj(dict.fromkeys(_AGG, INT)),
    }
)
