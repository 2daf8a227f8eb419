"""The billing database: an engine for the configured URL, migrated to the newest schema at
start (Alembic, the migrations shipped in this package).

``sqlite:///<path>`` (the default, a file under ``.ocs/``) or ``postgresql+psycopg://...``
(psycopg 3). SQLite runs in WAL mode with foreign keys on and waits for a busy writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS: Final = Path(__file__).with_name("migrations")
#: SQLite's page cache per connection (KiB) and WAL pages between checkpoints.
SQLITE_CACHE_KIB: Final = 65_536
SQLITE_CHECKPOINT_PAGES: Final = 20_000


def pg_rows(types: Sequence[str]) -> str:
    """PostgreSQL: the SELECT of rows sent as one parameter, ``%(rows)s``, a JSON array of
    arrays (the values in the order of ``types``: each row's values cast to them), for an
    ``INSERT ... SELECT``: a whole batch in one statement and one round trip. Python's
    ``json.dumps`` writes 10,000 rows in a few milliseconds, where psycopg's dumping of the
    same values as one array a column took ~14 us of CPU per row (bench/RESULTS.md
    2026-12-03 14:30); integers travel as JSON integers, exact."""
    cols = ", ".join(f"(r->>{i})::{t}" for i, t in enumerate(types))
    return f"SELECT {cols} FROM json_array_elements(%(rows)s::json) AS r"


def default_url(data_dir: str | Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'billing.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # A bill run rewrites pages scattered over the usage table (an account's events arrive
    # mixed with everyone's): a 64 MiB page cache (the default is 2 MiB) and a checkpoint
    # every 20,000 WAL pages (80 MiB; the default 1,000 checkpointed about once an account)
    # write each page once for many accounts. bench/billing.py: the run ~1.7x faster.
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    cur.close()


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (its directory made for a SQLite file), not yet migrated."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (nothing to do when it is there)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_billing_db(url: str) -> Engine:
    engine = open_engine(url)
    migrate(engine)
    return engine
