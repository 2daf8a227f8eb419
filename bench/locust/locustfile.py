"""Locust users for the OCS (docs/load-testing.md).

* ``Gateway``: a network element (a PGW, an MSC, an SMSC rolled into one) with one connection
  to the OCS, native protocol or Diameter Gy (``--transport``). New sessions arrive as a
  Poisson process (``--arrival-rate`` per gateway and second); each runs in a greenlet of its
  own: calls and data sessions reserve, report at the grant's end or validity, and release,
  holding for an exponential time (mean ``--mean-holding`` simulated seconds, each lasting
  ``--time-factor`` real seconds); an SMS is one direct debit. ``--closed-loop N`` makes each
  gateway run N sessions back to back instead (capacity runs).
* ``CustomerCare``: one user that tops subscribers up and reads balances through the admin
  API (``--host``), ``--topup-rate`` and ``--balance-rate`` per second.

So ``-u 11`` is 10 gateways and the customer-care desk. The subscribers are the population of
``bench.locust.traffic.population(--subscribers)``, loaded beforehand (``bench/load.py``
loads it; ``python -m bench.load --populate-only`` loads it into any OCS).

Every request is reported to Locust under its message type (reserve, commit, release, event;
ccr-i, ccr-u, ccr-t, event; topup, balance); refusals for lack of credit and barring are
successes (business outcomes); errors, timeouts and lost connections are failures, named by
their result code. When the test stops, every gateway reports its open sessions' usage and
ends them (``--drain-timeout``) before it disconnects.

    PYTHONPATH=. .venv/bin/locust -f bench/locust/locustfile.py --host http://127.0.0.1:8080
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

# Locust puts this file's folder on sys.path; the packages live at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gevent
import gevent.event
import gevent.pool
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from bench.credentials import native_key_from_env
from bench.locust.network import FAILED, Caller, GyNetwork, NativeNetwork, Network
from bench.locust.results import Results
from bench.locust.traffic import (
    KINDS,
    Subscriber,
    Traffic,
    diameter_kinds,
    population,
    topup_amount,
)
from ocs.money import format_money

#: What this process measured (a worker hands it to the master with each report).
RESULTS = Results()
#: Gateways alive in this process (to drain them all at once when the test stops).
GATEWAYS: weakref.WeakSet[Gateway] = weakref.WeakSet()
_gateway_numbers = itertools.count(1)


class ChargingFailure(Exception):
    """A failed charging request, as Locust lists it (the result code and the detail)."""


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # (On the parser itself: only its add_argument knows include_in_web_ui.)
    add = parser.add_argument
    add(
        "--transport",
        choices=["native", "diameter"],
        default="native",
        env_var="LOAD_TRANSPORT",
        help="how gateways charge: native protocol or Diameter Gy",
    )
    add(
        "--ocs-host",
        default="",
        env_var="LOAD_OCS_HOST",
        help="host of the native and Diameter ports (default: the host of --host)",
    )
    add("--native-port", type=int, default=3869, env_var="LOAD_NATIVE_PORT")
    add("--diameter-port", type=int, default=3868, env_var="LOAD_DIAMETER_PORT")
    add(
        "--subscribers",
        type=int,
        default=10_000,
        env_var="LOAD_SUBSCRIBERS",
        help="population size (must be loaded: python -m bench.load --populate-only)",
    )
    add(
        "--arrival-rate",
        type=float,
        default=20.0,
        env_var="LOAD_ARRIVAL_RATE",
        help="new sessions per second per gateway (Poisson)",
    )
    add(
        "--time-factor",
        type=float,
        default=0.05,
        env_var="LOAD_TIME_FACTOR",
        help="real seconds per simulated second (0: no waits)",
    )
    add(
        "--mean-holding",
        type=float,
        default=100.0,
        env_var="LOAD_MEAN_HOLDING",
        help="mean holding time of calls and data sessions, simulated seconds",
    )
    add(
        "--mix",
        default="55,25,20",
        env_var="LOAD_MIX",
        help="weights of voice, data and SMS arrivals",
    )
    add(
        "--closed-loop",
        type=int,
        default=0,
        env_var="LOAD_CLOSED_LOOP",
        help="capacity runs: N sessions back to back per gateway instead of arrivals",
    )
    add(
        "--max-open",
        type=int,
        default=5_000,
        env_var="LOAD_MAX_OPEN",
        help="open sessions per gateway past which arrivals are dropped (a failure)",
    )
    add(
        "--topup-rate",
        type=float,
        default=2.0,
        env_var="LOAD_TOPUP_RATE",
        help="HTTP top-ups per second (customer care)",
    )
    add(
        "--balance-rate",
        type=float,
        default=5.0,
        env_var="LOAD_BALANCE_RATE",
        help="HTTP balance queries per second (customer care)",
    )
    add(
        "--request-timeout",
        type=float,
        default=5.0,
        env_var="LOAD_REQUEST_TIMEOUT",
        help="seconds a charging request waits for its answer",
    )
    add(
        "--watchdog",
        type=float,
        default=30.0,
        env_var="LOAD_WATCHDOG",
        help="Diameter: seconds of silence before a gateway sends DWR (RFC 3539 Tw)",
    )
    add(
        "--drain-timeout",
        type=float,
        default=30.0,
        env_var="LOAD_DRAIN_TIMEOUT",
        help="seconds gateways get to end their sessions when the test stops",
    )
    add(
        "--results-file",
        default="",
        env_var="LOAD_RESULTS_FILE",
        include_in_web_ui=False,
        help="write histograms, result codes and the ledger here (JSON) at the end",
    )
    add(
        "--run-id",
        default=uuid.uuid4().hex[:8],
        env_var="LOAD_RUN_ID",
        include_in_web_ui=False,
        help="makes session ids and references unique across runs",
    )


def _traffic(o: Any) -> Traffic:
    try:
        voice, data, sms = (float(x) for x in str(o.mix).split(","))
    except ValueError:
        raise SystemExit(f"--mix: three weights, voice,data,sms (not {o.mix!r})") from None
    return Traffic(o.time_factor, o.mean_holding, voice=voice, data=data, sms=sms)


#: process_time() when CPU was last counted, and 1 once the test has stopped.
_cpu_mark = [time.process_time(), 0.0]


@events.test_start.add_listener
def _started(environment: Environment, **_: Any) -> None:
    RESULTS.reset()  # a new test started from the web UI starts afresh
    RESULTS.started = time.time()
    _cpu_mark[:] = [time.process_time(), 0.0]


@events.test_stopping.add_listener
def _stopping(environment: Environment, **_: Any) -> None:
    RESULTS.stopping = time.time()
    for gateway in list(GATEWAYS):
        gateway.draining.set()


@events.test_stop.add_listener
def _stopped(environment: Environment, **_: Any) -> None:
    RESULTS.stopped = time.time()
    if not isinstance(environment.runner, MasterRunner):
        _count_cpu()  # up to here: the reports written after the test are not load generation
        _cpu_mark[1] = 1  # and nothing after this counts


def _count_cpu() -> None:
    """Add the CPU this process spent since the last time to RESULTS (while a test runs)."""
    now = time.process_time()
    if not _cpu_mark[1]:
        RESULTS.cpu += now - _cpu_mark[0]
    _cpu_mark[0] = now


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    context: dict[str, Any] | None = None,
    response: Any = None,
    **_: Any,
) -> None:
    code = (context or {}).get("code")
    if code is None:
        status = getattr(response, "status_code", None)
        code = str(status) if status else type(exception).__name__ if exception else "ok"
    RESULTS.record(name, response_time, str(code), exception is not None)


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    _count_cpu()
    data["ocs_results"] = RESULTS.take().to_json()


@events.worker_report.add_listener
def _merge(client_id: str, data: dict[str, Any]) -> None:
    if "ocs_results" in data:
        RESULTS.merge(Results.from_json(data["ocs_results"]))


@events.quitting.add_listener
def _write(environment: Environment, **_: Any) -> None:
    path = getattr(environment.parsed_options, "results_file", "")
    if path and not isinstance(environment.runner, WorkerRunner):
        if not RESULTS.stopped:
            RESULTS.stopped = time.time()
        RESULTS.write(path)


class LocustReporter:
    """network.Reporter for Locust: the request event, the ledger in RESULTS. Requests made
    once the test is stopping (``draining``: sessions cut short and ended all at once) are
    reported as "<type> (drain)": that burst is not the traffic the SLO is about."""

    def __init__(
        self, environment: Environment, protocol: str, draining: gevent.event.Event
    ) -> None:
        self.fire = environment.events.request.fire
        self.protocol = protocol
        self.draining = draining
        RESULTS.protocols.add(protocol)

    def request(self, name: str, started: float, code: str, outcome: str, detail: str = "") -> None:
        failed = outcome == FAILED
        self.fire(
            request_type=self.protocol,
            name=f"{name} (drain)" if self.draining.is_set() else name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=0,
            exception=ChargingFailure(f"{code} {detail}".strip()) if failed else None,
            context={"code": code},
        )

    def charged(self, msisdn: str, amount: int) -> None:
        RESULTS.charged(msisdn, amount)

    def uncertain(self, msisdn: str) -> None:
        RESULTS.uncertain(msisdn)

    def abandoned(self, engine_sessions: list[str]) -> None:
        RESULTS.abandoned.extend(engine_sessions)


class Gateway(User):
    """A network element charging its subscribers' sessions through one connection."""

    weight = 1

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        o = environment.parsed_options
        self.options = o
        self.number = next(_gateway_numbers)
        self.rng = random.Random()
        self.traffic = _traffic(o)
        self.draining = gevent.event.Event()
        self.sessions = gevent.pool.Group()
        subs = population(o.subscribers)
        if o.transport == "diameter":
            # A plan without a Diameter mapping for a kind would answer 5031: skip those.
            self.eligible = {k: [s for s in subs if k in diameter_kinds(s.plan)] for k in KINDS}
        else:
            self.eligible = {k: list(subs) for k in KINDS}
        GATEWAYS.add(self)

    def wait_time(self) -> float:
        rate = self.options.arrival_rate
        if self.options.closed_loop or rate <= 0:
            return 1.0
        return self.rng.expovariate(rate)

    def on_start(self) -> None:
        o = self.options
        host = o.ocs_host or _host_of(self.host)
        reporter = LocustReporter(self.environment, o.transport, self.draining)
        name = f"gw{self.number}-{os.getpid()}"
        self.net: Network
        if o.transport == "diameter":
            self.net = GyNetwork(
                host,
                o.diameter_port,
                reporter,
                timeout=o.request_timeout,
                origin_host=f"{name}.load.test",
                watchdog=o.watchdog,
            )
        else:
            self.net = NativeNetwork(host, o.native_port, reporter, timeout=o.request_timeout,
                                     key=native_key_from_env())  # fmt: skip
        self.caller = Caller(self.net, self.traffic, self.rng, self._wait, f"{name};{o.run_id}")
        for _ in range(o.closed_loop):
            self.sessions.spawn(self._back_to_back)

    def _wait(self, seconds: float) -> float:
        t0 = time.monotonic()
        self.draining.wait(seconds)
        return time.monotonic() - t0

    def _subscriber(self, kind: str) -> Subscriber:
        return self.rng.choice(self.eligible[kind])

    def _one(self, kind: str) -> None:
        sub = self._subscriber(kind)
        if kind == "sms":
            self.caller.sms(sub.msisdn)
        else:
            self.caller.session(sub.msisdn, kind)

    def _back_to_back(self) -> None:
        while not self.draining.is_set():
            self._one(self.traffic.kind(self.rng))

    @task
    def arrival(self) -> None:
        if self.options.closed_loop:
            return
        if len(self.sessions) >= self.options.max_open:
            RESULTS.overload += 1
            self.environment.events.request.fire(
                request_type=self.options.transport,
                name="overload",
                response_time=0.0,
                response_length=0,
                context={"code": "overload"},
                exception=ChargingFailure(f"over {self.options.max_open} open sessions"),
            )
            return
        self.sessions.spawn(self._one, self.traffic.kind(self.rng))

    def on_stop(self) -> None:
        self.draining.set()
        if not self.sessions.join(timeout=self.options.drain_timeout):
            left = self.caller.open_sessions()
            self.sessions.kill(block=True, timeout=5)
            RESULTS.abandoned.extend(s for x in left for s in self.net.engine_sessions(x))
        self.net.shutdown()


class CustomerCare(FastHttpUser):
    """Top-ups and balance queries through the admin API (``--host``)."""

    fixed_count = 1
    _numbers = itertools.count(1)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        o = environment.parsed_options
        self.options = o
        self.rng = random.Random()
        self.subs = population(o.subscribers)
        # A customer-care desk: an operator's API key (OCS_API_TOKEN; bench.load makes one).
        token = os.environ.get("OCS_API_TOKEN", "")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def wait_time(self) -> float:
        total = self.options.topup_rate + self.options.balance_rate
        return self.rng.expovariate(total) if total > 0 else 3600.0

    @task
    def serve_customer(self) -> None:
        o = self.options
        total = o.topup_rate + o.balance_rate
        if total <= 0:
            return
        sub = self.rng.choice(self.subs)
        if self.rng.random() * total < o.topup_rate:
            self._topup(sub)
        else:
            self._balance(sub)

    def _topup(self, sub: Subscriber) -> None:
        amount = topup_amount(self.rng)
        ref = f"load-{self.options.run_id}-{os.getpid()}-{next(self._numbers)}"
        body = {"amount": format_money(amount), "reference": ref, "note": "load test"}
        with self.client.post(
            f"/v1/subscribers/{sub.msisdn}/topups",
            json=body,
            name="topup",
            catch_response=True,
            headers=self.headers,
        ) as resp:
            if resp.status_code == 201:
                RESULTS.topped_up(sub.msisdn, amount)
                resp.success()
            else:
                if not 400 <= (resp.status_code or 0) < 500:
                    RESULTS.uncertain(sub.msisdn)  # it may have been applied
                resp.failure(f"{resp.status_code} {(resp.text or '')[:120]}")

    def _balance(self, sub: Subscriber) -> None:
        self.client.get(f"/v1/subscribers/{sub.msisdn}", name="balance", headers=self.headers)


def _host_of(url: str | None) -> str:
    if not url:
        return "127.0.0.1"
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "127.0.0.1"
