"""What each part of the balance scripts costs Redis, per charging request (issue 17).

A micro-harness over copies of the scripts on private redis-servers (AOF on with appendfsync
everysec, as in production, and one with AOF off): it runs the ceiling's session (reserve ->
commit with the next slice -> release) through ``Store`` on the pipelined client, once per
variant, and reads the server's own figures around each run: ``INFO cpu`` (the process's
user + system CPU, network included) and ``INFO commandstats`` (``usec_per_call`` of EVALSHA:
the script alone). Variants, interleaved in a new order each round, medians over the rounds:

* ``before``: the scripts of an earlier revision (``--baseline``, by default the one before
  issue 17's store work), called by FCALL with the Store's arguments of then (for a revision
  that kept session answers in keys: the answer's key as KEYS[7]): the same run's reference
  for a change to the scripts (``--baseline main`` for a branch's change);
* ``full``: the scripts as shipped, called by EVALSHA (as on Redis 6.2);
* ``functions``: the same as one Functions library called by FCALL (as on Redis 7.0+);
* ``no-aof``: the same on the server with ``appendonly no``;
* ``no-idem``: no idempotency answer (the session request's answer neither looked up with
  the session nor written with it);
* ``no-outbox``: the outbox XADDs of the request's event made no-ops;
* ``evalsha``: a script with the same KEYS and ARGV that returns an answer of the same shape
  and does nothing else (the cost of EVALSHA itself: parsing, tables, the reply);
* ``prelude``: lib.lua, then that fixed answer (what the prelude's closures cost per call);
* ``account``: prelude + the account's HMGET of 12 fields + an HSET of the fields a request
  changes;
* ``session``: prelude + the session's HGET + cmsgpack.unpack + pack + HSET.

Components are differences between variants (``full - no-aof`` is the AOF, ``account -
prelude`` the account I/O, ...); "other logic" is what is left of ``full``. Everything is CPU
time per charging request (one script call), so a busy machine changes it far less than
it changes requests per second.

``before`` and ``functions`` run on servers of their own (OWN_SERVER). Memory: ``INFO
memory`` ``used_memory`` before and after each run of ``before`` and ``functions``, per
request (what the answers and the outbox events keep), and again after the run's outbox
entries are deleted (the answers alone). Deletion: a last phase runs ``before``
and ``functions`` on fresh servers with answers kept 1.5 s, waits 3 s and runs the sweeper's
step over every due subscriber; the Redis CPU of that phase less an idle one of the same
length, per request, is what deleting the answers costs (keys expiring, or expiry passes).

Usage: ``python -m bench.scripts_cost [--sessions N] [--rounds R] [--inflight N]
[--baseline REV] [--no-append]``; appends a table to bench/RESULTS.md unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

from bench.charging import (
    HOLD_MS,
    RESULTS,
    Meter,
    Prices,
    create_subscribers,
    default_rater,
    git_commit,
    load_subscribers,
    msisdn,
    now_ms,
    parse_info,
    scripted_session,
)
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import IDEMPOTENCY_TTL_REFERENCE, IDEMPOTENCY_TTL_SESSION
from ocs.redis_server import EmbeddedRedis
from ocs.store import keys as K
from ocs.store.functions import build_library
from ocs.store.redis_client import Function, LibraryLoader, PipelinedRedis
from ocs.store.store import (
    SCRIPT_NAMES,
    ScriptAnswer,
    Store,
    script_source,
    session_fingerprint,
)
from tariffs import load_plans

SESSION_SCRIPTS: Final = ("reserve", "commit", "release")

#: The revision before issue 17's store work (session answers in keys of their own).
BASELINE: Final = "cb559c6"

#: An answer of the shape lib.lua's answer() returns (21 slots).
FIXED_ANSWER: Final = (
    "return {'OK', 60, 0, 0, 1000000000000, 0, 0, 1, 0, 0, 0, 0, 0, 0, 'active', 'voice', "
    "'', '', 0, 'prepaid-basic', 'prepaid-basic'}\n"
)

ACCOUNT_IO: Final = """
local r = redis.call('HMGET', K_ACCT, 'bal', 'rsv', 'lim', 'st', 'plan', 'ver', 'nexp', 'bk',
  'nb', 'blo', 'bhi', 'thv')
local ver = (r[6] or 0) + 1
redis.call('HSET', K_ACCT, 'ver', fmt(ver), 'up', NOW_TEXT, 'bal', r[1] or '0', 'rsv',
  r[2] or '0')
"""

SESSION_IO: Final = """
local sid = ARGV[5]
local raw = redis.call('HGET', K_SESS, sid)
local s = raw and cmsgpack.unpack(raw) or {svc = 'voice', u = 0, um = 0, mc = 0, g = 0, gb = 0,
  hm = 0, hb = {}, sv = 0, x = 0, t0 = 0, dst = '', loc = '', plan = 'prepaid-basic'}
s.sv = s.sv + 1
redis.call('HSET', K_SESS, sid, cmsgpack.pack(s))
"""


def _lib() -> str:
    return script_source("reserve").split("\n-- reserve:", 1)[0] + "\n"


def _full(name: str) -> str:
    return script_source(name)


def _no_outbox(name: str) -> str:
    # The request's event only (a threshold crossing is rare and stays).
    src = script_source(name)
    calls = ["redis.call('XADD', K_OUT, '*', 't', kind,",
             "redis.call('XADD', K_OUT, '*', EVENT_FIELD,"]  # fmt: skip
    for call in calls:
        assert call in src
        # (the arguments are still evaluated, as they would be for the call)
        src = src.replace(call, call.replace("redis.call(", "_nop("))
    return "local function _nop(...) end\n" + src


def _no_idem(name: str) -> str:
    # The arguments stay the same; the answer is neither looked up nor written (nor the count
    # of open sessions and the answers' pass kept beside them).
    src = script_source(name)
    cuts = {
        "redis.call('HMGET', K_SESS, sid, af, OPEN_FIELD)": "{redis.call('HGET', K_SESS, sid)}",
        ", af, answer_value(ans), OPEN_FIELD, state)": ")",
        ", af, answer_value(ans))": ")",
        "redis.call('HSET', K_SESS, '\\255e' .. rk, answer_value(ans), OPEN_FIELD, state)": "",
        "redis.call('HSET', K_SESS, '\\255e' .. rk, answer_value(ans))": "",
    }
    for cut, by in cuts.items():
        src = src.replace(cut, by)
    src = re.sub(r"= answer_due\(.*\)\n", "= nil\n", src)
    assert "answer_value(ans)" not in src.split(f"\n-- {name}:", 1)[1], name
    return src


def _evalsha(_name: str) -> str:
    return FIXED_ANSWER


def _prelude(_name: str) -> str:
    return _lib() + FIXED_ANSWER


def _account(_name: str) -> str:
    return _lib() + ACCOUNT_IO + FIXED_ANSWER


def _session(_name: str) -> str:
    return _lib() + SESSION_IO + FIXED_ANSWER


@dataclass(frozen=True)
class Variant:
    name: str
    source: Callable[[str], str]
    aof: bool = True
    #: Run the shipped scripts as the Store runs them on Redis 7.0+: one Functions library.
    functions: bool = False
    #: The baseline revision's scripts, as a library, with the Store's arguments of then.
    baseline: bool = False


VARIANTS: Final = (
    Variant("before", _full, functions=True, baseline=True),
    Variant("full", _full),
    Variant("functions", _full, functions=True),
    Variant("no-aof", _full, aof=False),
    Variant("no-idem", _no_idem),
    Variant("no-outbox", _no_outbox),
    Variant("evalsha", _evalsha),
    Variant("prelude", _prelude),
    Variant("account", _account),
    Variant("session", _session),
)


def baseline_source(rev: str) -> Callable[[str], str]:
    """The scripts' text at git revision ``rev`` (by name; ``"lib"``: the prelude)."""
    root = Path(__file__).resolve().parent.parent

    def read(name: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), "show", f"{rev}:ocs/store/scripts/{name}.lua"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    return read


def legacy_args(rev: str) -> bool:
    """Whether the scripts at ``rev`` keep session answers in keys of their own (the Store's
    arguments of then: BaselineStore), not in the sessions hash."""
    return "session_lookup" not in baseline_source(rev)("lib")


def fingerprint_arg(rev: str) -> bool:
    """Whether the session scripts at ``rev`` take the request's fingerprint as an argument
    (before they made it of their others)."""
    return "REQ_FP = 'reserve:'" not in baseline_source(rev)("reserve")


class BaselineStore(Store):
    """The baseline's scripts, with the Store's arguments of then for the session scripts:
    the fingerprint as the next-to-last argument; for a revision that kept their answers in
    keys (``legacy``), also the answer's key as KEYS[7] and the TTL (not now + TTL) as
    ARGV[4]."""

    legacy = True

    async def _answer(
        self,
        name: str,
        msisdn: str,
        request_key: str | None,
        args: list[str | int | bytes],
        fingerprint: str | None = "",
    ) -> ScriptAnswer:
        if name not in K.SESSION_SCRIPTS or request_key is None:
            return await super()._answer(name, msisdn, request_key, args, fingerprint)
        if not self.legacy:
            return await super()._answer(
                name, msisdn, request_key, args, fingerprint or session_fingerprint(name, args)
            )
        k = K.SubscriberKeys.of(msisdn)
        keys = k.for_script(name, request_key, legacy=True)
        args[3] = self.session_ttl_ms
        args += [fingerprint or session_fingerprint(name, args), self.thresholds_generation]
        return ScriptAnswer.parse(await self._scripts[name](keys, args))


async def store_with(
    client: PipelinedRedis, variant: Variant, baseline: str, session_ttl_ms: int | None = None
) -> Store:
    """A Store whose session scripts are the variant's copies called by EVALSHA (the others
    as shipped), or the shipped library called by FCALL (``functions``), or the baseline's
    library, loaded."""
    old = variant.baseline and (legacy_args(baseline) or fingerprint_arg(baseline))
    store = (BaselineStore if old else Store)(
        client,
        session_ttl_ms=session_ttl_ms or IDEMPOTENCY_TTL_SESSION * 1000,
        reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000,
    )
    if isinstance(store, BaselineStore):
        store.legacy = legacy_args(baseline)
    await store.load_scripts(functions=variant.functions)
    if variant.baseline:
        if store.script_mode != "functions":
            raise SystemExit("scripts_cost: this Redis has no Functions (7.0+ needed)")
        lib = build_library(SCRIPT_NAMES, read=baseline_source(baseline))
        loader = LibraryLoader(client, lib.code)
        await loader.load()
        store._scripts = {
            name: Function(client, lib.functions[name], lib.name, loader) for name in SCRIPT_NAMES
        }
        return store
    if variant.functions:
        if store.script_mode != "functions":
            raise SystemExit("scripts_cost: this Redis has no Functions (7.0+ needed)")
        return store
    for name in SESSION_SCRIPTS:
        store._scripts[name] = client.register_script(variant.source(name))
        # (loaded before the measured window)
        await client.execute("SCRIPT", "LOAD", variant.source(name))
    return store


@dataclass
class Sample:
    calls: int
    cpu_us: float  # INFO cpu delta / calls
    script_us: float  # commandstats evalsha usec / calls
    aof_bytes: float  # AOF growth / calls (0 without AOF)
    mem_bytes: float = 0.0  # used_memory growth / calls (answers + outbox entries)
    answer_bytes: float = 0.0  # the same once the run's outbox entries are deleted


async def _used_memory(client: PipelinedRedis) -> int:
    return int(parse_info(await client.execute("INFO", "memory"))["used_memory"])


async def _stats(client: PipelinedRedis) -> tuple[float, float, int, int]:
    cpu = parse_info(await client.execute("INFO", "cpu"))
    cmd = parse_info(await client.execute("INFO", "commandstats"))
    persistence = parse_info(await client.execute("INFO", "persistence"))
    usec, calls = 0.0, 0
    for name in ("cmdstat_evalsha", "cmdstat_fcall"):
        raw = cmd.get(name, "")
        fields = dict(x.split("=", 1) for x in raw.split(",") if "=" in x)
        usec += float(fields.get("usec", 0))
        calls += int(fields.get("calls", 0))
    return (
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        usec,
        calls,
        int(persistence.get("aof_current_size", 0) or 0),
    )


async def _sessions(
    store: Store, sessions: int, inflight: int, subscribers: int, tag: str
) -> Meter:
    price = Prices.of_plan()
    rng = random.Random(7)
    meter = Meter()
    todo = iter(range(sessions))

    async def user() -> None:
        for i in todo:
            sub = msisdn(rng.randrange(subscribers))
            sid = f"{tag}.{i}"
            await scripted_session(store, price, sub, sid, meter)

    await asyncio.gather(*(user() for _ in range(inflight)))
    return meter


async def run_variant(
    variant: Variant,
    url: str,
    sessions: int,
    inflight: int,
    subscribers: int,
    tag: str,
    baseline: str,
) -> Sample:
    async with PipelinedRedis.from_url(url) as client:
        store = await store_with(client, variant, baseline)
        await TariffRegistry(store, default_rater(), load_plans()).publish_thresholds()
        memory = variant.functions
        if memory:
            # (the outboxes emptied first, so that deleting them after the run frees this run's)
            for b in range(64):
                await client.execute("DEL", K.outbox_key(b))
            mem0 = await _used_memory(client)
        before = await _stats(client)
        meter = await _sessions(store, sessions, inflight, subscribers, tag)
        after = await _stats(client)
        mem = answers = 0
        if memory:
            mem = await _used_memory(client) - mem0
            # The run's outbox entries go (the answers stay, as they would for their window).
            for b in range(64):
                await client.execute("DEL", K.outbox_key(b))
            answers = await _used_memory(client) - mem0
    if variant.name in ("full", "functions", "before") and meter.failures:
        raise SystemExit(f"scripts_cost: unexpected answers {dict(meter.failures)}")
    calls = after[2] - before[2]
    return Sample(
        calls=calls,
        cpu_us=(after[0] - before[0]) * 1e6 / calls,
        script_us=(after[1] - before[1]) / calls,
        aof_bytes=(after[3] - before[3]) / calls if variant.aof else 0.0,
        mem_bytes=mem / calls,
        answer_bytes=answers / calls,
    )


async def prepare(url: str, subscribers: int, baseline: str | None = None) -> None:
    """The subscribers, created, with the thresholds the runs publish already applied: else
    the first run to touch an account pays for evaluating them (and writing them: ~60 AOF
    bytes), which falls on whichever variants run first. With ``baseline``, created by that
    revision's scripts (its accounts as it would have made them: the order of their fields,
    docs/architecture.md, Performance 18)."""
    if baseline is None:
        await load_subscribers(url, subscribers)
    else:
        async with PipelinedRedis.from_url(url) as client:
            before = next(v for v in VARIANTS if v.baseline)
            await create_subscribers(await store_with(client, before, baseline), subscribers)
    async with PipelinedRedis.from_url(url) as client:
        store = Store(client, session_ttl_ms=1000, reference_ttl_ms=1000)
        await store.load_scripts()
        await TariffRegistry(store, default_rater(), load_plans()).publish_thresholds()
        now = now_ms()
        for start in range(0, subscribers, 500):
            await asyncio.gather(
                *(store.expire(msisdn(i), now) for i in range(start, min(start + 500, subscribers)))
            )


#: The deletion phase: answers kept this long, then this long a wait before the sweep.
SHORT_TTL_MS: Final = 1500
WAIT_S: Final = 3.0


async def _cpu(client: PipelinedRedis) -> float:
    cpu = parse_info(await client.execute("INFO", "cpu"))
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def deletion_cost(
    variant: Variant, url: str, sessions: int, inflight: int, subscribers: int, baseline: str
) -> float:
    """Redis CPU per request (us) to delete the answers once past their window: keys expiring
    (``before``) or the expiry passes the sweeper's step runs (the shipped scripts)."""
    async with PipelinedRedis.from_url(url) as client:
        store = await store_with(client, variant, baseline, session_ttl_ms=SHORT_TTL_MS)
        await TariffRegistry(store, default_rater(), load_plans()).publish_thresholds()
        c0, t0 = await _cpu(client), time.monotonic()
        await asyncio.sleep(WAIT_S)
        idle = (await _cpu(client) - c0) / (time.monotonic() - t0)  # (CPU s per s)
        await _sessions(store, sessions, inflight, subscribers, "del")
        calls = 3 * sessions
        keys0 = int(await client.execute("DBSIZE"))
        answer_keys = calls if variant.baseline and legacy_args(baseline) else 0
        c0, t0 = await _cpu(client), time.monotonic()
        await asyncio.sleep(WAIT_S)  # (the keys expire meanwhile)
        # The sweeper's step, at a time past every session's hold too (the baseline's pass
        # at the released sessions' holds is counted as well).
        later = now_ms() + 2 * HOLD_MS
        for b in range(64):
            while due := await store.due_for_expiry(b, later, 1000):
                await asyncio.gather(*(store.expire(m, later) for m in due))
        while int(await client.execute("DBSIZE")) > keys0 - answer_keys:
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"scripts_cost: {variant.name}: answer keys left after 30 s")
            await asyncio.sleep(0.2)
        spent = await _cpu(client) - c0 - idle * (time.monotonic() - t0)
        fields = 0
        for i in range(subscribers):
            fields += await client.execute("HLEN", K.SubscriberKeys.of(msisdn(i)).sessions)
        if fields:
            raise SystemExit(f"scripts_cost: {variant.name}: {fields} answers left after the sweep")
    return spent * 1e6 / calls


def components(m: dict[str, float]) -> list[tuple[str, float]]:
    """The issue's component table from the medians of the variants (us per request)."""
    rows = [
        ("EVALSHA itself (arguments, KEYS/ARGV tables, reply, network)", m["evalsha"]),
        ("the lib.lua prelude run again on every call", m["prelude"] - m["evalsha"]),
        ("the outbox XADD of the request's event", m["full"] - m["no-outbox"]),
        (
            "the session answer (its field in the sessions hash, read and written)",
            m["full"] - m["no-idem"],
        ),
        ("AOF (appendonly yes vs no)", m["full"] - m["no-aof"]),
        ("account HMGET (12 fields) + HSET", m["account"] - m["prelude"]),
        ("session HGET + unpack + pack + HSET", m["session"] - m["prelude"]),
    ]
    rows.append(("other Lua logic, tables, string.format, GC (the rest)",
                 m["full"] - sum(v for _, v in rows)))  # fmt: skip
    # A lever, not a component: the same scripts as one Functions library (FCALL).
    rows.append(("saved by Redis Functions (full EVALSHA - FCALL)",
                 m["full"] - m["functions"]))  # fmt: skip
    return rows


#: Variants on a server of their own (AOF everysec): the scripts before and now, each on
#: data only it wrote (the ablation copies do not keep the sessions hash's count of open
#: sessions, and some write sessions that are not real ones).
OWN_SERVER: Final = ("before", "functions")


def measure(ns: argparse.Namespace) -> tuple[dict[str, Sample], list[str]]:
    with (
        tempfile.TemporaryDirectory(prefix="ocs-scripts-cost-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        aof = EmbeddedRedis(Path(tmp) / "aof", extra_args=("--appendfsync", "everysec"))
        plain = EmbeddedRedis(Path(tmp) / "plain", appendonly=False)
        own = {
            name: EmbeddedRedis(Path(tmp) / name, extra_args=("--appendfsync", "everysec"))
            for name in OWN_SERVER
        }
        for server in own.values():
            server.start()
            stack.callback(server.stop)
        for name, server in own.items():
            uvloop.run(
                prepare(server.url, ns.subscribers, ns.baseline if name == "before" else None)
            )
        aof.start()
        try:
            plain.start()
            try:
                version = aof.version
                for server in (aof, plain):
                    uvloop.run(prepare(server.url, ns.subscribers))
                runs: dict[str, list[Sample]] = {v.name: [] for v in VARIANTS}
                order = list(VARIANTS)
                rng = random.Random(11)
                for rnd in range(ns.rounds):
                    rng.shuffle(order)
                    for v in order:
                        url = own[v.name].url if v.name in own else aof.url if v.aof else plain.url
                        s = uvloop.run(
                            run_variant(v, url, ns.sessions, ns.inflight, ns.subscribers,
                                        f"{v.name}.{rnd}", ns.baseline)
                        )  # fmt: skip
                        runs[v.name].append(s)
                    print(f"scripts_cost: round {rnd + 1}/{ns.rounds} done", flush=True)
            finally:
                plain.stop()
        finally:
            aof.stop()
        deletion: dict[str, list[float]] = {"before": [], "functions": []}
        for rnd in range(ns.rounds):
            for v in VARIANTS:
                if v.name not in deletion:
                    continue
                fresh = EmbeddedRedis(Path(tmp) / f"del-{v.name}-{rnd}",
                                      extra_args=("--appendfsync", "everysec"))  # fmt: skip
                fresh.start()
                try:
                    uvloop.run(prepare(
                        fresh.url, ns.subscribers, ns.baseline if v.baseline else None
                    ))  # fmt: skip
                    deletion[v.name].append(uvloop.run(
                        deletion_cost(v, fresh.url, ns.sessions, ns.inflight, ns.subscribers,
                                      ns.baseline)
                    ))  # fmt: skip
                finally:
                    fresh.stop()
            print(f"scripts_cost: deletion round {rnd + 1}/{ns.rounds} done", flush=True)
    med = {
        name: Sample(
            calls=samples[0].calls,
            cpu_us=statistics.median(s.cpu_us for s in samples),
            script_us=statistics.median(s.script_us for s in samples),
            aof_bytes=statistics.median(s.aof_bytes for s in samples),
            mem_bytes=statistics.median(s.mem_bytes for s in samples),
            answer_bytes=statistics.median(s.answer_bytes for s in samples),
        )
        for name, samples in runs.items()
    }
    for name, costs in deletion.items():
        med[f"{name}.deletion"] = Sample(0, statistics.median(costs), 0.0, 0.0)
    return med, [f"redis-server {version}"]


def report(med: dict[str, Sample], ns: argparse.Namespace, notes: list[str]) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Scripts cost (bench/scripts_cost.py), {when}, commit {git_commit()}",
        "",
        f"{notes[0]}, AOF everysec; {ns.rounds} interleaved rounds of {ns.sessions} sessions "
        f"(3 calls each), {ns.inflight} in flight, {ns.subscribers} subscribers; medians.",
        "",
        "| variant | Redis CPU us/call (INFO cpu) | EVALSHA us/call (commandstats) "
        "| AOF bytes/call |",
        "|---|---:|---:|---:|",
    ]
    for v in VARIANTS:
        s = med[v.name]
        lines.append(f"| {v.name} | {s.cpu_us:.1f} | {s.script_us:.1f} | {s.aof_bytes:.0f} |")
    lines += ["", "| component | us of Redis CPU per request | of which in the script |",
              "|---|---:|---:|"]  # fmt: skip
    cpu = components({k: s.cpu_us for k, s in med.items()})
    script = dict(components({k: s.script_us for k, s in med.items()}))
    for name, value in cpu:
        lines.append(f"| {name} | {value:.1f} | {script[name]:.1f} |")
    lines.append(f"| **total (full, EVALSHA)** | **{med['full'].cpu_us:.1f}** "
                 f"| **{med['full'].script_us:.1f}** |")  # fmt: skip
    lines.append(f"| **total (functions, FCALL)** | **{med['functions'].cpu_us:.1f}** "
                 f"| **{med['functions'].script_us:.1f}** |")  # fmt: skip
    b, f = med["before"], med["functions"]
    bd, fd = med["before.deletion"].cpu_us, med["functions.deletion"].cpu_us
    lines += [
        "",
        f"Before ({ns.baseline}) and now, both by FCALL, same run:",
        "",
        "| per request | before | now | change |",
        "|---|---:|---:|---:|",
        f"| Redis CPU us (INFO cpu) | {b.cpu_us:.1f} | {f.cpu_us:.1f} "
        f"| {f.cpu_us - b.cpu_us:+.1f} |",
        f"| FCALL us (commandstats) | {b.script_us:.1f} | {f.script_us:.1f} "
        f"| {f.script_us - b.script_us:+.1f} |",
        f"| deleting the answers later, Redis CPU us | {bd:.1f} | {fd:.1f} | {fd - bd:+.1f} |",
        f"| AOF bytes | {b.aof_bytes:.0f} | {f.aof_bytes:.0f} | {f.aof_bytes - b.aof_bytes:+.0f} |",
        f"| memory held, bytes (answers + outbox) | {b.mem_bytes:.0f} | {f.mem_bytes:.0f} "
        f"| {f.mem_bytes - b.mem_bytes:+.0f} |",
        f"| of which the answers | {b.answer_bytes:.0f} | {f.answer_bytes:.0f} "
        f"| {f.answer_bytes - b.answer_bytes:+.0f} |",
    ]
    return "\n".join(lines) + "\n"


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--sessions", type=int, default=2000, help="sessions per variant per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--subscribers", type=int, default=2000)
    p.add_argument("--baseline", default=BASELINE,
                   help=f"git revision of the 'before' scripts (default {BASELINE})")  # fmt: skip
    p.add_argument("--no-append", dest="append", action="store_false")
    ns = p.parse_args()
    t = time.monotonic()
    med, notes = measure(ns)
    text = report(med, ns, notes)
    print(text, flush=True)
    print(f"scripts_cost: {time.monotonic() - t:.0f} s", flush=True)
    if ns.append:
        with RESULTS.open("a") as f:
            f.write("\n" + text)


assert set(SESSION_SCRIPTS) <= set(SCRIPT_NAMES)

if __name__ == "__main__":
    cli()
