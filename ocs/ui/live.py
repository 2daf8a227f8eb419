"""The dashboard's live feed: ONE reader of the outbox and notification streams (and of the
request counters of every worker) per OCS process, fanned out to every browser connection.

The reader keeps, per line of the hierarchy, what the figures need (balance, held credit,
open sessions, barring), primed once from the store and then refreshed only for the lines an
event names. Every ``tick`` seconds it sums the lines per unit (national, region, agency,
account) and hands each listener one message: the charging requests and refusals of the last
tick (all protocols), and the current live figures of every unit that changed. A browser
connection is a queue; a slow one loses old messages, never blocks the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine

from ocs.metrics import Metrics
from ocs.store.errors import StoreUnavailable
from ocs.store.store import Store
from ocs.store.streams import StreamReader
from ocs.ui.figures import Hierarchy, load_hierarchy

__all__ = ["LineState", "LiveFeed", "Message", "live_feed"]

log = logging.getLogger("ocs.ui.live")

#: Protocols whose requests are charging requests (the dashboard's requests/s).
CHARGING: Final = ("native", "diameter", "camel")
#: Seconds between messages: figures reach a browser within ``TICK`` + a read's block.
TICK: Final = 1.0
#: Seconds between reloads of the hierarchy (new accounts and lines appear on the next).
HIERARCHY_EVERY: Final = 5.0
#: Messages a listener may fall behind by before the oldest are dropped.
QUEUE: Final = 8
PRIME_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class LineState:
    balance: int
    held: int
    sessions: int
    barred: bool


@dataclass(frozen=True, slots=True)
class Message:
    """One tick's message: as data (to filter for an agency-scoped listener) and as the JSON
    every unscoped listener is sent."""

    data: dict[str, Any]
    text: str


def _line_json(s: LineState) -> dict[str, Any]:
    return {"balance": s.balance, "held": s.held, "sessions": s.sessions, "barred": s.barred}


def _unit_key(level: str, code: str) -> str:
    return f"{level}:{code}"


class LiveFeed:
    """The reader task and its listeners; :func:`live_feed` owns one."""

    def __init__(
        self,
        store: Store,
        streams: StreamReader,
        engine: Engine,
        metrics: Metrics,
        *,
        tick: float = TICK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.streams = streams
        self.engine = engine
        self.metrics = metrics
        self.tick = tick
        self.clock = clock
        self.hierarchy = Hierarchy()
        self.lines: dict[str, LineState] = {}
        #: "level:code" -> the live figures of the unit (see :meth:`unit_live`).
        self.units: dict[str, dict[str, int]] = {}
        self.listeners: set[asyncio.Queue[Message]] = set()
        self.ready = asyncio.Event()
        self.last: dict[str, Any] = {"requests": 0, "refusals": 0, "events": 0}
        self._counted = (0, 0)
        self._loaded_at = 0.0
        #: Messages sent (tests wait on it).
        self.sent = 0

    # -- what the API asks ---------------------------------------------------------------

    def unit_live(self, level: str, code: str) -> dict[str, int]:
        """Held credit, open sessions, barred and active lines of the unit now."""
        return self.units.get(
            _unit_key(level, code), {"held": 0, "sessions": 0, "barred": 0, "lines": 0}
        )

    def line(self, msisdn: str) -> LineState | None:
        return self.lines.get(msisdn)

    def listen(self) -> asyncio.Queue[Message]:
        q: asyncio.Queue[Message] = asyncio.Queue(QUEUE)
        self.listeners.add(q)
        return q

    def unlisten(self, q: asyncio.Queue[Message]) -> None:
        self.listeners.discard(q)

    # -- the reader ----------------------------------------------------------------------

    async def _reload(self) -> None:
        self.hierarchy = await asyncio.to_thread(load_hierarchy, self.engine)
        self._loaded_at = self.clock()
        unknown = [m for m in self.hierarchy.account_of if m not in self.lines]
        for i in range(0, len(unknown), PRIME_CHUNK):
            await self._refresh(unknown[i : i + PRIME_CHUNK])
        self._sum_all()

    async def _refresh(self, msisdns: list[str]) -> None:
        accounts = await asyncio.gather(*(self.store.get_account(m) for m in msisdns))
        for m, a in zip(msisdns, accounts, strict=True):
            if a is None:
                self.lines.pop(m, None)
                continue
            self.lines[m] = LineState(
                balance=a.balance,
                held=sum(s.held_money for s in a.sessions),
                sessions=len(a.sessions),
                barred=a.barring != "none",
            )

    def _sum_all(self) -> None:
        units: dict[str, dict[str, int]] = {}
        h = self.hierarchy
        for m in h.account_of:
            st = self.lines.get(m)
            for level, code in h.ancestors_of(m):
                u = units.setdefault(
                    _unit_key(level, code), {"held": 0, "sessions": 0, "barred": 0, "lines": 0}
                )
                u["lines"] += 1
                if st is not None:
                    u["held"] += st.held
                    u["sessions"] += st.sessions
                    u["barred"] += int(st.barred)
        self.units = units

    def _apply(
        self, units: list[tuple[str, str]], old: LineState | None, new: LineState | None
    ) -> None:
        """Move the unit sums by one line's change (no pass over every line per tick)."""
        zero = LineState(0, 0, 0, False)
        o, n = old or zero, new or zero
        delta = {"held": n.held - o.held, "sessions": n.sessions - o.sessions,
                 "barred": int(n.barred) - int(o.barred)}  # fmt: skip
        for level, code in units:
            u = self.units.setdefault(
                _unit_key(level, code), {"held": 0, "sessions": 0, "barred": 0, "lines": 0}
            )
            for k, d in delta.items():
                u[k] += d

    def _requests(self) -> tuple[int, int]:
        """Charging requests and refusals so far, over every worker of ``ocs serve --workers
        N`` (the metrics' per-worker files: another worker's are up to a second behind)."""
        total = refused = 0
        for (protocol, _verb, outcome), n in self.metrics.counter_sum("ocs_requests").items():
            if protocol in CHARGING:
                total += n
                if outcome != "success":  # every agent labels in the outcomes' words
                    refused += n
        return total, refused

    async def _read(self, block_ms: int) -> tuple[set[str], list[dict[str, str]]]:
        """The lines named by new outbox and notification entries; the barring changes."""
        touched: set[str] = set()
        bars: list[dict[str, str]] = []
        for entry in await self.streams.read(block_ms):
            fields = entry.fields
            sub = fields.get("sub", "")
            if sub:
                touched.add(sub)
            if fields.get("t") == "barring":
                bars.append(
                    {"msisdn": sub, "bar": fields.get("bar", ""), "was": fields.get("was", "")}
                )
        return touched, bars

    async def run(self) -> None:
        """Read until cancelled (the reader is connected: it starts from the streams' ends).
        Redis unavailable (a master failing over) delays the figures, never ends the feed:
        the lines an event named stay pending until they can be read."""
        while True:
            try:
                await self._reload()
                break
            except StoreUnavailable as exc:
                log.warning("live feed: %s", exc)
                await asyncio.sleep(self.tick)
        self._counted = self._requests()
        self.ready.set()
        next_tick = self.clock() + self.tick
        pending: set[str] = set()
        bars: list[dict[str, str]] = []
        events = 0
        while True:
            wait_ms = max(1, int((next_tick - self.clock()) * 1000))
            try:
                touched, new_bars = await self._read(wait_ms)
            except StoreUnavailable as exc:
                log.warning("live feed: %s", exc)
                await asyncio.sleep(self.tick)
                touched, new_bars = set(), []
            pending |= touched
            events += len(touched)
            bars += new_bars
            if self.clock() < next_tick:
                continue
            next_tick = self.clock() + self.tick
            try:
                if self.clock() - self._loaded_at > HIERARCHY_EVERY:
                    await self._reload()
                await self._publish(pending, bars, events)
            except StoreUnavailable as exc:
                log.warning("live feed: %s", exc)
                continue
            pending, bars, events = set(), [], 0

    async def _publish(self, touched: set[str], bars: list[dict[str, str]], events: int) -> None:
        changed: set[str] = set()
        known = [m for m in touched if m in self.hierarchy.account_of]
        if known:
            before = {m: self.lines.get(m) for m in known}
            await self._refresh(known)
            for m in known:
                units = self.hierarchy.ancestors_of(m)
                changed |= {_unit_key(lv, c) for lv, c in units}
                self._apply(units, before[m], self.lines.get(m))
        total, refused = self._requests()
        requests = max(0, total - self._counted[0])
        refusals = max(0, refused - self._counted[1])
        self._counted = (total, refused)
        self.last = {"requests": requests, "refusals": refusals, "events": events}
        msg = {
            "ts": int(self.clock() * 1000),
            "tick_ms": int(self.tick * 1000),
            **self.last,
            "units": {k: self.units[k] for k in sorted(changed) if k in self.units},
            "lines": {m: _line_json(s) for m in sorted(known) if (s := self.lines.get(m))},
            "bars": bars,
        }
        text = json.dumps(msg, separators=(",", ":"))
        for q in list(self.listeners):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(Message(msg, text))
        self.sent += 1


@contextlib.asynccontextmanager
async def live_feed(
    store: Store, redis_url: str, engine: Engine, metrics: Metrics, *, tick: float = TICK
) -> AsyncIterator[LiveFeed]:
    """One live feed for the process, its reader running for as long as the context lasts."""
    async with StreamReader.every_bucket(redis_url) as streams:
        feed = LiveFeed(store, streams, engine, metrics, tick=tick)
        task = asyncio.create_task(feed.run(), name="dashboard-live")
        try:
            yield feed
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
