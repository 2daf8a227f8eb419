"""Lineage: an OpenLineage record (a COMPLETE run event: job, run, input and output datasets
with schema facets) for every dataset the OCS writes, so a catalogue (Marquez, DataHub,
Atlas) can say where each came from; docs/security.md, "Lineage".

Records go to a file sink by default (``<OCS_LINEAGE_DIR>/openlineage.jsonl``, one event per
line) and to an HTTP endpoint as well when OCS_LINEAGE_URL is set (the openlineage-python
client's transports). ``ocs lineage show DATASET`` reads the file sink.

Writers call :meth:`Lineage.emit` (or :func:`emit`, its thread-friendly form) after a dataset
is durable: the warehouse's Parquet partitions and the retention archive (hot billing), the
outbox exports, the billing exports. A failure to write lineage is logged, never fatal: the
data is what matters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

__all__ = ["DatasetRef", "Lineage", "file_dataset", "show"]

log = logging.getLogger(__name__)

PRODUCER: Final = "https://github.com/ocs/ocs"
#: The job namespace of everything the OCS runs.
NAMESPACE: Final = "ocs"
SINK_FILE: Final = "openlineage.jsonl"


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """A dataset as OpenLineage names it: ``namespace`` (where: "file", "redis://host:port",
    "ftp://host") and ``name`` (what: a path, a key pattern); ``schema``: (field, type)."""

    namespace: str
    name: str
    schema: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.namespace}:{self.name}"


def file_dataset(path: str | Path, schema: Iterable[tuple[str, str]] = ()) -> DatasetRef:
    """A file or directory, by its absolute path (the OpenLineage naming for local files)."""
    return DatasetRef("file", str(Path(path).absolute()), tuple(schema))


class Lineage:
    """Emits run events through the openlineage-python client."""

    def __init__(self, directory: str | Path | None, url: str = "") -> None:
        from openlineage.client import OpenLineageClient

        transports: list[dict[str, Any]] = []
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = str(self.directory / SINK_FILE)
            transports.append({"type": "file", "log_file_path": path, "append": True})
        if url:
            transports.append({"type": "http", "url": url, "timeout": 5.0})
        if not transports:
            self.client = None
            return
        transport = transports[0] if len(transports) == 1 else {
            "type": "composite", "transports": transports,
        }  # fmt: skip
        self.client = OpenLineageClient(config={"transport": transport})

    def emit(
        self,
        job: str,
        inputs: Sequence[DatasetRef],
        outputs: Sequence[DatasetRef],
        *,
        at: datetime | None = None,
    ) -> None:
        """Record one run of ``job`` that read ``inputs`` and wrote ``outputs`` (blocking I/O:
        from async code, call it in a thread)."""
        if self.client is None:
            return
        from openlineage.client.event_v2 import (
            InputDataset,
            Job,
            OutputDataset,
            Run,
            RunEvent,
            RunState,
        )
        from openlineage.client.uuid import generate_new_uuid

        event = RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=(at or datetime.now(UTC)).isoformat(),
            run=Run(runId=str(generate_new_uuid())),
            job=Job(namespace=NAMESPACE, name=job),
            producer=PRODUCER,
            inputs=[InputDataset(d.namespace, d.name, facets=_facets(d)) for d in inputs],
            outputs=[OutputDataset(d.namespace, d.name, facets=_facets(d)) for d in outputs],
        )
        try:
            self.client.emit(event)
        except Exception as exc:  # the data is written; its lineage must not undo that
            log.error("lineage: %s not recorded: %s", job, exc)


def _facets(d: DatasetRef) -> dict[str, Any]:
    if not d.schema:
        return {}
    from openlineage.client.facet_v2 import schema_dataset

    fields = [schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in d.schema]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields)}


def _events(directory: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(directory) / SINK_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def _matches(dataset: dict[str, Any], wanted: str) -> bool:
    name = str(dataset.get("name", ""))
    key = f"{dataset.get('namespace', '')}:{name}"
    return wanted in (name, key) or name.startswith(wanted.rstrip("/") + "/")


def show(directory: str | Path, wanted: str, *, depth: int = 5) -> list[str]:
    """Where ``wanted`` (a dataset name, a namespace:name, or a directory holding datasets)
    came from: one line per run that wrote it, then the runs that wrote their inputs."""
    events = [e for e in _events(directory) if e.get("eventType") == "COMPLETE"]
    out: list[str] = []
    seen: set[str] = set()

    def walk(target: str, level: int) -> None:
        for e in events:
            outputs = [d for d in e.get("outputs", []) if _matches(d, target)]
            if not outputs:
                continue
            run = e.get("run", {}).get("runId", "?")
            if run in seen:
                continue
            seen.add(run)
            job = e.get("job", {}).get("name", "?")
            pad = "  " * level
            for d in outputs:
                out.append(f"{pad}{d['namespace']}:{d['name']}")
            out.append(f"{pad}  <- {job} at {e.get('eventTime', '?')} (run {run})")
            for d in e.get("inputs", []):
                out.append(f"{pad}     from {d['namespace']}:{d['name']}")
                if level + 1 < depth:
                    walk(f"{d['namespace']}:{d['name']}", level + 2)

    walk(wanted, 0)
    return out
