"""The summary of a load run: requests/s and latency percentiles per message type, result
codes, and the verdict against the SLO targets (p99 under ``p99_ms`` for every message type,
failures under ``max_failure_ratio`` of all requests)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from bench.locust.results import Results, TypeStats

#: Message types in the order a reader expects them; others follow alphabetically.
ORDER: Final = (
    "reserve",
    "commit",
    "release",
    "ccr-i",
    "ccr-u",
    "ccr-t",
    "event",
    "topup",
    "balance",
    "overload",
)
#: Message types of the charging protocols (the rest are the admin API's).
CHARGING: Final = frozenset({"reserve", "commit", "release", "ccr-i", "ccr-u", "ccr-t", "event"})


@dataclass(frozen=True, slots=True)
class Slo:
    p99_ms: float = 20.0
    max_failure_ratio: float = 0.001
    #: A p99 of fewer requests is little more than their maximum: not judged.
    min_requests: int = 100


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    count: int
    failures: int
    rate: float
    p50: float
    p95: float
    p99: float
    codes: dict[str, int]


@dataclass
class Summary:
    seconds: float
    rows: list[Row]
    #: All charging requests together (what the throughput figures compare).
    charging: Row
    total: Row
    slo: Slo
    verdicts: list[str] = field(default_factory=list)
    passed: bool = True

    def markdown(self) -> str:
        head = (
            "| message type | requests | req/s | failures | p50 ms | p95 ms | p99 ms | results |\n"
            "|---|---:|---:|---:|---:|---:|---:|---|"
        )
        body = [_row_md(r) for r in self.rows]
        body.append(_row_md(self.charging, bold=True))
        body.append(_row_md(self.total, bold=True))
        verdict = "**PASS**" if self.passed else "**FAIL**"
        slo = (
            f"SLO ({verdict}): p99 under {self.slo.p99_ms:g} ms for every message type (of at "
            f"least {self.slo.min_requests} requests), failures under "
            f"{self.slo.max_failure_ratio:.2%} of requests."
        )
        return "\n".join([head, *body, "", slo, *(f"- {v}" for v in self.verdicts)])


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _row_md(r: Row, bold: bool = False) -> str:
    name = f"**{r.name}**" if bold else r.name
    fail = f"{r.failures:,} ({r.failures / r.count:.2%})" if r.count else "0"
    codes = ", ".join(f"{k} {v:,}" for k, v in sorted(r.codes.items(), key=lambda kv: -kv[1]))
    rate = f"{r.rate:,.0f}" if r.rate else "-"
    return (
        f"| {name} | {r.count:,} | {rate} | {fail} | {_ms(r.p50)} | {_ms(r.p95)} | "
        f"{_ms(r.p99)} | {codes} |"
    )


def _row(name: str, s: TypeStats, seconds: float) -> Row:
    return Row(
        name,
        s.count,
        s.failures,
        s.count / seconds if seconds > 0 else 0.0,
        s.percentile(0.50),
        s.percentile(0.95),
        s.percentile(0.99),
        dict(s.codes),
    )


DRAIN: Final = " (drain)"


def _order(name: str) -> tuple[int, int, str]:
    base = name.removesuffix(DRAIN)
    return (name != base, ORDER.index(base) if base in ORDER else 99, name)


def summarize(results: Results, seconds: float, slo: Slo) -> Summary:
    """Rows per message type, the totals, and the SLO verdict.

    ``seconds``: the load's duration (until the test was told to stop). Requests made while
    the gateways drained (types ending in " (drain)") count in "all" and in the failures, but
    not in the rates, in "all charging" or in the p99 targets.
    """
    names = sorted(results.types, key=_order)
    rows = [_row(n, results.types[n], 0.0 if n.endswith(DRAIN) else seconds) for n in names]
    charging, total = TypeStats(), TypeStats()
    for n, s in results.types.items():
        total.merge(s)
        if n in CHARGING:
            charging.merge(s)
    summary = Summary(
        seconds,
        rows,
        _row("all charging", charging, seconds),
        _row("all", total, 0.0),
        slo,
    )
    for r in rows:
        if r.name.endswith(DRAIN):
            continue
        if r.count < slo.min_requests:
            summary.verdicts.append(f"{r.name}: {r.count} requests, too few to judge a p99")
            continue
        if not math.isnan(r.p99) and r.p99 > slo.p99_ms:
            summary.passed = False
            summary.verdicts.append(f"{r.name}: p99 {r.p99:.2f} ms is over {slo.p99_ms:g} ms")
    ratio = total.failures / total.count if total.count else 0.0
    if ratio > slo.max_failure_ratio:
        summary.passed = False
        summary.verdicts.append(
            f"failures: {total.failures:,} of {total.count:,} requests ({ratio:.3%}) is over "
            f"{slo.max_failure_ratio:.2%}"
        )
    if not total.count:
        summary.passed = False
        summary.verdicts.append("no requests were made")
    return summary
