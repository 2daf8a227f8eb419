"""Provisioning as the admin API and the CLI see it: callbacks, each account's barring view,
dead letters and their replay, reconciliation; and the consumers an OCS process runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ocs.metrics import Metrics
from ocs.provisioning.adapter import (
    BARRING_LEVELS,
    PermanentError,
    ProvisioningAdapter,
    TransientError,
    WebhookSender,
    with_timeout,
)
from ocs.provisioning.signing import verify
from ocs.provisioning.worker import (
    HLR_GROUP,
    WEBHOOK_GROUP,
    NotificationConsumer,
    ProvisioningHandler,
    RetryPolicy,
    WebhookHandler,
)
from ocs.store.errors import StoreUnavailable
from ocs.store.notify import DeadLetter, NotifyStore
from ocs.store.store import Store
from ocs.tasks import cancel_all_and_wait

log = logging.getLogger(__name__)

DEFAULT_POLICY = RetryPolicy()
#: Reconciliation: HLR queries at once (OCS_PROVISIONING_RECONCILE_CONCURRENCY), tries per
#: subscriber (with the policy's back-off), seconds a job's result is kept, and how many
#: differences and failures a result lists (the counts are always complete).
RECONCILE_CONCURRENCY: Final = 16
RECONCILE_ATTEMPTS: Final = 3
JOB_TTL: Final = 7 * 24 * 3600
JOB_LIST_MAX: Final = 1000


class ProvisioningError(Exception):
    """A request the provisioning side refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@dataclass(slots=True)
class ReconcileReport:
    """A reconciliation's progress, then its result: ``state`` running, done or failed (the
    job itself failed: Redis gone for good; per-subscriber failures are in ``failed``)."""

    id: str
    state: str = "running"
    started_at: int = 0
    updated_at: int = 0
    finished_at: int = 0
    checked: int = 0
    resent: int = 0
    unknown_to_hlr: int = 0
    failures: int = 0
    differing: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "started_at": self.started_at,
                "updated_at": self.updated_at, "finished_at": self.finished_at,
                "checked": self.checked, "resent": self.resent,
                "unknown_to_hlr": self.unknown_to_hlr, "failures": self.failures,
                "differing": sorted(self.differing, key=lambda d: d["msisdn"]),
                "failed": sorted(self.failed, key=lambda d: d["msisdn"]),
                "detail": self.detail}  # fmt: skip


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dead_json(d: DeadLetter) -> dict[str, Any]:
    out: dict[str, Any] = {"id": d.id, **d.fields}
    if "payload" in out:
        out["payload"] = json.loads(out["payload"])
    return out


class Provisioning:
    def __init__(
        self,
        notify: NotifyStore,
        store: Store,
        *,
        adapter: ProvisioningAdapter | None = None,
        webhooks: WebhookSender | None = None,
        callback_secret: str = "",
        policy: RetryPolicy = DEFAULT_POLICY,
        metrics: Metrics | None = None,
        reconcile_concurrency: int = RECONCILE_CONCURRENCY,
    ) -> None:
        self.notify = notify
        self.store = store
        self.adapter = adapter
        self.webhooks = webhooks
        self.callback_secret = callback_secret
        self.policy = policy
        self.metrics = metrics
        self.reconcile_concurrency = reconcile_concurrency
        self._jobs: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop the reconciliation jobs this process runs (their results say so)."""
        await cancel_all_and_wait(list(self._jobs))

    def consumers(self, **kw: Any) -> list[NotificationConsumer]:
        """The consumers this process should run (each leads only while it holds its lease)."""
        out = []
        if self.adapter is not None:
            handler = ProvisioningHandler(self.notify, self.adapter, self.metrics)
            out.append(NotificationConsumer(self.notify, handler, policy=self.policy, **kw))
        if self.webhooks is not None and self.webhooks.urls:
            wh = WebhookHandler(self.webhooks)
            out.append(NotificationConsumer(self.notify, wh, policy=self.policy, **kw))
        return out

    # -- callbacks ----------------------------------------------------------------------------

    async def callback(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """A provisioning system's confirmation (or rejection) of a command it accepted."""
        if not self.callback_secret:
            raise ProvisioningError(
                403, "Callbacks disabled", "set OCS_PROVISIONING_SECRET to accept callbacks"
            )
        try:
            verify(self.callback_secret, headers, body)
        except ValueError as exc:
            raise ProvisioningError(401, "Bad signature", str(exc)) from None
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("must be a JSON object")
            cid, status = data.get("command_id"), data.get("status")
            if not isinstance(cid, str) or not cid:
                raise ValueError("command_id: required string")
            if status not in ("applied", "rejected"):
                raise ValueError("status: applied or rejected")
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise ProvisioningError(400, "Bad callback", str(exc)) from None
        cmd = await self.notify.take_callback(cid)
        if cmd is None:
            raise ProvisioningError(
                404, "Unknown command", f"no command {cid} awaits a callback (unknown, "
                "already confirmed, or older than 7 days)",
            )  # fmt: skip
        sub, reason = cmd["sub"], str(data.get("reason") or data.get("detail") or "")
        line = {"command": cid, "barring": cmd["bar"], "seq": int(cmd["ver"]), "reason": reason}
        if status == "applied":
            known = await self.notify.hlr_state(sub)
            state = {"status": "applied", "command": cid, "detail": ""}
            if int(cmd["ver"]) >= int(known.get("confirmed_seq", "-1")):
                state |= {"confirmed": cmd["bar"], "confirmed_seq": cmd["ver"]}
            await self.notify.record(sub, {**line, "result": "confirmed"}, state=state)
        else:
            await self.notify.record(
                sub, {**line, "result": "rejected"},
                state={"status": "rejected", "command": cid, "detail": reason},
            )  # fmt: skip
            await self.notify.dead_letter(
                {
                    "kind": HLR_GROUP,
                    "sub": sub,
                    "command": cid,
                    "bar": cmd["bar"],
                    "ver": cmd["ver"],
                    "reason": f"rejected by the provisioning system: {reason}",
                    "attempts": "1",
                }
            )
        return {"command_id": cid, "status": status}

    # -- views ----------------------------------------------------------------------------------

    async def view(self, msisdn: str) -> dict[str, Any] | None:
        """The account's desired barring, the HLR's confirmed one, and the command history."""
        acct = await self.store.get_account(msisdn)
        if acct is None:
            return None
        hlr, history = await asyncio.gather(
            self.notify.hlr_state(msisdn), self.notify.history(msisdn)
        )
        return {
            "msisdn": msisdn,
            "desired": acct.barring,
            "state": acct.state,
            "barred_by_balance": acct.barred_by_balance,
            "hlr": {
                "confirmed": hlr.get("confirmed", "none"),
                "status": hlr.get("status", ""),
                "command": hlr.get("command", ""),
                "detail": hlr.get("detail", ""),
                "updated": int(hlr.get("updated", "0")),
            },
            "in_sync": hlr.get("confirmed", "none") == acct.barring,
            "history": history,
        }

    async def dead_letters(self, count: int = 100, before: str | None = None) -> list[Any]:
        return [_dead_json(d) for d in await self.notify.dead_letters(count, before)]

    async def replay(self, entry_id: str) -> dict[str, Any]:
        """Send a dead letter again. A barring command is re-sent as the account's barring
        *now* (the dead one may be out of date); a webhook, as it was."""
        d = await self.notify.dead_letter_by_id(entry_id)
        if d is None:
            raise ProvisioningError(404, "Unknown dead letter", f"no dead letter {entry_id}")
        f, sub = d.fields, d.fields.get("sub", "")
        if f.get("kind") == HLR_GROUP:
            acct = await self.store.get_account(sub)
            if acct is None:
                raise ProvisioningError(409, "Unknown subscriber", f"{sub} no longer exists")
            resent = await self.resend(sub, acct.barring, acct.version, "replay", acct.balance)
        else:
            fields = {"t": "resend", "for": WEBHOOK_GROUP, "payload": f.get("payload", "{}"),
                      "urls": f.get("urls", "")}  # fmt: skip
            resent = await self.notify.enqueue(sub, fields)
        await self.notify.drop_dead_letter(entry_id)
        return {"replayed": entry_id, "queued": resent}

    async def resend(self, msisdn: str, barring: str, version: int, reason: str,
                     balance: int) -> str:  # fmt: skip
        """Queue a barring command behind the subscriber's others."""
        if barring not in BARRING_LEVELS:
            raise ValueError(barring)
        entry = await self.notify.enqueue(
            msisdn,
            {"t": "resend", "for": HLR_GROUP, "bar": barring, "ver": str(version),
             "bal": str(balance), "reason": reason},
        )  # fmt: skip
        return entry

    async def start_reconcile(self) -> dict[str, Any]:
        """Start comparing every account's desired barring with the HLR's (re-sending what
        differs) as a background job of this process; its first progress report. Read it
        again with :meth:`reconcile_job` (from any process: it is kept in Redis)."""
        if self.adapter is None:
            raise ProvisioningError(
                409, "No provisioning adapter", "set OCS_PROVISIONING_URL to reconcile"
            )
        now = _now_ms()
        report = ReconcileReport(f"{now}-{secrets.token_hex(4)}", started_at=now, updated_at=now)
        await self.notify.save_job(report.id, report.to_json(), JOB_TTL)
        task = asyncio.create_task(self._run_reconcile(report), name=f"reconcile {report.id}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return report.to_json()

    async def reconcile_job(self, job_id: str) -> dict[str, Any] | None:
        return await self.notify.job(job_id)

    async def _run_reconcile(self, report: ReconcileReport) -> None:
        try:
            await self._reconcile_all(report)
        except asyncio.CancelledError:
            report.state, report.detail = "failed", "stopped: the OCS process shut down"
            with contextlib.suppress(StoreUnavailable):
                await self._save(report)
            raise
        except Exception as exc:  # a bug, or Redis gone for good: said in the result
            log.exception("reconcile %s failed", report.id)
            report.state, report.detail = "failed", f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(StoreUnavailable):
                await self._save(report)

    async def _save(self, report: ReconcileReport) -> None:
        report.updated_at = _now_ms()
        await self.notify.save_job(report.id, report.to_json(), JOB_TTL)

    async def _reconcile_all(self, report: ReconcileReport) -> None:
        """Every account, a page at a time, at most ``reconcile_concurrency`` HLR queries at
        once; a subscriber whose query keeps failing is listed in ``failed`` and the rest go
        on. Progress is saved after each page."""
        gate = asyncio.Semaphore(self.reconcile_concurrency)

        async def check(msisdn: str) -> None:
            async with gate:
                error = await self._reconcile_one(msisdn, report)
            if error is not None:
                report.failures += 1
                if len(report.failed) < JOB_LIST_MAX:
                    report.failed.append({"msisdn": msisdn, "error": error})

        cursor = 0
        while True:
            cursor, batch = await self.store.list_subscribers(cursor, 500)
            await asyncio.gather(*(check(m) for m in batch))
            if cursor == 0:
                break
            await self._save(report)
        report.state, report.finished_at = "done", _now_ms()
        await self._save(report)

    async def _reconcile_one(self, msisdn: str, report: ReconcileReport) -> str | None:
        """Compare (and re-send) one subscriber, retrying transient failures with back-off;
        None when done, else why it could not be."""
        adapter = self.adapter
        assert adapter is not None
        error = ""
        for attempt in range(1, RECONCILE_ATTEMPTS + 1):
            try:
                acct = await self.store.get_account(msisdn)
                if acct is None:
                    return None  # deleted meanwhile
                hlr = await with_timeout(adapter.query(msisdn))
                differs = (hlr or "none") != acct.barring
                if differs:
                    await self.resend(msisdn, acct.barring, acct.version, "reconcile",
                                      acct.balance)  # fmt: skip
            except PermanentError as exc:
                return f"refused: {exc}"
            except (TransientError, StoreUnavailable) as exc:
                error = str(exc)
            else:
                report.checked += 1
                report.unknown_to_hlr += hlr is None
                if differs:
                    report.resent += 1
                    if len(report.differing) < JOB_LIST_MAX:
                        report.differing.append(
                            {"msisdn": msisdn, "desired": acct.barring, "hlr": hlr or "none"}
                        )
                return None
            if attempt < RECONCILE_ATTEMPTS:
                await asyncio.sleep(self.policy.delay(attempt))
        return f"failed {RECONCILE_ATTEMPTS} times: {error}"
