"""What a load run measured, beside Locust's own statistics: a latency histogram and the
result codes of every message type, and the client's ledger of money.

Locust rounds response times to whole milliseconds below 100 ms; the histogram here keeps
1% resolution from 1 µs up, so a p99 of 1.3 ms reads as that. Every Locust process keeps a
:class:`Results`; a worker sends what it gathered since its last report to the master with
each of its reports (``take``/``merge``), and the master (or the only process) writes the total
as JSON at the end of the run.

The ledger, per subscriber: money the OCS said it charged (native replies carry it; Diameter
CCAs do not), money topped up (HTTP 201), and whether any of its requests went unanswered
(then what it was charged is not known and the ledger says nothing about it).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: Buckets per factor e: 100 gives buckets 1% wide.
_PER_E: Final = 100


def bucket_of(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds (1% wide, from 1 µs)."""
    return int(math.log(max(ms * 1000.0, 1.0)) * _PER_E)


def bucket_ms(bucket: int) -> float:
    """The middle of a bucket, in milliseconds."""
    return math.exp((bucket + 0.5) / _PER_E) / 1000.0


@dataclass
class TypeStats:
    """One message type: how many, how many failed, latency histogram, result codes."""

    count: int = 0
    failures: int = 0
    hist: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)

    def add(self, ms: float, code: str, failed: bool) -> None:
        self.count += 1
        self.failures += failed
        self.hist[bucket_of(ms)] += 1
        self.codes[code] += 1

    def merge(self, other: TypeStats) -> None:
        self.count += other.count
        self.failures += other.failures
        self.hist.update(other.hist)
        self.codes.update(other.codes)

    def percentile(self, q: float) -> float:
        """The latency (ms) under which a share ``q`` (0..1) of the requests completed."""
        if not self.hist:
            return float("nan")
        rank = q * sum(self.hist.values())
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return bucket_ms(b)
        return bucket_ms(max(self.hist))

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "failures": self.failures,
            "hist": {str(k): v for k, v in sorted(self.hist.items())},
            "codes": dict(self.codes),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TypeStats:
        return cls(
            int(d["count"]),
            int(d["failures"]),
            Counter({int(k): int(v) for k, v in d["hist"].items()}),
            Counter({str(k): int(v) for k, v in d["codes"].items()}),
        )


@dataclass
class Results:
    types: dict[str, TypeStats] = field(default_factory=dict)
    #: msisdn -> [charged, topped up, unanswered requests]
    ledger: dict[str, list[int]] = field(default_factory=dict)
    #: Engine session ids the load left open (their end could not be reported).
    abandoned: list[str] = field(default_factory=list)
    #: Protocols the gateways used (Diameter answers do not say what was charged).
    protocols: set[str] = field(default_factory=set)
    #: Sessions not started because a network element had too many open already.
    overload: int = 0
    #: Wall-clock start of the test, when it was told to stop (the gateways drain from then
    #: on), and its end (Unix seconds), set by the master.
    started: float = 0.0
    stopped: float = 0.0
    stopping: float = 0.0
    #: CPU seconds the Locust processes spent from the start of the test.
    cpu: float = 0.0

    def reset(self) -> None:
        self.types, self.ledger, self.abandoned, self.protocols = {}, {}, [], set()
        self.overload, self.started, self.stopped, self.stopping, self.cpu = 0, 0.0, 0.0, 0.0, 0.0

    def record(self, name: str, ms: float, code: str, failed: bool) -> None:
        stats = self.types.get(name)
        if stats is None:
            stats = self.types[name] = TypeStats()
        stats.add(ms, code, failed)

    def _entry(self, msisdn: str) -> list[int]:
        entry = self.ledger.get(msisdn)
        if entry is None:
            entry = self.ledger[msisdn] = [0, 0, 0]
        return entry

    def charged(self, msisdn: str, amount: int) -> None:
        self._entry(msisdn)[0] += amount

    def topped_up(self, msisdn: str, amount: int) -> None:
        self._entry(msisdn)[1] += amount

    def uncertain(self, msisdn: str) -> None:
        self._entry(msisdn)[2] += 1

    @property
    def charges_known(self) -> bool:
        """The ledger knows every charge: only native gateways ran."""
        return self.protocols <= {"native"}

    def merge(self, other: Results) -> None:
        for name, stats in other.types.items():
            mine = self.types.get(name)
            if mine is None:
                self.types[name] = mine = TypeStats()
            mine.merge(stats)
        for msisdn, (charged, topped, unanswered) in other.ledger.items():
            entry = self._entry(msisdn)
            entry[0] += charged
            entry[1] += topped
            entry[2] += unanswered
        self.abandoned.extend(other.abandoned)
        self.protocols |= other.protocols
        self.overload += other.overload
        self.cpu += other.cpu

    def take(self) -> Results:
        """What was gathered so far, leaving this empty (a worker's report to the master)."""
        out = Results(self.types, self.ledger, self.abandoned, set(self.protocols), self.overload)
        out.cpu = self.cpu
        self.types, self.ledger, self.abandoned, self.overload, self.cpu = {}, {}, [], 0, 0.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "types": {k: v.to_json() for k, v in sorted(self.types.items())},
            "ledger": self.ledger,
            "abandoned": self.abandoned,
            "protocols": sorted(self.protocols),
            "overload": self.overload,
            "started": self.started,
            "stopped": self.stopped,
            "stopping": self.stopping,
            "cpu": self.cpu,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Results:
        return cls(
            {k: TypeStats.from_json(v) for k, v in d.get("types", {}).items()},
            {k: [int(x) for x in v] for k, v in d.get("ledger", {}).items()},
            list(d.get("abandoned", [])),
            set(d.get("protocols", [])),
            int(d.get("overload", 0)),
            float(d.get("started", 0.0)),
            float(d.get("stopped", 0.0)),
            float(d.get("stopping", 0.0)),
            float(d.get("cpu", 0.0)),
        )

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def read(cls, path: str | Path) -> Results:
        return cls.from_json(json.loads(Path(path).read_text()))
