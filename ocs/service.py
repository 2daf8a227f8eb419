"""The OCS process: every listener, the engine, the sweeper and (if no URL is given) an embedded
Redis, each with one owner, started in order and stopped in reverse.

Shutdown follows docs/architecture.md (Conventions): signal -> stop accepting -> drain in-flight
requests -> close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ocs.agents.camel import CamelAgent, CamelConfig
from ocs.agents.diameter import CCA_COPY, DiameterAgent, GyConfig
from ocs.agents.native import NativeAgent
from ocs.api.app import create_app
from ocs.api.routes import Route
from ocs.api.server import ApiRunner
from ocs.auth.credentials import AuthConfig
from ocs.auth.diameter import NOT_CONFIGURED
from ocs.auth.http import SECURITY
from ocs.auth.network import NativeKeys, Refusals
from ocs.auth.policy import PolicyError, load_policy
from ocs.charging.engine import ChargingEngine, wall_clock_ms
from ocs.charging.sweeper import ExpirySweeper, ThresholdCatchUp
from ocs.charging.tariffs import TariffRegistry
from ocs.config import ConfigError, Settings, is_loopback
from ocs.logs import redis_lost
from ocs.metrics import Metrics
from ocs.money import parse_money
from ocs.provisioning.adapter import HttpProvisioningAdapter, WebhookSender
from ocs.provisioning.service import Provisioning
from ocs.provisioning.worker import RetryPolicy
from ocs.redis_server import EmbeddedRedis
from ocs.store.cluster import hot_client
from ocs.store.durability import apply_durability
from ocs.store.errors import StoreUnavailable
from ocs.store.notify import NotifyStore
from ocs.store.redis_client import RedisClientError
from ocs.store.store import Store
from ocs.tasks import cancel_and_wait as _cancel
from ocs.telemetry import flushing, metrics_for_process, watch
from protocols.diameter import LocalIdentity
from protocols.diameter.constants import CreditControlFailureHandling
from protocols.diameter.server import DiameterServer
from protocols.native import NativeServer
from protocols.sigtran import transport as sigtran_transport
from protocols.sigtran.admission import PeerList
from protocols.sigtran.server import CapServer, ScfConfig
from tariffs import PlanBook, PlanVersion, TariffRater, load_plans

if TYPE_CHECKING:
    from ocs.billing.service import Billing

log = logging.getLogger("ocs")


def base_plans(settings: Settings) -> list[PlanVersion]:
    """The shipped plans, plus those in ``settings.plans_dir``."""
    return load_plans([settings.plans_dir] if settings.plans_dir else [])


@contextlib.asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[str]:
    """The configured Redis URL, or an embedded redis-server for as long as the context lasts."""
    if settings.redis_url:
        yield settings.redis_url
        return
    fsync = "always" if settings.durability == "fsync" else settings.appendfsync
    extra = ("--appendfsync", fsync)
    server = EmbeddedRedis(Path(settings.data_dir) / "redis", extra_args=extra)
    await server.start_async()
    log.info("embedded redis-server %s on %s (data in %s)", server.version, server.url,
             server.data_dir)  # fmt: skip
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


async def wait_for_redis(store: Store, wait: float) -> None:
    """Until Redis answers PING (it may start after us: compose, Kubernetes), for at most
    ``wait`` seconds, saying once what it waits for; then StoreUnavailable, in one line."""
    client = store.client
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay, said = 0.05, False
    while True:
        try:
            await client.connect()
            if await store.ping():
                return
            problem = "no PONG"
        except (RedisClientError, StoreUnavailable) as exc:
            problem = str(exc)  # (refused, LOADING while it replays its AOF, ...)
        left = deadline - loop.time()
        if left <= 0:
            raise StoreUnavailable(
                f"Redis at {client.where} did not answer within {wait:g} s "
                f"(OCS_REDIS_WAIT): {problem}"
            )
        if not said:
            said = True
            log.warning("waiting up to %g s for Redis at %s (OCS_REDIS_WAIT): %s", wait,
                        client.where, problem)  # fmt: skip
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)


@dataclass
class Core:
    """The charging core of a process: its Redis, the store, the tariff plans, the engine."""

    redis_url: str
    store: Store
    tariffs: TariffRegistry
    engine: ChargingEngine
    #: The durability mode in force (OCS_DURABILITY, "auto" resolved).
    durability: str = "local"


@contextlib.asynccontextmanager
async def charging_core(
    settings: Settings, *, plans: list[PlanVersion] | None = None
) -> AsyncIterator[Core]:
    """Redis (embedded unless a URL is set), the store with its scripts loaded, the plans kept
    in step with Redis, and the engine; shared by ``run_ocs`` and ``ocs mediation run``."""
    base = base_plans(settings) if plans is None else plans
    rater = TariffRater(PlanBook(base))
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(redis_for(settings))
        client = hot_client(url)
        stack.push_async_callback(client.close)
        store = Store(
            client,
            session_ttl_ms=settings.session_ttl * 1000,
            reference_ttl_ms=settings.reference_ttl * 1000,
        )
        await wait_for_redis(store, settings.redis_wait)
        durability = await apply_durability(
            client, settings.durability, settings.durability_timeout
        )
        log.info("durability: %s", durability)
        await store.load_scripts()
        tariffs = await stack.enter_async_context(TariffRegistry(store, rater, base))
        engine = ChargingEngine(store, rater, settings.charging)
        yield Core(url, store, tariffs, engine, durability)


@dataclass
class Running:
    """What a running OCS exposes to its caller (the CLI, the demo, tests)."""

    settings: Settings
    redis_url: str
    store: Store
    engine: ChargingEngine
    tariffs: TariffRegistry
    metrics: Metrics
    native: NativeServer
    http_port: int
    diameter: DiameterServer
    provisioning: Provisioning
    #: The gsmSCF (CAMEL), when OCS_CAMEL_TRANSPORT is set.
    camel: CapServer | None = None
    #: Enterprise billing, when ``settings.billing`` is on.
    billing: Billing | None = None

    @property
    def diameter_port(self) -> int:
        return self.diameter.port


def host_addresses(bind: str) -> tuple[str, ...]:
    """Host-IP-Address for CER/CEA: the bound address, or this host's when bound to all."""
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        address = None
    if address is not None and not address.is_unspecified:
        return (str(address),)
    try:
        return (socket.gethostbyname(socket.gethostname()),)
    except OSError:
        return ("127.0.0.1",)


def server_tls(cert: str, key: str, ca: str, setting: str) -> ssl.SSLContext | None:
    """A listener's TLS context from its ``<setting>_CERT``, ``_KEY`` and ``_CA`` files, or
    None when none is set; with a CA file, clients must present a certificate it signed.
    ConfigError names what is wrong."""
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise ConfigError(f"{setting}_CERT and {setting}_KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 6733 §13.1 / RFC 8996
    try:
        context.load_cert_chain(cert, key)
        if ca:
            context.load_verify_locations(ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}_*: {exc}") from None
    return context


def diameter_tls(settings: Settings) -> ssl.SSLContext | None:
    """The Diameter listener's TLS context (OCS_DIAMETER_TLS_*), or None."""
    s = settings
    return server_tls(s.diameter_tls_cert, s.diameter_tls_key, s.diameter_tls_ca,
                      "OCS_DIAMETER_TLS")  # fmt: skip


def native_tls(settings: Settings) -> ssl.SSLContext | None:
    """The native listener's TLS context (OCS_NATIVE_TLS_*), or None."""
    s = settings
    return server_tls(s.native_tls_cert, s.native_tls_key, s.native_tls_ca, "OCS_NATIVE_TLS")


def http_tls(settings: Settings) -> ssl.SSLContext | None:
    """The admin API's TLS context (OCS_HTTP_TLS_CERT/_KEY), or None."""
    return server_tls(settings.http_tls_cert, settings.http_tls_key, "", "OCS_HTTP_TLS")


def exposure_warnings(settings: Settings) -> list[str]:
    """What is reachable from other hosts without the protection production wants
    (docs/security.md, Running it in production); nothing when bound to loopback."""
    if is_loopback(settings.bind):
        return []
    out = []
    if not settings.http_tls_cert:
        out.append(f"the admin API on {settings.bind} is plain HTTP: bearer tokens travel in "
                   "the clear (set OCS_HTTP_TLS_CERT/_KEY)")  # fmt: skip
    if settings.native_auth == "off":
        out.append(f"the native protocol on {settings.bind} authenticates no one "
                   "(OCS_NATIVE_AUTH=off)")  # fmt: skip
    admission = settings.diameter_admission
    if admission.open_to_anyone:
        out.append(f"Diameter on {settings.bind} admits any peer (OCS_DIAMETER_PEERS=*)")
    elif not admission.certified and any(not nets for nets in admission.hosts.values()):
        out.append(f"Diameter on {settings.bind} admits peers by the Origin-Host they claim "
                   "(bind them to addresses, host@address, or set OCS_DIAMETER_TLS_CERT/_KEY/_CA "
                   "for client certificates)")  # fmt: skip
    return out


def auth_config(settings: Settings) -> AuthConfig:
    """What authentication needs, checked (the policy file is read now)."""
    try:
        load_policy(settings.policy_file or None)
    except PolicyError as exc:
        raise ConfigError(f"OCS_POLICY_FILE: {exc}") from None
    if not settings.secret_key:
        log.warning(
            "OCS_SECRET_KEY is not set: the JWT and audit keys derive from a secret "
            "generated and kept in Redis (set one in production: docs/security.md)"
        )
    return AuthConfig(
        admin_token=settings.admin_token,
        secret_key=settings.secret_key,
        token_ttl=settings.token_ttl,
        refresh_ttl=settings.refresh_ttl,
        fail_limit=settings.auth_fail_limit,
        fail_window=settings.auth_fail_window,
        metrics_public=settings.metrics_public,
        policy_file=settings.policy_file,
        operator_max_topup=parse_money(settings.operator_max_topup)
        if settings.operator_max_topup
        else None,
    )


def diameter_server(
    settings: Settings,
    agent: DiameterAgent,
    on_refused: Callable[[object, str], None] | None = None,
) -> DiameterServer:
    """The Diameter listener as configured (OCS_DIAMETER_*)."""
    identity = LocalIdentity(
        settings.diameter_host,
        settings.diameter_realm,
        host_addresses(settings.bind),
        product_name="ocs",
        # RFC 6733 §8.16: a value that grows with every restart.
        origin_state_id=int(time.time()) & 0xFFFFFFFF,
    )
    return DiameterServer(
        identity,
        agent,
        settings.bind,
        settings.diameter_port,
        max_message=settings.diameter_max_message,
        watchdog_interval=settings.diameter_watchdog,
        allowed_realms=settings.diameter_allowed_realms,
        admit=settings.diameter_admission.admit,
        realm_check=settings.diameter_realm_check,
        answer_copy=CCA_COPY,
        ssl=diameter_tls(settings),
        cer_timeout=settings.diameter_cer_timeout,
        frame_timeout=settings.diameter_frame_timeout,
        # Several OCS processes may share the port (docs/architecture.md, Scale).
        reuse_port=True,
        on_refused=on_refused,
    )


@contextlib.asynccontextmanager
async def camel_listener(
    settings: Settings, engine: ChargingEngine, tariffs: TariffRegistry, metrics: Metrics
) -> AsyncIterator[CapServer]:
    """The gsmSCF as configured (OCS_CAMEL_*): the CAMEL agent behind TCAP dialogues, on an
    SCTP (or SCTP-over-UDP) listener. Closing stops accepting, then aborts what is open."""
    rater = tariffs.rater
    book_at = lambda plan, t: rater.book.at(plan, t)  # noqa: E731, PLW0108
    agent = CamelAgent(
        engine,
        book_at,
        CamelConfig(
            unknown=settings.camel_unknown,
            release_cause=settings.camel_release_cause,
            redirect=settings.camel_redirect,
        ),
        metrics,
    )
    config = ScfConfig(
        point_code=settings.camel_point_code,
        global_title=settings.camel_gt,
        routing_context=settings.camel_routing_context or None,
        dialogue_timeout=settings.camel_dialogue_timeout,
    )
    host = "127.0.0.1" if settings.bind in ("0.0.0.0", "") else settings.bind
    peers = PeerList.parse(settings.camel_peers) if settings.camel_peers.strip() else None
    if peers is None:
        # As for Diameter: nothing configured admits no one (docs/security.md).
        log.warning("OCS_CAMEL_PEERS is not set: the gsmSCF admits no dialogue (list the "
                    "SSFs' point codes or global titles, or '*': docs/camel.md)")  # fmt: skip
        peers = PeerList()
    else:
        log.info("CAMEL peers admitted: %s", peers.describe())
    admit = peers.admit
    async with CapServer(agent, config, admit=admit) as server:
        try:
            listener = await sigtran_transport.listen(
                settings.camel_transport,
                host,
                settings.camel_port,
                server.connection_made,
                udp_port=settings.camel_udp_port,
            )
        except OSError as exc:
            raise ConfigError(f"OCS_CAMEL_TRANSPORT={settings.camel_transport}: cannot listen on "
                              f"{host}:{settings.camel_port}: {exc}") from None  # fmt: skip
        log.info("CAMEL gsmSCF on %s %s:%d (point code %d)", settings.camel_transport, host,
                 settings.camel_port, settings.camel_point_code)  # fmt: skip
        try:
            yield server
        finally:
            listener.close()


def gy_config(settings: Settings) -> GyConfig:
    default, overrides = settings.diameter_failure_handling_parsed
    return GyConfig(
        settings.diameter_host,
        settings.diameter_realm,
        CreditControlFailureHandling[default],
        {k: CreditControlFailureHandling[v] for k, v in overrides.items()},
    )


@contextlib.asynccontextmanager
async def run_ocs(
    settings: Settings, *, plans: list[PlanVersion] | None = None, reuse_port: bool = False
) -> AsyncIterator[Running]:
    """Start everything; on exit, stop accepting, drain, and close in reverse order.

    ``reuse_port``: bind the native and admin listeners with SO_REUSEPORT too, so that the
    workers of ``ocs serve --workers N`` (ocs/supervisor.py) share their ports. (The Diameter
    listener always does.)
    """
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(charging_core(settings, plans=plans))
        url, store, tariffs, engine = core.redis_url, core.store, core.tariffs, core.engine
        rater = tariffs.rater
        metrics = metrics_for_process()
        stack.callback(metrics.watch_gc())
        engine.on_charged = metrics.charged
        sweeper = await stack.enter_async_context(
            ExpirySweeper(store, wall_clock_ms, interval=settings.sweep_interval)
        )
        await stack.enter_async_context(
            ThresholdCatchUp(store, wall_clock_ms, interval=settings.sweep_interval)
        )
        notify = NotifyStore(url)
        stack.push_async_callback(notify.close)
        provisioning = Provisioning(
            notify,
            store,
            callback_secret=settings.provisioning_secret,
            metrics=metrics,
            policy=RetryPolicy(
                attempts=settings.provisioning_retries, base=settings.provisioning_backoff
            ),
            reconcile_concurrency=settings.provisioning_reconcile_concurrency,
        )
        stack.push_async_callback(provisioning.close)
        billing = None
        routes: list[Route] = []
        if settings.billing:
            from ocs.billing.service import billing_for

            billing = await stack.enter_async_context(billing_for(settings, url))
            routes = billing.api.routes()
            from ocs.ui.service import dashboard_for

            routes += await stack.enter_async_context(dashboard_for(billing, store, url, metrics))
        app = create_app(
            store, metrics, tariffs=tariffs, clock=wall_clock_ms, provisioning=provisioning,
            body_timeout=settings.http_body_timeout, routes=routes,
            auth=auth_config(settings),
        )  # fmt: skip
        runner = ApiRunner(app, idle_timeout=settings.http_idle_timeout, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, settings.bind, settings.http_port, reuse_port=reuse_port or None,
            ssl_context=http_tls(settings),
        )  # fmt: skip
        await site.start()
        http_port = _bound_port(runner, settings.http_port)
        keys = None
        if settings.native_auth == "required":
            native_refusals = Refusals("native", metrics, app[SECURITY])
            stack.push_async_callback(native_refusals.close)
            keys = NativeKeys(settings.native_key_map, native_refusals)
        native = NativeServer(
            NativeAgent(engine, metrics), settings.bind, settings.native_port,
            reuse_port=reuse_port, frame_timeout=settings.native_frame_timeout,
            idle_timeout=settings.native_idle_timeout, keys=keys, ssl=native_tls(settings),
        )  # fmt: skip
        await native.start()
        stack.push_async_callback(native.close)
        # A lambda, not rater.book.at: the registry replaces the book when plans change.
        book_at = lambda plan, t: rater.book.at(plan, t)  # noqa: E731, PLW0108
        agent = DiameterAgent(engine, book_at, gy_config(settings), metrics)
        diameter_refusals = Refusals("diameter", metrics, app[SECURITY])
        stack.push_async_callback(diameter_refusals.close)
        diameter = diameter_server(settings, agent, on_refused=diameter_refusals)
        await diameter.start()
        stack.push_async_callback(diameter.close)
        # RAR and ASR: the agent hears of top-ups, barring changes and new tariffs.
        agent.sender = diameter.send_request
        stack.push_async_callback(agent.close)
        tariffs.listeners.append(agent.on_plans_changed)
        heads = await notify.heads()
        follow = asyncio.create_task(_follow(notify, heads, agent), name="notifications")
        stack.push_async_callback(_cancel, follow)
        await start_provisioning(stack, settings, provisioning, http_port)
        camel = None
        if settings.camel_transport:
            camel = await stack.enter_async_context(
                camel_listener(settings, engine, tariffs, metrics)
            )
        watch(metrics, native=native, diameter=diameter, runner=runner, engine=engine,
              sweeper=sweeper, notify=notify, camel=camel)  # fmt: skip
        await stack.enter_async_context(flushing(metrics))
        for warning in exposure_warnings(settings):
            log.warning("security: %s", warning)
        if settings.diameter_admission.closed:
            log.warning("diameter: %s: every CER is answered 3010 (DIAMETER_UNKNOWN_PEER)",
                        NOT_CONFIGURED)  # fmt: skip
        log.info(
            "OCS serving: native %s:%d, diameter %s:%d, http %s:%d, redis %s",
            settings.bind, native.port, settings.bind, diameter.port, settings.bind, http_port,
            url,
        )  # fmt: skip
        yield Running(
            settings, url, store, engine, tariffs, metrics, native, http_port, diameter,
            provisioning, camel, billing,
        )  # fmt: skip


async def _follow(notify: NotifyStore, ids: dict[str, str], agent: DiameterAgent) -> None:
    """Hand every notification to the Diameter agent (each process reads them all)."""
    while True:
        try:
            async for note in notify.follow(ids):
                agent.on_notification(note.fields)
        except StoreUnavailable as exc:
            redis_lost(log, "notifications", exc)
            await asyncio.sleep(1.0)


async def start_provisioning(
    stack: contextlib.AsyncExitStack, settings: Settings, provisioning: Provisioning,
    http_port: int,
) -> None:  # fmt: skip
    """The adapter and webhooks as configured, and their consumers (each works only while
    this process holds its group's lease: one process of many does)."""
    if settings.provisioning_url:
        host = "127.0.0.1" if settings.bind in ("0.0.0.0", "::") else settings.bind
        callback = settings.provisioning_callback_url or (
            f"http://{host}:{http_port}/v1/provisioning/callbacks"
            if settings.provisioning_secret else ""
        )  # fmt: skip
        adapter = HttpProvisioningAdapter(
            settings.provisioning_url,
            secret=settings.provisioning_secret,
            auth=settings.provisioning_auth,
            timeout=settings.provisioning_timeout,
            callback_url=callback,
        )
        stack.push_async_callback(adapter.close)
        provisioning.adapter = adapter
    if settings.webhook_url_list:
        sender = WebhookSender(
            settings.webhook_url_list,
            secret=settings.webhook_secret or settings.provisioning_secret,
            timeout=settings.provisioning_timeout,
        )
        stack.push_async_callback(sender.close)
        provisioning.webhooks = sender
    for consumer in provisioning.consumers():
        task = asyncio.create_task(consumer.run(), name=f"consumer-{consumer.group}")
        stack.push_async_callback(_cancel, task)


def _bound_port(runner: web.AppRunner, wanted: int) -> int:
    if wanted:
        return wanted
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    return wanted


async def serve_forever(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_ocs(settings):
            await stop.wait()
            log.info("shutting down: draining in-flight requests")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
