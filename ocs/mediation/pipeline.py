"""Hot billing: charge each closed CDR file's records within seconds of the switch closing it.

For every file a :class:`~ocs.mediation.collect.Collector` hands over, in the switch's order:

1. the ledger records it (``collected``; a file the ledger says is done is set aside, never
   charged twice), it is read and marked ``charging``;
2. its records are decoded (:func:`ocs.mediation.formats.decode`) and each is rated and debited
   as a forced direct debit (``ChargingEngine.debit``) whose request key is the record's
   identity, so a file charged again, or a restart in the middle of a file, charges nothing
   twice: the scripts answer a replay with the first answer and change nothing;
3. records that cannot be decoded or rated go to ``<name>.rejected`` beside the file, with
   their reason; the rest are charged;
4. the rated records go to the warehouse (Parquet) and the file to the retention archive;
5. the file moves to ``done/`` and the ledger marks it ``done`` with its counts.

A file is done only when every one of its records is settled. Debits are issued ``window`` at
a time (the engine's Redis client sends the commands of one loop turn in one write); one
subscriber's records are debited one after another in file order, so unit buckets (free
minutes) are used by the earlier call first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from ocs.charging.engine import ChargingEngine, wall_clock_ms
from ocs.charging.types import DebitRequest, Outcome, SessionInfo
from ocs.constants import DURATION_TOLERANCE, MAX_CALL_DURATION
from ocs.lineage import DatasetRef, Lineage, file_dataset
from ocs.mediation.archive import Archive, ArchiveError
from ocs.mediation.collect import (
    Candidate,
    Collector,
    Ledger,
    LedgerUnavailable,
    Source,
    SourceUnavailable,
    open_source,
)
from ocs.mediation.export import SCHEMA, RatedUsage, write_parquet
from ocs.mediation.formats import Rejected, decode, network_id
from ocs.mediation.usage import Direction, Usage
from ocs.store.errors import StoreUnavailable
from tariffs import TariffRater
from tariffs.errors import RatingError
from tariffs.plan import PlanVersion

log = logging.getLogger(__name__)

#: Debits in flight per file (docs/architecture.md, Performance: 64-256 in flight saturates
#: one process).
DEFAULT_WINDOW: Final = 256
#: Back-off while Redis does not answer: first and longest wait, seconds.
RETRY_FIRST: Final = 0.05
RETRY_MAX: Final = 2.0
#: Seconds between two logs of the same poll error (a source that went away, Redis down).
ERROR_EVERY: Final = 60.0
#: Seconds between trims of the ledger's index of expired entries.
_TRIM_EVERY: Final = 3600.0
_TERMINATING: Final = frozenset({Direction.MTC, Direction.SMS_MT})
_EVENTS: Final = frozenset({Direction.SMS_MO, Direction.SMS_MT})

# Reasons in the rejected-records file (after the decoder's own).
USER_UNKNOWN: Final = "user-unknown"
NO_SERVICE: Final = "no-service"
RATING_FAILED: Final = "rating-failed"
INVALID_REQUEST: Final = "invalid-request"
IMPLAUSIBLE: Final = "implausible"


class Decoder(Protocol):
    def __call__(self, data: bytes, *, switch: str, file: str) -> Iterable[Usage | Rejected]: ...


#: The warehouse's columns, for the lineage records' schema facets.
PARQUET_SCHEMA: Final = tuple((f.name, str(f.type)) for f in SCHEMA)


@dataclass(frozen=True, slots=True)
class MediationConfig:
    """How the mediation runs (the CLI builds it from Settings and flags)."""

    #: Seconds between two polls of the source.
    poll_interval: float = 1.0
    #: Debits in flight at once.
    window: int = DEFAULT_WINDOW
    #: Take a closed file only once its size was the same in two polls running.
    stable_size: bool = False
    #: Parquet warehouse directory; None: no export.
    warehouse_dir: str | None = None
    #: Retention archive directory and its AES-256 key; None: no archive.
    archive_dir: str | None = None
    archive_key: bytes | None = None
    #: A call longer than this (seconds) is rejected as implausible, not charged.
    max_call_duration: int = MAX_CALL_DURATION
    #: A call whose callDuration differs from releaseTime - answerTime by more than this
    #: (seconds; the TimeStamps have second precision) is rejected as implausible.
    duration_tolerance: int = DURATION_TOLERANCE
    #: OpenLineage records of what is written (ocs.lineage): a directory, an HTTP endpoint.
    lineage_dir: str | None = None
    lineage_url: str = ""


def implausible(u: Usage, *, max_call_duration: int, duration_tolerance: int) -> str | None:
    """Why a decoded record cannot be believed (and must not be charged), or None.

    The decoders check that each field is well formed; this checks that the record makes
    sense as a whole: a switch that writes a call of 10^10 seconds, or a callDuration its own
    timestamps contradict, is wrong, and charging it would put an account millions below zero.
    SMS records are one event each (their count cannot be wrong); CS records carry no data
    volume.
    """
    if u.direction in _EVENTS or not u.duration:
        return None
    if u.duration > max_call_duration:
        return (f"callDuration {u.duration} s is over the maximum of {max_call_duration} s "
                "(OCS_MEDIATION_MAX_CALL_DURATION)")  # fmt: skip
    if u.answer is not None and u.release is not None:
        span = (u.release - u.answer) // 1000
        if abs(u.duration - span) > duration_tolerance:
            return (f"callDuration {u.duration} s disagrees with releaseTime - answerTime = "
                    f"{span} s (tolerance {duration_tolerance} s, "
                    "OCS_MEDIATION_DURATION_TOLERANCE)")  # fmt: skip
    return None


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """One line of a rejected-records file."""

    sequence: int
    #: Offset of the record in the file (None when the decoder had it and rating refused it).
    offset: int | None
    reason: str
    #: The record's bytes in hex (undecodable records), or its identity (unratable ones).
    detail: str

    def line(self) -> str:
        reason = " ".join(self.reason.split())  # one line, no tabs
        offset = "-" if self.offset is None else str(self.offset)
        return f"{self.sequence}\t{offset}\t{reason}\t{self.detail}"


def rejects_text(file: str, rejects: Iterable[RejectedRecord]) -> bytes:
    """The rejected-records file: a comment line, then one tab-separated line per record."""
    lines = [f"# rejected records of {file}: sequence, offset, reason, raw bytes (hex) or "
             "record id"]  # fmt: skip
    lines.extend(r.line() for r in sorted(rejects, key=lambda r: r.sequence))
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True, slots=True)
class FileReport:
    """What became of one file (the demo prints it; the ledger keeps the counts)."""

    file: str
    switch: str
    size: int = 0
    #: Records in the file (charged + rejected + repeated).
    records: int = 0
    charged: int = 0
    rejected: int = 0
    #: Money debited, micro-units.
    amount: int = 0
    #: Unix ms: when the switch closed it (from its name, minute precision), when it was
    #: collected here, and when its last record was settled.
    closed_at: int = 0
    collected_at: int = 0
    done_at: int = 0
    #: It was charged before (the ledger says done), or its content was under another name
    #: (``duplicate_of``): set aside, not charged.
    duplicate: bool = False
    duplicate_of: str = ""
    #: A previous run had started it (a restart mid-file): its debits were replays.
    resumed: bool = False
    #: Records charged before under their identity by another file (not charged again, not
    #: in ``charged``, ``amount`` or the warehouse); 0 for a resumed file.
    repeated: int = 0
    warehouse: tuple[str, ...] = ()
    archive_seq: int = 0
    rated: tuple[RatedUsage, ...] = field(default=(), repr=False)


@dataclass(slots=True)
class _Resolved:
    version: PlanVersion
    service: str | None
    reason: str


class Charger:
    """Rates and debits the records of one file, ``window`` at a time.

    ``plans(plan, at)`` gives the plan version in force (``TariffRater.book.at``): it says
    which service a record type is rated with (``cdr_record_types``) and the currency.
    """

    def __init__(
        self,
        engine: ChargingEngine,
        plans: Callable[[str, int], PlanVersion],
        *,
        window: int = DEFAULT_WINDOW,
        max_call_duration: int = MAX_CALL_DURATION,
        duration_tolerance: int = DURATION_TOLERANCE,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.engine = engine
        self.plans = plans
        self.window = window
        self.max_call_duration = max_call_duration
        self.duration_tolerance = duration_tolerance
        self._services: dict[tuple[int, Direction, str], _Resolved] = {}

    # -- which service --------------------------------------------------------------------

    def _service(self, version: PlanVersion, u: Usage) -> _Resolved:
        key = (id(version), u.direction, u.service)
        found = self._services.get(key)
        if found is not None and found.version is version:
            return found
        rt = u.direction.record_type
        name = version.service_for(record_type=rt)
        reason = ""
        if name is None:
            # The plan does not map this record type: the decoder's service, if the plan has
            # it. A terminating record is never rated as an outgoing service.
            sdef = version.services.get(u.service)
            if sdef is None:
                reason = f"plan {version.name} has no service for {rt} (nor {u.service!r})"
            elif u.direction in _TERMINATING and sdef.outgoing:
                reason = (f"plan {version.name} has no service for {rt} ({u.service!r} is "
                          "outgoing)")  # fmt: skip
            else:
                name = u.service
        if len(self._services) >= 10_000:
            self._services.clear()
        resolved = _Resolved(version, name, reason)
        self._services[key] = resolved
        return resolved

    # -- one record -----------------------------------------------------------------------

    @staticmethod
    def _reject(u: Usage, reason: str, detail: str = "") -> RejectedRecord:
        text = f"{reason}: {detail}" if detail else reason
        return RejectedRecord(u.sequence, None, text, u.record_id)

    async def _attempt(self, u: Usage) -> RatedUsage | RejectedRecord | None:
        """Rate and debit once; None when it must be tried again (Redis did not answer)."""
        engine = self.engine
        why = implausible(u, max_call_duration=self.max_call_duration,
                          duration_tolerance=self.duration_tolerance)  # fmt: skip
        if why is not None:
            return self._reject(u, IMPLAUSIBLE, why)
        sub = u.served_msisdn
        plan = await engine.plan_of(sub)
        if plan is None:
            return self._reject(u, USER_UNKNOWN, f"no subscriber {sub}")
        at = u.answer if u.answer is not None else u.start
        try:
            version = self.plans(plan, at)
        except RatingError as exc:
            return self._reject(u, RATING_FAILED, str(exc))
        resolved = self._service(version, u)
        if resolved.service is None:
            return self._reject(u, NO_SERVICE, resolved.reason)
        units = 1 if u.direction in _EVENTS else u.duration
        res = await engine.debit(
            DebitRequest(
                subscriber=sub,
                service=resolved.service,
                request_key=u.record_id,
                units=units,
                # The plan's places are visited network ids (MCC+MNC), not cells.
                info=SessionInfo(destination=u.other_party, location=network_id(u.location)),
                force=True,
                at=at,
            )
        )
        outcome = res.outcome
        if outcome is Outcome.SUCCESS:
            return RatedUsage(u, version.name, resolved.service, version.currency, units,
                              res.charged, res.from_buckets, res.balance,
                              replayed=res.replayed)  # fmt: skip
        if outcome is Outcome.USER_UNKNOWN:
            return self._reject(u, USER_UNKNOWN, f"no subscriber {sub}")
        if outcome is Outcome.RATING_FAILED:
            if await engine.plan_of(sub) != plan:
                return None  # the plan changed under us: resolve the service again
            return self._reject(u, RATING_FAILED, res.detail)
        if outcome is Outcome.INVALID_REQUEST:
            return self._reject(u, INVALID_REQUEST, res.detail)
        if outcome is Outcome.SERVICE_DENIED:  # not for forced debits; kept for safety
            return self._reject(u, str(outcome), res.detail)
        # store-unavailable, or contention on the account (credit-limit-reached when forced):
        # the same request key again is safe.
        log.debug("record %s: %s %s; retrying", u.record_id, outcome, res.detail)
        return None

    async def charge_one(self, u: Usage) -> RatedUsage | RejectedRecord:
        """Rate and debit one record, waiting out Redis outages (retries are idempotent)."""
        delay = RETRY_FIRST
        while True:
            try:
                done = await self._attempt(u)
            except StoreUnavailable as exc:
                log.warning("record %s: %s; retrying in %.2f s", u.record_id, exc, delay)
                done = None
            if done is not None:
                return done
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    # -- one file -------------------------------------------------------------------------

    async def charge(
        self, items: Iterable[Usage | Rejected]
    ) -> tuple[list[RatedUsage], list[RejectedRecord]]:
        """Charge every record of ``items`` (a decoder's output); (rated, rejected) when all
        are settled. Cancelling leaves nothing half-done: each debit happened or did not, and
        charging the file again replays those that did."""
        rated: list[RatedUsage] = []
        rejected: list[RejectedRecord] = []
        # Subscribers being charged now -> their records waiting behind (None: none yet).
        busy: dict[str, deque[Usage] | None] = {}
        source = _guarded(items, rejected)

        async def worker() -> None:
            for item in source:
                if not isinstance(item, Usage):
                    rejected.append(RejectedRecord(item.sequence, item.offset, item.reason,
                                                   item.raw.hex()))  # fmt: skip
                    continue
                sub = item.served_msisdn
                if sub in busy:  # another worker is on this subscriber: queue behind it
                    waiting = busy[sub]
                    if waiting is None:
                        waiting = busy[sub] = deque()
                    waiting.append(item)
                    continue
                busy[sub] = None
                usage = item
                try:
                    while True:
                        done = await self.charge_one(usage)
                        if isinstance(done, RatedUsage):
                            rated.append(done)
                        else:
                            rejected.append(done)
                        waiting = busy[sub]
                        if not waiting:
                            break
                        usage = waiting.popleft()
                finally:
                    del busy[sub]

        async with asyncio.TaskGroup() as tg:
            for _ in range(self.window):
                tg.create_task(worker())
        return rated, rejected


def _guarded(
    items: Iterable[Usage | Rejected], rejected: list[RejectedRecord]
) -> Iterator[Usage | Rejected]:
    """The decoder's output, shared by the workers. Decoders do not raise on bad bytes; if one
    does anyway, the rest of the file is one rejected line and what was read is charged."""
    it = iter(items)
    seq = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # a decoder bug must not stop the mediation
            log.exception("decoder failed after record %d", seq)
            rejected.append(RejectedRecord(seq + 1, None, f"decoder error: {exc!r}", ""))
            return
        seq = item.sequence
        yield item


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class Mediation:
    """Collect -> charge -> export -> archive -> done, for one source."""

    def __init__(
        self,
        engine: ChargingEngine,
        rater: TariffRater,
        source: Source,
        config: MediationConfig | None = None,
        *,
        ledger: Ledger | None = None,
        decoder: Decoder | None = None,
        on_file: Callable[[FileReport], None] | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config or MediationConfig()
        self.engine = engine
        self.source = source
        self.collector = Collector(source, stable_size=self.config.stable_size)
        self.ledger = ledger or Ledger(engine.store.client)
        # A lambda, not rater.book.at: the tariff registry replaces the book when plans change.
        book_at = lambda p, t: rater.book.at(p, t)  # noqa: E731, PLW0108
        self.charger = Charger(engine, book_at, window=self.config.window,
                               max_call_duration=self.config.max_call_duration,
                               duration_tolerance=self.config.duration_tolerance)  # fmt: skip
        self.decoder: Decoder = decoder or decode
        self.on_file = on_file
        self.clock = clock
        self._stop = asyncio.Event()
        #: The last poll error logged, and when (monotonic): the same one is logged again
        #: at most every ERROR_EVERY seconds, not at every poll.
        self._last_error: tuple[str, float] = ("", -math.inf)
        cfg = self.config
        self.archive = (
            Archive(cfg.archive_dir, cfg.archive_key)
            if cfg.archive_dir is not None and cfg.archive_key is not None
            else None
        )
        self.lineage = (
            Lineage(cfg.lineage_dir, cfg.lineage_url) if cfg.lineage_dir or cfg.lineage_url
            else None
        )  # fmt: skip

    async def process(self, cand: Candidate) -> FileReport:
        """Charge one closed file through to done (or set it aside as a duplicate)."""
        name, switch = cand.file, cand.switch
        closed_at = _ms(cand.name.closed_at)
        entry = await self.ledger.get(name)
        if entry is not None and entry.state == "done":
            where = await self.source.set_aside(name, duplicate=bool(entry.duplicate_of))
            log.warning("%s: %s was charged before (%s); moved to %s/, not charged again",
                        self.source.label, name, entry.duplicate_of or entry.source,
                        where)  # fmt: skip
            return FileReport(name, switch, cand.size, entry.records, entry.charged,
                              entry.rejected, entry.amount, closed_at, entry.collected_at,
                              entry.done_at, duplicate=True,
                              duplicate_of=entry.duplicate_of)  # fmt: skip
        data = await self.source.read(name)
        # The same bytes under another name (a re-delivery with a new running count) are the
        # same records: set aside, and kept in the ledger as a duplicate of the first.
        digest = hashlib.sha256(data).hexdigest()
        first = await self.ledger.charged_as(digest)
        now = self.clock()
        if first is not None and first != name:
            await self.ledger.duplicate(name, of=first, source=self.source.label, switch=switch,
                                        size=cand.size, digest=digest, now=now)  # fmt: skip
            where = await self.source.set_aside(name, duplicate=True)
            log.warning("%s: %s holds what %s held (SHA-256 %s); moved to %s/, not charged",
                        self.source.label, name, first, digest[:16], where)  # fmt: skip
            return FileReport(name, switch, cand.size, closed_at=closed_at, collected_at=now,
                              done_at=now, duplicate=True, duplicate_of=first)  # fmt: skip
        entry = await self.ledger.collected(name, source=self.source.label, switch=switch,
                                            size=cand.size, now=now)  # fmt: skip
        await self.ledger.charging(name, self.clock())
        items = self.decoder(data, switch=switch, file=name)
        rated, rejects = await self.charger.charge(items)
        done_at = self.clock()
        resumed = entry.attempts > 1
        repeated = 0
        if not resumed:
            # Records this file shares with a file charged before (the same identity): their
            # debits were replays; not charged, exported or counted again.
            kept = [r for r in rated if not r.replayed]
            repeated, rated = len(rated) - len(kept), kept
        amount = sum(r.charged for r in rated)
        records = len(rated) + len(rejects) + repeated
        rated.sort(key=lambda r: r.usage.sequence)
        warehouse: list[Path] = []
        cfg = self.config
        if cfg.warehouse_dir is not None and rated:
            warehouse = await asyncio.to_thread(write_parquet, cfg.warehouse_dir, name, rated,
                                                rated_at=done_at)  # fmt: skip
        seq = 0
        if self.archive is not None:
            arc = await asyncio.to_thread(
                self.archive.append, source=name, data=data, switch=switch,
                records=records, rejected=len(rejects), now_ms=done_at,
            )  # fmt: skip
            seq = arc.seq
        if self.lineage is not None:
            outputs = [file_dataset(p, PARQUET_SCHEMA) for p in warehouse]
            if self.archive is not None:
                outputs.append(file_dataset(arc.path))
            source = DatasetRef(self.source.label, name)
            if outputs:
                await asyncio.to_thread(
                    self.lineage.emit, "ocs.mediation.charge", [source], outputs
                )
        await self.source.finish(name, rejects_text(name, rejects) if rejects else None)
        await self.ledger.done(
            name,
            now=done_at,
            records=records,
            charged=len(rated),
            rejected=len(rejects),
            amount=amount,
            digest=digest,
            repeated=repeated,
        )
        report = FileReport(
            name, switch, cand.size, records, len(rated), len(rejects), amount, closed_at,
            entry.collected_at, done_at, resumed=resumed, repeated=repeated,
            warehouse=tuple(str(p) for p in warehouse), archive_seq=seq, rated=tuple(rated),
        )  # fmt: skip
        log.info("%s: %d records, %d charged (%d micro-units), %d rejected%s%s", name,
                 report.records, report.charged, amount, report.rejected,
                 f", {repeated} charged before (another file)" if repeated else "",
                 " (resumed)" if report.resumed else "")  # fmt: skip
        return report

    async def poll(self) -> list[FileReport]:
        """One poll: every file ready now, charged in order. Errors of the source, the ledger
        or the archive stop this poll (logged); the next poll picks up where it stopped."""
        reports: list[FileReport] = []
        try:
            for cand in await self.collector.poll():
                if self._stop.is_set():
                    break
                report = await self.process(cand)
                reports.append(report)
                if self.on_file is not None:
                    self.on_file(report)
        except (SourceUnavailable, LedgerUnavailable, StoreUnavailable, ArchiveError,
                OSError) as exc:  # fmt: skip
            text, now = str(exc), time.monotonic()
            last, at = self._last_error
            if text != last or now - at >= ERROR_EVERY:
                self._last_error = (text, now)
                log.error("mediation (%s): %s; trying again at each poll (said again every "
                          "%.0f s while it lasts)", self.source.label, exc,
                          ERROR_EVERY)  # fmt: skip
        except Exception:
            # A bug must not stop hot billing: the file stays in the ledger as charging and
            # is taken again at the next poll (its debits replay).
            log.exception("mediation (%s): failed; trying again at the next poll",
                          self.source.label)  # fmt: skip
        return reports

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until cancelled or ``stop`` is set (a file being charged is finished first).
        SourceUnavailable at once when the source cannot work at all (``Source.check``)."""
        await self.source.check()
        stop = self._stop = stop or asyncio.Event()
        trimmed = -math.inf
        while not stop.is_set():
            started = time.monotonic()
            if started - trimmed > _TRIM_EVERY:
                trimmed = started
                with contextlib.suppress(LedgerUnavailable):
                    await self.ledger.forget_expired(self.clock())
            await self.poll()
            wait = max(0.0, self.config.poll_interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def run_mediation(
    engine: ChargingEngine,
    rater: TariffRater,
    source: str | Path | Source,
    config: MediationConfig | None = None,
    *,
    on_file: Callable[[FileReport], None] | None = None,
    stop: asyncio.Event | None = None,
    decoder: Decoder | None = None,
) -> None:
    """Collect and charge the CDR files of ``source`` (a directory, an ``ftp://`` URL, or a
    Source) with ``engine`` until cancelled or ``stop`` is set. ``on_file`` is called with
    each file's :class:`FileReport` (the demo prints them). Start it as a task beside a running
    OCS: ``asyncio.create_task(run_mediation(ocs.engine, ocs.tariffs.rater, "cdr/in"))``."""
    src = source if isinstance(source, Source) else open_source(source)
    async with src:
        await Mediation(engine, rater, src, config, on_file=on_file, decoder=decoder).run(stop)
