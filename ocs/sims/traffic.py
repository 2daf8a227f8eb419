"""A small switch simulator: places calls, data sessions and SMS through the native protocol,
the way an MSC or a gateway would, and reports what happens.

Time runs faster than the wall clock: one simulated second lasts ``1 / speed`` real seconds,
so a 60-second grant is used up in a fraction of a second at the default speed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ocs.money import format_money
from protocols.native import NativeClient, Reply


@dataclass
class Tally:
    requests: int = 0
    granted: int = 0
    refused: int = 0
    denied: int = 0
    errors: int = 0
    charged: int = 0
    calls: int = 0
    sessions: int = 0
    sms: int = 0
    by_result: dict[str, int] = field(default_factory=dict)

    def count(self, reply: Reply) -> None:
        self.requests += 1
        self.by_result[reply.result] = self.by_result.get(reply.result, 0) + 1
        self.charged += reply.charged
        if reply.result == "credit-limit-reached":
            self.refused += 1
        elif reply.result == "service-denied":
            self.denied += 1
        elif not reply.ok:
            self.errors += 1
        elif reply.granted:
            self.granted += 1


Report = Callable[[str], None]

#: Called numbers, as a handset dials them, and how often (national, mobile, abroad, free,
#: premium), and where the caller is (home network, roaming in the EU, further away).
DESTINATIONS = (
    ("0171 2345678", 40), ("030 1234567", 30), ("+33 1 23456789", 8), ("001 212 5550100", 4),
    ("0800 1234567", 5), ("0900 1234567", 3), ("+81 3 12345678", 2),
)  # fmt: skip
LOCATIONS = (("26201", 90), ("20810", 7), ("310260", 3))


class SwitchSimulator:
    """``callers`` concurrent lines, each placing one call, session or SMS after another."""

    def __init__(
        self,
        client: NativeClient,
        subscribers: Sequence[str],
        *,
        callers: int = 32,
        speed: float = 200.0,
        mean_holding: float = 100.0,
        seed: int = 1,
        report: Report | None = None,
    ) -> None:
        self.client = client
        self.subscribers = list(subscribers)
        self.callers = callers
        self.speed = speed
        self.mean_holding = mean_holding
        self.rng = random.Random(seed)
        self.report = report or (lambda line: None)
        self.tally = Tally()
        self._ids = itertools.count(1)

    async def _sleep(self, simulated_seconds: float) -> None:
        await asyncio.sleep(simulated_seconds / self.speed)

    def _pick(self, table: tuple[tuple[str, int], ...]) -> str:
        return self.rng.choices([v for v, _ in table], [w for _, w in table])[0]

    async def call(self, msisdn: str, service: str = "voice") -> None:
        """One call: reserve, then report each grant's use, then release."""
        sid = f"sim-{next(self._ids)}"
        holding = max(1, int(self.rng.expovariate(1 / self.mean_holding)))
        t = self.tally
        t.calls += 1
        to, where = self._pick(DESTINATIONS), self._pick(LOCATIONS)
        r = await self.client.reserve(sid, msisdn, service, seq=0, destination=to, location=where)
        t.count(r)
        roaming = "" if where == "26201" else f", roaming in {where}"
        if not r.ok:
            self.report(f"call  {msisdn} -> {to}{roaming} refused: {r.result} {r.detail}".rstrip())
            return
        self.report(
            f"call  {msisdn} -> {to}{roaming} granted {r.granted} s "
            f"(balance {format_money(r.balance)})"
        )
        left, seq = holding, 0
        while True:
            use = min(left, r.granted)
            await self._sleep(use)
            left -= use
            seq += 1
            if left == 0 or r.granted == 0 or r.final:
                rel = await self.client.release(sid, seq=seq, used=use, subscriber=msisdn)
                t.count(rel)
                end = "ended" if left == 0 else "cut off: out of credit"
                self.report(
                    f"call  {msisdn} {end} after {holding - left} s, "
                    f"balance {format_money(rel.balance)}"
                )
                return
            r = await self.client.commit(sid, seq=seq, used=use, subscriber=msisdn)
            t.count(r)
            if not r.ok and not r.granted:
                self.report(f"call  {msisdn} cut off after {holding - left} s: {r.result}")
                await self.client.release(sid, seq=seq + 1, used=0, subscriber=msisdn)
                return

    async def data_session(self, msisdn: str) -> None:
        sid = f"sim-{next(self._ids)}"
        t = self.tally
        t.sessions += 1
        r = await self.client.reserve(sid, msisdn, "data", seq=0, location=self._pick(LOCATIONS))
        t.count(r)
        if not r.ok:
            self.report(f"data  {msisdn} refused: {r.result}")
            return
        volume = int(self.rng.expovariate(1 / 8_000_000))
        left, seq = volume, 0
        while True:
            use = min(left, r.granted)
            await self._sleep(5)
            left -= use
            seq += 1
            if left == 0 or r.final or r.granted == 0:
                rel = await self.client.release(sid, seq=seq, used=use, subscriber=msisdn)
                t.count(rel)
                self.report(
                    f"data  {msisdn} used {(volume - left) / 1e6:.1f} MB, "
                    f"balance {format_money(rel.balance)}"
                )
                return
            r = await self.client.commit(sid, seq=seq, used=use, subscriber=msisdn)
            t.count(r)

    async def sms(self, msisdn: str) -> None:
        t = self.tally
        t.sms += 1
        r = await self.client.debit(
            msisdn, "sms", key=f"sms-{next(self._ids)}", destination=self._pick(DESTINATIONS)
        )
        t.count(r)
        if r.ok:
            self.report(f"sms   {msisdn} charged {format_money(r.charged)}")
        else:
            self.report(f"sms   {msisdn} refused: {r.result}")

    async def _line(self) -> None:
        while True:
            msisdn = self.rng.choice(self.subscribers)
            x = self.rng.random()
            try:
                if x < 0.6:
                    await self.call(msisdn)
                elif x < 0.8:
                    await self.data_session(msisdn)
                else:
                    await self.sms(msisdn)
            except TimeoutError as exc:
                # The OCS did not answer in time (a loaded machine): a switch gives up on
                # that call and places the next; what the call held expires on the OCS.
                self.tally.errors += 1
                self.report(f"{'':5} {msisdn}: {exc}, given up")
            await self._sleep(self.rng.expovariate(1 / 5))

    async def run(self) -> None:
        """Run every line until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.callers):
                tg.create_task(self._line())
