"""OpenLineage records of the billing exports (ocs.lineage, docs/security.md "Lineage"), as
the warehouse and archive writers keep them: which job wrote which file (or HTTP download)
from which tables of the billing database.

Jobs: ``ocs.billing.export`` (the period's Parquet dataset), ``ocs.billing.invoice.pdf``,
``ocs.billing.invoice.csv`` and ``ocs.billing.invoice.json`` (an invoice written to a file
by the CLI, or downloaded from the API as PDF or CSV). Inputs are named as OpenLineage names
tables: ``postgres://host:port`` / ``<database>.public.<table>`` on PostgreSQL, and on SQLite
``sqlite://<absolute path of the file>`` / ``<table>``. An invoice read as JSON through the API
(the dashboard does, all the time) is a read, not an export: no record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pyarrow as pa
from sqlalchemy import Engine, Table

from ocs.billing import schema as S
from ocs.config import Settings
from ocs.lineage import DatasetRef, Lineage, file_dataset

JOBS: Final = {
    "parquet": "ocs.billing.export",
    "pdf": "ocs.billing.invoice.pdf",
    "csv": "ocs.billing.invoice.csv",
    "json": "ocs.billing.invoice.json",
}
#: What an invoice's exports are made from.
INVOICE_TABLES: Final = (S.invoice, S.invoice_line, S.account, S.org)


def lineage_of(settings: Settings) -> Lineage | None:
    """The OpenLineage client the settings ask for (OCS_LINEAGE_DIR, OCS_LINEAGE_URL)."""
    if not (settings.lineage_dir or settings.lineage_url):
        return None
    return Lineage(settings.lineage_dir or None, settings.lineage_url)


def tables(engine: Engine, which: Sequence[Table]) -> list[DatasetRef]:
    """The billing database's tables as OpenLineage datasets (with their columns)."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        ns = f"postgres://{url.host or 'localhost'}:{url.port or 5432}"
        prefix = f"{url.database}.public."
    else:
        db = url.database or ""
        ns = f"sqlite://{Path(db).absolute() if db and db != ':memory:' else ':memory:'}"
        prefix = ""
    return [
        DatasetRef(ns, prefix + t.name, tuple((c.name, str(c.type)) for c in t.columns))
        for t in which
    ]


def invoice_exported(lineage: Lineage | None, engine: Engine, fmt: str, target: DatasetRef) -> None:
    """Record that an invoice went out as ``fmt`` (pdf, csv, json) to ``target``."""
    if lineage is not None:
        lineage.emit(JOBS[fmt], tables(engine, INVOICE_TABLES), [target])


def period_exported(
    lineage: Lineage | None,
    engine: Engine,
    files: Sequence[tuple[Path, pa.Schema]],
) -> None:
    """Record the Parquet files of a period's billing dataset (their columns as written)."""
    if lineage is not None:
        outputs = [file_dataset(p, [(f.name, str(f.type)) for f in schema]) for p, schema in files]
        lineage.emit(JOBS["parquet"], tables(engine, INVOICE_TABLES), outputs)


def http_download(host: str, path: str) -> DatasetRef:
    """An export served over HTTP (OpenLineage's naming of an HTTP source: ``http://host``)."""
    return DatasetRef(f"http://{host}", path)
