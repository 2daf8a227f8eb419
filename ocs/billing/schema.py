"""The billing store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Money columns are BigInteger micro-units; percentages are decimal strings (read exactly by
:func:`ocs.billing.formulas.percent`); times of events are Unix milliseconds (BigInteger),
dates of contracts, orders and tickets are ISO 8601 strings with their UTC offset as received,
so what a feed said is kept as it said it. The Alembic migrations in ``migrations/`` create
these tables; a test checks that they match this module.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata: Final = MetaData()

#: national -> region -> agency (the three organisation levels above an account).
org = Table(
    "billing_org",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("level", String(16), nullable=False),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("parent_id", Integer, ForeignKey("billing_org.id"), nullable=True),
)

tax_profile = Table(
    "billing_tax_profile",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("rate", String(16), nullable=False),
    #: exclusive | inclusive | exempt
    Column("mode", String(16), nullable=False),
    Column("rounding", String(16), nullable=False),
)

account = Table(
    "billing_account",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("agency_id", Integer, ForeignKey("billing_org.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("tax_profile", String(64), ForeignKey("billing_tax_profile.code"), nullable=False),
    #: 1-31: periods run from this day of a month (its last day when shorter) to the next's.
    Column("billing_day", Integer, nullable=False),
    #: The zone whose midnights bound the billing periods (IANA name).
    Column("timezone", String(64), nullable=False),
)

#: A mobile line's ownership: the account that owned ``msisdn`` from ``valid_from`` (ms,
#: included) to ``valid_to`` (excluded; NULL: still).
line = Table(
    "billing_line",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("msisdn", String(32), nullable=False),
    Column("account_id", Integer, ForeignKey("billing_account.id"), nullable=False),
    Column("valid_from", BigInteger, nullable=False),
    Column("valid_to", BigInteger, nullable=True),
    Index("ix_billing_line_msisdn", "msisdn"),
    Index("ix_billing_line_account", "account_id"),
)

contract = Table(
    "billing_contract",
    metadata,
    Column("account_id", Integer, ForeignKey("billing_account.id"), primary_key=True),
    Column("start_date", String(10), nullable=False),
    Column("end_date", String(10), nullable=True),
    Column("usage_plan", String(64), nullable=False),
    #: LAD: fixed (micro-units per day) | percent (of the service's monthly charge per day)
    Column("lad_rate_kind", String(16), nullable=False),
    Column("lad_rate", BigInteger, nullable=False),
    Column("lad_rate_percent", String(16), nullable=False),
    Column("lad_grace_days", Integer, nullable=False),
    #: none | amount | percent (of the contract value)
    Column("lad_cap_kind", String(16), nullable=False),
    Column("lad_cap", BigInteger, nullable=False),
    Column("lad_cap_percent", String(16), nullable=False),
)

#: A fixed service of an account (leased line, VPN site, broadband circuit): its monthly
#: charge, in advance or in arrears, its dates and its SLA.
fixed_service = Table(
    "billing_fixed_service",
    metadata,
    Column("service_id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("billing_account.id"), nullable=False),
    Column("description", Text, nullable=False),
    Column("monthly_charge", BigInteger, nullable=False),
    #: advance | arrears
    Column("charging", String(16), nullable=False),
    Column("start_date", String(10), nullable=False),
    Column("end_date", String(10), nullable=True),
    Column("sla_tier", String(32), nullable=False),
    Column("sla_target", String(16), nullable=True),
    #: JSON list of {"up_to": "0.1" | null, "penalty": "5"}
    Column("sla_ladder", Text, nullable=False),
    # (a bill run reads an account's services: migration 0004)
    Index("ix_billing_fixed_service_account", "account_id"),
)

#: Every version of every order received from the ordering feed (ISIM).
order_version = Table(
    "billing_order",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("account_code", String(64), nullable=False),
    Column("ordered_at", String(40), nullable=False),
    Column("committed_at", String(40), nullable=False),
    Column("delivered_at", String(40), nullable=True),
    Column("status", String(16), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index("ix_billing_order_service", "service_id"),
)

#: Every version of every ticket received from the ticketing feed (SAMS).
ticket_version = Table(
    "billing_ticket",
    metadata,
    Column("ticket_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("fault_start", String(40), nullable=False),
    Column("restored_at", String(40), nullable=True),
    Column("cause", Text, nullable=False),
    #: "" (counted) | customer | maintenance
    Column("excluded", String(16), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index("ix_billing_ticket_service", "service_id"),
)

#: A charge read from the OCS outbox: ``event_id`` is "<bucket>/<stream id>". ``line_id`` is
#: the invoice line that bills it (NULL: not billed yet).
usage_event = Table(
    "billing_usage",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("msisdn", String(32), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("service", String(32), nullable=False),
    Column("destination", String(32), nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("line_id", Integer, nullable=True),
    Index("ix_billing_usage_msisdn_ts", "msisdn", "ts"),
    # (billed events only: migration 0002)
    Index(
        "ix_billing_usage_line",
        "line_id",
        sqlite_where=text("line_id IS NOT NULL"),
        postgresql_where=text("line_id IS NOT NULL"),
    ),
)

#: The usage of each account, day and service, kept by the statements that change what it
#: sums (ocs/billing/rollup.py): ``events``/``amount`` every usage event of the account's lines,
#: ``pending_events``/``pending`` those on no invoice line yet. ``day`` is the account's local
#: date (ISO 8601) by billing's day rule: the day from one midnight of the account's zone to
#: the next, the midnights that bound its billing periods. Equal, to the micro-unit, to the
#: same sums scanned from the usage events (``ocs billing check`` says where it is not).
usage_daily = Table(
    "billing_usage_daily",
    metadata,
    Column("account_id", Integer, ForeignKey("billing_account.id"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("service", String(32), primary_key=True),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("pending_events", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    # (the rows with usage on no invoice yet: the pending sums read these only)
    Index(
        "ix_billing_usage_daily_pending",
        "account_id",
        "pending",
        sqlite_where=text("pending_events <> 0"),
        postgresql_where=text("pending_events <> 0"),
    ),
    # (SQLite: the primary key is the table, so a range of an account's days is read in
    # order, with its sums, from one b-tree; and written to one)
    sqlite_with_rowid=False,
)

#: The same sums per agency, billing day of its accounts, day and service (the accounts'
#: rows added up, in the same statements): what the national and regional figures read, a
#: few thousand rows a month where the accounts' are a hundred thousand.
usage_daily_agency = Table(
    "billing_usage_daily_agency",
    metadata,
    Column("agency_id", Integer, ForeignKey("billing_org.id"), primary_key=True),
    Column("billing_day", Integer, primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("service", String(32), primary_key=True),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("pending_events", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

invoice = Table(
    "billing_invoice",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("billing_account.id"), nullable=False),
    Column("period", String(7), nullable=False),
    #: invoice | credit-note | debit-note
    Column("kind", String(16), nullable=False),
    #: draft | issued
    Column("status", String(16), nullable=False),
    #: "<account id>:<period>" for an invoice (one per account and period), NULL for notes.
    Column("draft_key", String(80), nullable=True, unique=True),
    Column("series", String(16), nullable=False),
    Column("number", String(32), nullable=True, unique=True),
    Column("refers_to", Integer, ForeignKey("billing_invoice.id"), nullable=True),
    Column("reason", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("net", BigInteger, nullable=False),
    Column("net_rounded", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("tax_rate", String(16), nullable=False),
    Column("tax_mode", String(16), nullable=False),
    Column("rounding", String(16), nullable=False),
    Column("cutoff", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=True),
    Index("ix_billing_invoice_period", "period", "account_id"),
    # (what an account's earlier invoices credited, read by every draft: migration 0004)
    Index("ix_billing_invoice_account", "account_id", "kind"),
)

invoice_line = Table(
    "billing_invoice_line",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("invoice_id", Integer, ForeignKey("billing_invoice.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    #: fixed | usage | usage-adjustment | lad | penalty | penalty-adjustment | note
    Column("kind", String(24), nullable=False),
    Column("description", Text, nullable=False),
    Column("service_id", String(64), nullable=False),
    #: What the line settles: "<service>:<YYYY-MM>" (fixed, penalty), the order id (LAD), ...
    Column("ref", String(96), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    #: JSON: the inputs and the steps that give ``amount`` (explain recomputes from them).
    Column("evidence", Text, nullable=False),
    UniqueConstraint("invoice_id", "seq", name="uq_billing_line_seq"),
    Index("ix_billing_invoice_line_ref", "kind", "ref"),
    # (the aggregates' sums by kind read this, not the lines with their evidence: 0003)
    Index("ix_billing_invoice_line_sums", "invoice_id", "kind", "amount"),
)

#: The last number given in each invoice series (gapless: taken in the issuing transaction).
series_counter = Table(
    "billing_series",
    metadata,
    Column("series", String(32), primary_key=True),
    Column("last", Integer, nullable=False),
)
