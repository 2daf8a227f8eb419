"""An HLR simulator behind the provisioning protocol (``ocs hlr-sim``; docs/barring.md).

It keeps each subscriber's barring flags, applies commands idempotently (by ``command_id``)
and in order (a command older than the last one applied, by ``seq``, is acknowledged and
ignored), and can be told to fail, to be slow, or to answer asynchronously and confirm by
callback, so the worker's retries, ordering and callbacks can be seen working. The demo and
the tests use it; a real deployment points ``OCS_PROVISIONING_URL`` at its gateway instead.

    POST /v1/commands              a command (signed when a secret is set): 200 applied,
                                   202 accepted (async mode), 503 when told to fail
    GET  /v1/subscribers/{msisdn}  {"msisdn", "barring", "seq", "command", "updated"}
    GET  /v1/subscribers           every subscriber it holds
    GET  /v1/log                   the commands applied, in order
    GET|POST /v1/control           the behaviour: fail_next, fail_rate, delay_ms, async,
                                   async_delay_ms, reject_next, down
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ocs.api.problems import problem
from ocs.provisioning.adapter import BARRING_LEVELS
from ocs.provisioning.signing import SignatureError, sign, verify
from ocs.tasks import cancel_all_and_wait
from tariffs.digits import is_digits

log = logging.getLogger(__name__)


@dataclass
class Behaviour:
    """How the simulator answers (settable at run time through /v1/control)."""

    #: Answer the next N commands with 503.
    fail_next: int = 0
    #: Answer this share of commands with 503 (0..1).
    fail_rate: float = 0.0
    #: Wait this long before answering.
    delay_ms: int = 0
    #: Answer 202 and confirm by callback after ``async_delay_ms``.
    async_: bool = False
    async_delay_ms: int = 50
    #: Reject (by callback, in async mode; else 422) the next N commands.
    reject_next: int = 0
    #: Refuse everything with 503 (the HLR is down).
    down: bool = False
    #: Answer the next N queries (GET /v1/subscribers/{msisdn}) of these subscribers with
    #: 503, and every query only after ``query_delay_ms`` (a slow HLR).
    fail_queries: dict[str, int] = field(default_factory=dict)
    query_delay_ms: int = 0


@dataclass
class Line:
    """One subscriber in the simulated HLR."""

    msisdn: str
    barring: str = "none"
    seq: int = -1
    command: str = ""
    updated: float = 0.0


@dataclass
class Applied:
    command_id: str
    msisdn: str
    barring: str
    seq: int
    #: time.time() when applied.
    at: float
    stale: bool = False


@dataclass
class HlrSimulator:
    secret: str = ""
    behaviour: Behaviour = field(default_factory=Behaviour)
    clock: Callable[[], float] = time.time
    lines: dict[str, Line] = field(default_factory=dict)
    log: list[Applied] = field(default_factory=list)
    #: Answers by command_id (a repeated command gets the first answer and changes nothing).
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    received: int = 0
    #: Queries being answered now, and the most there were at once.
    queries_in_flight: int = 0
    max_queries_in_flight: int = 0
    #: Called with each command applied (the demo prints them).
    on_apply: Callable[[Applied], None] | None = None
    _changed: asyncio.Condition | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _http: aiohttp.ClientSession | None = None

    # -- state ----------------------------------------------------------------------------------

    def barring(self, msisdn: str) -> str:
        line = self.lines.get(msisdn)
        return line.barring if line else "none"

    def _apply(self, cmd: dict[str, Any]) -> Applied:
        msisdn, seq = cmd["msisdn"], cmd["seq"]
        line = self.lines.setdefault(msisdn, Line(msisdn))
        entry = Applied(cmd["command_id"], msisdn, cmd["barring"], seq, self.clock())
        if seq < line.seq:
            entry.stale = True  # an older decision than the one in force: acknowledged only
        else:
            line.barring, line.seq, line.command, line.updated = (
                cmd["barring"], seq, cmd["command_id"], entry.at,
            )  # fmt: skip
        self.log.append(entry)
        if self.on_apply is not None:
            self.on_apply(entry)
        self._notify()
        return entry

    def _notify(self) -> None:
        if self._changed is not None:
            cond = self._changed

            async def wake() -> None:
                async with cond:
                    cond.notify_all()

            self._spawn(wake())

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (checked on every change); bound it with
        ``asyncio.timeout``."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(predicate)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/commands", self._command)
        app.router.add_get("/v1/subscribers/{msisdn}", self._subscriber)
        app.router.add_get("/v1/subscribers", self._subscribers)
        app.router.add_get("/v1/log", self._log)
        app.router.add_get("/v1/control", self._get_control)
        app.router.add_post("/v1/control", self._set_control)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await cancel_all_and_wait(list(self._tasks))
        if self._http is not None:
            await self._http.close()

    async def _command(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received += 1
        self._notify()
        b = self.behaviour
        if self.secret:
            try:
                verify(self.secret, request.headers, body)
            except SignatureError as exc:
                return problem(401, "Bad signature", str(exc))
        try:
            cmd = json.loads(body)
            if not isinstance(cmd, dict):
                raise ValueError("not an object")
            if not isinstance(cmd.get("command_id"), str) or not cmd["command_id"]:
                raise ValueError("command_id: required string")
            if not is_digits(cmd.get("msisdn")):
                raise ValueError("msisdn: required digits")
            if cmd.get("barring") not in BARRING_LEVELS:
                raise ValueError(f"barring: one of {', '.join(BARRING_LEVELS)}")
            if not isinstance(cmd.get("seq"), int) or isinstance(cmd.get("seq"), bool):
                raise ValueError("seq: required integer")
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            return problem(400, "Bad command", str(exc) or "JSON nested too deep")
        if b.delay_ms:
            await asyncio.sleep(b.delay_ms / 1000)
        previous = self.answers.get(cmd["command_id"])
        if previous is not None:
            return web.json_response(previous[1], status=previous[0])
        if b.down:
            return problem(503, "HLR unavailable", "down (simulated)")
        if b.fail_next > 0:
            b.fail_next -= 1
            return problem(503, "HLR unavailable", "failure (simulated)")
        if b.fail_rate and random.random() < b.fail_rate:
            return problem(503, "HLR unavailable", "random failure (simulated)")
        if b.async_ and cmd.get("callback_url"):
            answer = {"command_id": cmd["command_id"], "status": "accepted"}
            self.answers[cmd["command_id"]] = (202, answer)
            reject = b.reject_next > 0
            if reject:
                b.reject_next -= 1
            self._spawn(self._confirm_later(cmd, reject))
            return web.json_response(answer, status=202)
        if b.reject_next > 0:
            b.reject_next -= 1
            answer = {"command_id": cmd["command_id"], "status": "rejected",
                      "detail": "rejected (simulated)"}  # fmt: skip
            self.answers[cmd["command_id"]] = (422, answer)
            return web.json_response(answer, status=422)
        entry = self._apply(cmd)
        answer = {"command_id": cmd["command_id"], "status": "stale" if entry.stale else "applied",
                  "barring": self.barring(cmd["msisdn"])}  # fmt: skip
        self.answers[cmd["command_id"]] = (200, answer)
        return web.json_response(answer)

    async def _confirm_later(self, cmd: dict[str, Any], reject: bool) -> None:
        await asyncio.sleep(self.behaviour.async_delay_ms / 1000)
        if reject:
            result = {"command_id": cmd["command_id"], "status": "rejected",
                      "reason": "rejected (simulated)"}  # fmt: skip
        else:
            self._apply(cmd)
            result = {"command_id": cmd["command_id"], "status": "applied",
                      "barring": cmd["barring"]}  # fmt: skip
        body = json.dumps(result).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers.update(sign(self.secret, body))
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(5):
            try:
                async with self._http.post(cmd["callback_url"], data=body, headers=headers) as r:
                    if r.status < 500:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("hlr-sim callback %s: %s", cmd["command_id"], exc)
            await asyncio.sleep(0.2 * 2**attempt)

    async def _subscriber(self, request: web.Request) -> web.Response:
        msisdn = request.match_info["msisdn"]
        b = self.behaviour
        self.queries_in_flight += 1
        self.max_queries_in_flight = max(self.max_queries_in_flight, self.queries_in_flight)
        try:
            if b.query_delay_ms:
                await asyncio.sleep(b.query_delay_ms / 1000)
        finally:
            self.queries_in_flight -= 1
        if b.down:
            return problem(503, "HLR unavailable", "down (simulated)")
        if b.fail_queries.get(msisdn, 0) > 0:
            b.fail_queries[msisdn] -= 1
            return problem(503, "HLR unavailable", "query failure (simulated)")
        line = self.lines.get(msisdn, Line(msisdn))
        return web.json_response(asdict(line))

    async def _subscribers(self, request: web.Request) -> web.Response:
        return web.json_response({"subscribers": [asdict(x) for x in self.lines.values()]})

    async def _log(self, request: web.Request) -> web.Response:
        return web.json_response({"applied": [asdict(x) for x in self.log]})

    def _control(self) -> dict[str, Any]:
        d = asdict(self.behaviour)
        d["async"] = d.pop("async_")
        return d

    async def _get_control(self, request: web.Request) -> web.Response:
        return web.json_response(self._control())

    async def _set_control(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("not an object")
            for k, v in data.items():
                name = "async_" if k == "async" else k
                if name not in Behaviour.__dataclass_fields__:
                    raise ValueError(f"unknown setting {k!r}")
                current = getattr(self.behaviour, name)
                if type(v) is not type(current) and not (
                    isinstance(current, float) and type(v) is int
                ):
                    raise ValueError(f"{k}: must be {type(current).__name__}")
                setattr(self.behaviour, name, v)
        except ValueError as exc:
            return problem(400, "Bad control", str(exc))
        return web.json_response(self._control())


async def serve(sim: HlrSimulator, host: str, port: int) -> web.AppRunner:
    """Start the simulator's HTTP server; returns the runner (``await runner.cleanup()``)."""
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        return int(addr[1])
    raise RuntimeError("not listening")
