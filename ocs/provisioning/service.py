"""Provisioning as the admin API and the CLI see it: callbacks, each account's barring view,
dead letters and their replay, reconciliation; and the consumers an OCS process runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ocs.api.metrics import Metrics
from ocs.provisioning.adapter import BARRING_LEVELS, ProvisioningAdapter, WebhookSender
from ocs.provisioning.signing import verify
from ocs.provisioning.worker import (
    HLR_GROUP,
    WEBHOOK_GROUP,
    NotificationConsumer,
    ProvisioningHandler,
    RetryPolicy,
    WebhookHandler,
)
from ocs.store.notify import DeadLetter, NotifyStore
from ocs.store.store import Store

DEFAULT_POLICY = RetryPolicy()


class ProvisioningError(Exception):
    """A request the provisioning side refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    checked: int
    differing: list[dict[str, str]]
    unknown_to_hlr: int

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "resent": len(self.differing),
                "differing": self.differing, "unknown_to_hlr": self.unknown_to_hlr}  # fmt: skip


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
    ) -> None:
        self.notify = notify
        self.store = store
        self.adapter = adapter
        self.webhooks = webhooks
        self.callback_secret = callback_secret
        self.policy = policy
        self.metrics = metrics

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

    async def reconcile(self, *, concurrency: int = 32) -> ReconcileReport:
        """Compare every account's desired barring with the HLR's and re-send what differs."""
        if self.adapter is None:
            raise ProvisioningError(
                409, "No provisioning adapter", "set OCS_PROVISIONING_URL to reconcile"
            )
        adapter = self.adapter
        differing: list[dict[str, str]] = []
        checked = unknown = 0
        gate = asyncio.Semaphore(concurrency)

        async def check(msisdn: str) -> None:
            nonlocal checked, unknown
            async with gate:
                acct = await self.store.get_account(msisdn)
                if acct is None:
                    return
                hlr = await adapter.query(msisdn)
            checked += 1
            if hlr is None:
                unknown += 1
            if (hlr or "none") != acct.barring:
                differing.append({"msisdn": msisdn, "desired": acct.barring, "hlr": hlr or "none"})
                await self.resend(msisdn, acct.barring, acct.version, "reconcile", acct.balance)

        cursor = 0
        while True:
            cursor, batch = await self.store.list_subscribers(cursor, 500)
            await asyncio.gather(*(check(m) for m in batch))
            if cursor == 0:
                break
        differing.sort(key=lambda d: d["msisdn"])
        return ReconcileReport(checked, differing, unknown)
