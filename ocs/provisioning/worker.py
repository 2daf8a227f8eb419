"""The consumers of the notification streams: barring commands to the HLR, and webhooks.

A ``NotificationConsumer`` reads one consumer group over the 64 bucket streams, at least
once: an entry is acknowledged only when its handler succeeded, failed for good, or ran out of
retries (then it is dead-lettered). One process at a time consumes a group (a Redis lease);
a process that takes over claims what the last one left unacknowledged and handles it first.
Entries of one subscriber are handled strictly one after the other, in stream order, so an
unbar never overtakes the bar it lifts; different subscribers proceed concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ocs.metrics import Metrics
from ocs.provisioning.adapter import (
    BarringCommand,
    CommandOutcome,
    PermanentError,
    ProvisioningAdapter,
    TransientError,
    WebhookSender,
    with_timeout,
)
from ocs.store.errors import StoreUnavailable
from ocs.store.notify import Notification, NotifyStore, honour_cancellation
from ocs.tasks import cancel_all_and_wait, cancel_and_wait

log = logging.getLogger(__name__)

HLR_GROUP: Final = "hlr"
WEBHOOK_GROUP: Final = "webhooks"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with jitter: attempt n waits ``base * 2**(n-1)`` seconds (at most
    ``cap``) times a random factor in [0.5, 1); after ``attempts`` tries the entry is
    dead-lettered."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 60.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        step: float = self.base * 2.0 ** (attempt - 1)
        return min(self.cap, step) * (0.5 + rand() / 2)


class Handler(Protocol):
    group: str

    async def handle(self, note: Notification) -> None:
        """Act on one entry; TransientError to be retried, PermanentError to give up."""
        ...

    async def failed(self, note: Notification, reason: str, attempts: int) -> dict[str, str]:
        """Record that the entry failed for good; returns the dead letter's fields."""
        ...


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class NotificationConsumer:
    def __init__(
        self,
        notify: NotifyStore,
        handler: Handler,
        *,
        policy: RetryPolicy | None = None,
        me: str | None = None,
        max_in_flight: int = 512,
        lease_ms: int = 10_000,
        block_ms: int = 1_000,
    ) -> None:
        self.notify = notify
        self.handler = handler
        self.group = handler.group
        self.policy = policy or RetryPolicy()
        self.me = me or consumer_name()
        self.lease_ms = lease_ms
        self.block_ms = block_ms
        self.max_in_flight = max_in_flight
        self._capacity = asyncio.Semaphore(max_in_flight)
        self._lanes: dict[str, deque[Notification]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set while this process holds the lease and consumes.
        self.leading = asyncio.Event()
        self.handled = 0
        self.dead = 0

    async def run(self) -> None:
        """Consume until cancelled: wait for the lease, then lead until it is lost."""
        try:
            while True:
                honour_cancellation()
                try:
                    if await self.notify.take_lease(self.group, self.me, self.lease_ms):
                        await self._lead()
                        continue
                except StoreUnavailable as exc:
                    log.warning("%s consumer: %s", self.group, exc)
                await asyncio.sleep(self.lease_ms / 3000)
        finally:
            await self._stop_lanes()
            with contextlib.suppress(StoreUnavailable):
                await self.notify.drop_lease(self.group, self.me)

    async def _lead(self) -> None:
        lost = asyncio.Event()
        renew = asyncio.create_task(self._keep_lease(lost), name=f"{self.group}-lease")
        self.leading.set()
        try:
            await self.notify.ensure_group(self.group)
            claimed = await self.notify.claim_all(self.group, self.me)
            if claimed:
                log.info("%s consumer: took over %d unacknowledged entries", self.group, claimed)
            # What this consumer (or the one before) read and did not acknowledge comes
            # first, in stream order; it is read once, then only new entries.
            after = dict.fromkeys(self.notify.streams, "0")
            while not lost.is_set():
                honour_cancellation()
                notes = await self.notify.read(self.group, self.me, ids=after, count=500)
                if not notes:
                    break
                for note in notes:
                    after[note.stream] = note.id
                    await self._dispatch(note)
            while not lost.is_set():
                honour_cancellation()
                count = max(1, min(500, self._free()))
                notes = await self.notify.read(
                    self.group, self.me, ids=None, count=count, block_ms=self.block_ms
                )
                for note in notes:
                    await self._dispatch(note)
        finally:
            self.leading.clear()
            await cancel_and_wait(renew)
            if lost.is_set():
                log.warning("%s consumer: lease lost; stopping", self.group)
                await self._stop_lanes()

    async def _keep_lease(self, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            honour_cancellation()
            try:
                held = await self.notify.take_lease(self.group, self.me, self.lease_ms)
            except StoreUnavailable:
                continue  # still ours until it expires; try again
            if not held:
                lost.set()
                return

    def _free(self) -> int:
        return self.max_in_flight - sum(len(q) for q in self._lanes.values())

    async def _dispatch(self, note: Notification) -> None:
        await self._capacity.acquire()
        q = self._lanes.get(note.subscriber)
        if q is None:
            q = self._lanes[note.subscriber] = deque()
            task = asyncio.create_task(self._lane(note.subscriber, q))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        q.append(note)

    async def _lane(self, subscriber: str, q: deque[Notification]) -> None:
        try:
            while q:
                await self._process(q[0])
                q.popleft()
                self._capacity.release()
        finally:
            if self._lanes.get(subscriber) is q:
                del self._lanes[subscriber]

    async def _process(self, note: Notification) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.handler.handle(note)
                self.handled += 1
                break
            except (TransientError, StoreUnavailable) as exc:
                if attempt >= self.policy.attempts:
                    await self._dead(note, str(exc), attempt)
                    break
                delay = self.policy.delay(attempt)
                self._count("ocs_provisioning_retries")
                log.info("%s %s: %s; retry %d in %.1f s", self.group, note.id, exc, attempt, delay)
                await asyncio.sleep(delay)
            except PermanentError as exc:
                await self._dead(note, str(exc), attempt)
                break
            except Exception as exc:  # a bug, or an adapter raising what it should not
                log.exception("%s %s: handler failed", self.group, note.id)
                await self._dead(note, f"internal error: {exc!r}", attempt)
                break
        await self._settle(lambda: self.notify.ack(self.group, note))

    def _count(self, counter: str) -> None:
        metrics: Metrics | None = getattr(self.handler, "metrics", None)
        if metrics is not None:
            metrics.inc(counter, (self.group,))

    async def _dead(self, note: Notification, reason: str, attempts: int) -> None:
        log.warning("%s %s failed for good: %s", self.group, note.id, reason)
        self.dead += 1
        self._count("ocs_provisioning_dead_letters_added")

        async def park() -> None:
            fields = await self.handler.failed(note, reason, attempts)
            await self.notify.dead_letter(fields)

        await self._settle(park)

    async def _settle(self, work: Callable[[], Any]) -> None:
        """Bookkeeping must happen before the lane moves on: retried while Redis is away."""
        delay = self.policy.base
        while True:
            try:
                await work()
                return
            except StoreUnavailable as exc:
                log.warning("%s consumer: %s", self.group, exc)
                await asyncio.sleep(delay)
                delay = min(self.policy.cap, delay * 2)

    async def _stop_lanes(self) -> None:
        # (a lane's error was its own: each ends in _process, which catches and logs them)
        await cancel_all_and_wait(list(self._tasks))
        self._lanes.clear()
        self._capacity = asyncio.Semaphore(self.max_in_flight)


# -- the handlers ---------------------------------------------------------------------------------


def _crossings(text: str) -> list[dict[str, Any]]:
    out = []
    for item in text.split(","):
        if item:
            below, _, action = item.partition(":")
            out.append({"below": int(below), "action": action})
    return out


def barring_command(note: Notification) -> BarringCommand | None:
    """The command a notification asks of the HLR, if any: a change of the barring the
    network should apply, or a re-send (reconciliation, an operator's replay)."""
    f = note.fields
    kind, sub = f.get("t"), note.subscriber
    if kind == "barring":
        if f.get("bar") == f.get("was"):
            return None  # a crossing that changes no barring (e.g. "notify")
        reason = "threshold" if f.get("down") or f.get("up") else "state"
        cid = f"{sub}:{f.get('ver', '0')}"
    elif kind == "resend" and f.get("for") == HLR_GROUP:
        reason, cid = f.get("reason", "reconcile"), f.get("cid", f"{sub}:{note.id}")
    else:
        return None
    try:
        return BarringCommand(
            command_id=cid,
            msisdn=sub,
            barring=f["bar"],
            seq=int(f.get("ver") or 0),
            reason=reason,
            balance=int(f.get("bal") or 0),
        )
    except (KeyError, ValueError):
        log.error("malformed notification %s: %r", note.id, dict(f))
        return None


class ProvisioningHandler:
    """Barring commands, through the adapter; records every outcome per subscriber."""

    group = HLR_GROUP

    def __init__(
        self, notify: NotifyStore, adapter: ProvisioningAdapter, metrics: Metrics | None = None
    ) -> None:
        self.notify = notify
        self.adapter = adapter
        self.metrics = metrics

    async def handle(self, note: Notification) -> None:
        cmd = barring_command(note)
        if cmd is None:
            return
        line = {"command": cmd.command_id, "barring": cmd.barring, "seq": cmd.seq,
                "reason": cmd.reason}  # fmt: skip
        t0 = time.perf_counter()
        try:
            outcome = await with_timeout(self.adapter.apply(cmd))
        except (TransientError, PermanentError) as exc:
            self._observe(cmd, "error", t0)
            await self.notify.record(
                cmd.msisdn, {**line, "result": "error", "detail": str(exc)},
                state={"status": "retrying", "command": cmd.command_id, "detail": str(exc)},
            )  # fmt: skip
            raise
        self._observe(cmd, str(outcome), t0)
        if outcome is CommandOutcome.APPLIED:
            await self.notify.record(
                cmd.msisdn, {**line, "result": "applied"},
                state={"status": "applied", "command": cmd.command_id, "detail": "",
                       "confirmed": cmd.barring, "confirmed_seq": str(cmd.seq)},
            )  # fmt: skip
        else:
            await self.notify.await_callback(
                cmd.command_id,
                {"sub": cmd.msisdn, "bar": cmd.barring, "ver": str(cmd.seq),
                 "reason": cmd.reason, "bal": str(cmd.balance)},
            )  # fmt: skip
            await self.notify.record(
                cmd.msisdn, {**line, "result": "accepted"},
                state={"status": "accepted", "command": cmd.command_id, "detail": ""},
            )  # fmt: skip

    def _observe(self, cmd: BarringCommand, result: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_client("hlr", cmd.action, result, time.perf_counter() - t0)

    async def failed(self, note: Notification, reason: str, attempts: int) -> dict[str, str]:
        cmd = barring_command(note)
        assert cmd is not None  # handle() acts on nothing else
        await self.notify.record(
            cmd.msisdn,
            {"command": cmd.command_id, "barring": cmd.barring, "seq": cmd.seq,
             "result": "dead-lettered", "detail": reason},
            state={"status": "failed", "command": cmd.command_id, "detail": reason},
        )  # fmt: skip
        return {
            "kind": HLR_GROUP, "sub": cmd.msisdn, "command": cmd.command_id,
            "bar": cmd.barring, "ver": str(cmd.seq), "reason": reason,
            "attempts": str(attempts), "entry": note.id,
        }  # fmt: skip


def webhook_payload(note: Notification) -> dict[str, Any] | None:
    """What a webhook receives for a notification (None: nothing to tell)."""
    f = note.fields
    if f.get("t") == "resend" and f.get("for") == WEBHOOK_GROUP:
        payload: dict[str, Any] = json.loads(f.get("payload", "{}"))
        return payload
    if f.get("t") != "barring":
        return None
    return {
        "id": note.id,
        "event": "threshold" if f.get("down") or f.get("up") else "barring",
        "msisdn": note.subscriber,
        "balance": int(f.get("bal") or 0),
        "barring": f.get("bar", ""),
        "previous_barring": f.get("was", ""),
        "crossed_down": _crossings(f.get("down", "")),
        "crossed_up": _crossings(f.get("up", "")),
        "state": f.get("st", ""),
        "plan": f.get("plan", ""),
        "version": int(f.get("ver") or 0),
        "at": int(f.get("ts") or 0),
    }


class WebhookHandler:
    """Every barring change and threshold crossing, to every configured URL."""

    group = WEBHOOK_GROUP

    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender
        #: URLs each entry reached already (a retry goes only to the others).
        self._done: dict[str, set[str]] = {}

    def _targets(self, note: Notification) -> list[str]:
        only = note.fields.get("urls")
        urls = only.split(" ") if only else self.sender.urls
        done = self._done.get(note.id, set())
        return [u for u in urls if u not in done]

    async def handle(self, note: Notification) -> None:
        payload = webhook_payload(note)
        if payload is None:
            return
        done = self._done.setdefault(note.id, set())
        transient: list[str] = []
        permanent: list[str] = []
        for url in self._targets(note):
            try:
                await with_timeout(self.sender.send(url, payload))
                done.add(url)
            except TransientError as exc:
                transient.append(str(exc))
            except PermanentError as exc:
                permanent.append(str(exc))
        if transient:
            raise TransientError("; ".join(transient + permanent))
        if permanent:
            raise PermanentError("; ".join(permanent))
        self._done.pop(note.id, None)

    async def failed(self, note: Notification, reason: str, attempts: int) -> dict[str, str]:
        urls = self._targets(note)
        self._done.pop(note.id, None)
        return {
            "kind": WEBHOOK_GROUP, "sub": note.subscriber, "urls": " ".join(urls),
            "payload": json.dumps(webhook_payload(note), separators=(",", ":")),
            "reason": reason, "attempts": str(attempts), "entry": note.id,
        }  # fmt: skip
