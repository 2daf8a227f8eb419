"""Lineage (ocs.lineage): OpenLineage run events for the datasets the OCS writes: the
warehouse's Parquet partitions and the retention archive (hot billing), the outbox exports;
and ``ocs lineage show``. The events are read back as plain JSON and checked against the
OpenLineage run-event shape (eventType, eventTime, run.runId, job, inputs, outputs, facets)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_mediation_pipeline import KEY, T0, add, line, name, rater, stub_decode, write

from ocs.charging.engine import ChargingEngine
from ocs.lineage import Lineage, file_dataset
from ocs.mediation.collect import DirectorySource
from ocs.mediation.pipeline import Mediation, MediationConfig
from ocs.store.store import Store


def events(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (directory / "openlineage.jsonl").read_text().splitlines()]


def ocs_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocs.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60,
                          check=False)  # fmt: skip


async def test_a_charged_file_records_its_outputs(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 10_000_000)
    src = tmp_path / "in"
    f = name(1)
    write(src, f, [line("moc", "491700000001", "+4930123456", T0, 60)])
    lineage = tmp_path / "lineage"
    config = MediationConfig(
        poll_interval=0.05, warehouse_dir=str(tmp_path / "warehouse"),
        archive_dir=str(tmp_path / "archive"), archive_key=KEY, lineage_dir=str(lineage),
    )  # fmt: skip
    m = Mediation(ChargingEngine(store, rater()), rater(), DirectorySource(src), config,
                  decoder=stub_decode)  # fmt: skip
    (report,) = await m.poll()
    (event,) = events(lineage)
    assert event["eventType"] == "COMPLETE" and event["eventTime"].startswith("20")
    assert len(event["run"]["runId"]) == 36
    assert event["job"] == {"namespace": "ocs", "name": "ocs.mediation.charge", "facets": {}}
    (source,) = event["inputs"]
    assert (source["namespace"], source["name"]) == (f"dir:{src}", f)
    parquet, archived = event["outputs"]
    assert (parquet["namespace"], parquet["name"]) == ("file", report.warehouse[0])
    schema = parquet["facets"]["schema"]
    assert schema["_schemaURL"].endswith("SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet")
    fields = {x["name"]: x["type"] for x in schema["fields"]}
    assert fields["charged"] == "int64" and fields["served_msisdn"] == "string"
    assert archived["name"].startswith(str(tmp_path / "archive")) and archived["name"].endswith(
        ".arc"
    )  # fmt: skip
    # Where the warehouse came from: the CDR file, through the mediation.
    r = await asyncio.to_thread(ocs_cmd, "lineage", "show", str(tmp_path / "warehouse"),
                                "--dir", str(lineage))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"file:{report.warehouse[0]}" in r.stdout
    assert "<- ocs.mediation.charge" in r.stdout and f"from dir:{src}:{f}" in r.stdout
    r = await asyncio.to_thread(ocs_cmd, "lineage", "show", "elsewhere", "--dir", str(lineage))
    assert r.returncode == 1 and "no lineage record" in r.stderr


def test_show_follows_inputs_upstream(tmp_path: Path) -> None:
    """A billing export (say) made from the warehouse: show names both runs."""
    lineage = Lineage(tmp_path)
    part = file_dataset(tmp_path / "wh" / "x.parquet", [("charged", "int64")])
    bill = file_dataset(tmp_path / "bills" / "2026-11.csv")
    lineage.emit("ocs.mediation.charge", [file_dataset(tmp_path / "cdr" / "a")], [part])
    lineage.emit("ocs.billing.export", [part], [bill])
    from ocs.lineage import show

    lines = show(tmp_path, bill.name)
    assert lines[0] == f"file:{bill.name}"
    assert "<- ocs.billing.export" in lines[1]
    assert any("<- ocs.mediation.charge" in x for x in lines)
    assert lines[-1].strip() == f"from file:{tmp_path / 'cdr' / 'a'}"


async def test_the_outbox_export_records_its_lineage(redis_url: str, store: Store,
                                                     tmp_path: Path) -> None:  # fmt: skip
    await add(store, "491700000009", 1_000_000)
    out, lineage = tmp_path / "journal", tmp_path / "lineage"
    r = await asyncio.to_thread(ocs_cmd, "outbox", "export", "--once", "--dir", str(out),
                                "--redis-url", redis_url,
                                env={"OCS_LINEAGE_DIR": str(lineage)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    (event,) = events(lineage)
    assert event["job"]["name"] == "ocs.outbox.export"
    assert event["inputs"][0]["name"] == "ocs:{b*}:outbox"
    assert event["inputs"][0]["namespace"].startswith(("redis://127.0.0.1:",
                                                       "redis+cluster://127.0.0.1:"))  # fmt: skip
    assert event["outputs"][0] == {"namespace": "file", "name": str(out), "facets": {},
                                   "outputFacets": {}}  # fmt: skip
