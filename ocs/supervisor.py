"""``ocs serve --workers N``: N OCS processes sharing the listening ports, and one supervisor.

docs/architecture.md (Scale): one OCS process is one event loop on one core and holds no state
that Redis does not, so more load is more processes against the same Redis. The workers share
nothing but Redis: a Diameter peer or a native client may connect to any of them, and a session
opened through one is continued by another (the engine finds the session in Redis).

The supervisor (this module, one process):

* resolves the ports (0: a free one) and holds each with a bound, non-listening socket that has
  SO_REUSEPORT, for as long as it runs: every worker binds the same port with SO_REUSEPORT and
  the kernel spreads new connections over the listening ones (a socket that does not listen
  gets none), and no other program can take the port while a worker restarts;
* starts the embedded Redis when no Redis URL is configured, one for all workers;
* starts each worker as ``python -m ocs.cli serve --workers 1 --ready-fd FD`` with the resolved
  ports and Redis URL; the worker writes a line to FD once it serves (:func:`serve_worker`);
* restarts a worker that exits, after a back-off that doubles from ``backoff_min`` to
  ``backoff_max`` seconds and starts again from the minimum once a worker has served for
  ``stable_after`` seconds;
* on SIGTERM or SIGINT: SIGTERM to every worker (each stops accepting, drains the requests in
  flight and closes: ocs/service.py), SIGKILL to any still running after ``stop_timeout``
  seconds, then stops the Redis it started.

Workers run in sessions of their own (a Ctrl-C at the terminal reaches only the supervisor,
which stops them in order) and receive SIGTERM if the supervisor dies without stopping them
(Linux PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

from ocs.config import Settings
from ocs.telemetry import METRICS_DIR_ENV

log = logging.getLogger("ocs.supervisor")

#: Seconds between a worker's exit and its restart: doubling from the first to the second.
BACKOFF: tuple[float, float] = (0.5, 30.0)
#: A worker that served this many seconds before it exited is restarted after the shortest
#: back-off again.
STABLE_AFTER = 60.0
#: Seconds the workers get to drain after SIGTERM (the native listener's own drain is 10 s and
#: the Diameter DPR/DPA exchange 5 s more) before SIGKILL.
STOP_TIMEOUT = 20.0

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    # Looked up here, in the parent: the child between fork and exec only makes the call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def hold_ports(settings: Settings) -> tuple[Settings, list[socket.socket]]:
    """Bind (without listening) the native, admin and Diameter ports with SO_REUSEPORT.

    Returns the settings with every port resolved (0 becomes the port the system chose) and
    the sockets, which the caller keeps open while the workers run. ``OSError`` when a port is
    taken by a program that does not share it.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers needs SO_REUSEPORT, which this system does not have")
    held: list[socket.socket] = []
    resolved: dict[str, int] = {}
    try:
        for name in ("native_port", "http_port", "diameter_port"):
            port = int(getattr(settings, name))
            infos = socket.getaddrinfo(
                settings.bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, addr in infos:
                sock = socket.socket(family, kind, proto)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    # As asyncio binds it: an IPv6 socket beside an IPv4 one on the same port.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((addr[0], port, *addr[2:]))
                except OSError as exc:
                    raise OSError(
                        f"cannot bind {name.replace('_', ' ')} {addr[0]}:{port}: {exc.strerror}"
                    ) from None
                port = sock.getsockname()[1]  # the first binding resolves port 0
            resolved[name] = port
    except BaseException:
        for sock in held:
            sock.close()
        raise
    ports = resolved["native_port"], resolved["http_port"], resolved["diameter_port"]
    return dataclasses.replace(
        settings, native_port=ports[0], http_port=ports[1], diameter_port=ports[2]
    ), held


def worker_argv(
    settings: Settings, redis_url: str, ready_fd: int, extra: Sequence[str]
) -> list[str]:
    """The command line of one worker: ``extra`` (the user's --config, --data-dir, ...), then
    the resolved listeners and Redis, which the worker must use as they are."""
    return [
        sys.executable, "-m", "ocs.cli", "serve", *extra, "--workers", "1",
        "--redis-url", redis_url, "--bind", settings.bind,
        "--native-port", str(settings.native_port), "--http-port", str(settings.http_port),
        "--diameter-port", str(settings.diameter_port), "--ready-fd", str(ready_fd),
    ]  # fmt: skip


class Supervisor:
    """Keeps ``workers`` worker processes running until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        workers: int,
        extra_args: Sequence[str] = (),
        *,
        backoff: tuple[float, float] = BACKOFF,
        stable_after: float = STABLE_AFTER,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.settings = settings
        self.redis_url = redis_url
        self.workers = workers
        self.extra_args = tuple(extra_args)
        self.backoff = backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        #: The running worker of each slot.
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        #: Restarts so far (a worker that exited and was started again).
        self.restarts = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to stop every worker and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Start the workers, keep them running, and stop them all after :meth:`stop`."""
        slots = [
            asyncio.create_task(self._keep(i), name=f"worker-{i}") for i in range(self.workers)
        ]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            # A slot ends early only when a worker cannot be started at all (an OSError).
            await asyncio.wait([stopping, *slots], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping.set()
            await self._terminate_all()
            await asyncio.gather(stopping, *slots, return_exceptions=True)
        for slot in slots:
            exc = None if slot.cancelled() else slot.exception()
            if exc is not None:
                raise exc

    async def _keep(self, slot: int) -> None:
        """Run the worker of one slot; restart it with back-off whenever it exits."""
        loop = asyncio.get_running_loop()
        delay = self.backoff[0]
        while not self._stopping.is_set():
            read_fd, write_fd = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *worker_argv(self.settings, self.redis_url, write_fd, self.extra_args),
                    stdin=subprocess.DEVNULL,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
            self.processes[slot] = proc
            started = loop.time()
            ready = asyncio.create_task(_read_ready(read_fd))
            exited = asyncio.create_task(proc.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and ready.result():
                log.info("worker %d ready (pid %d)", slot, proc.pid)
            code = await exited
            await ready
            del self.processes[slot]
            if self._stopping.is_set():
                log.info("worker %d (pid %d) stopped (%s)", slot, proc.pid, _status(code))
                return
            if loop.time() - started >= self.stable_after:
                delay = self.backoff[0]
            log.warning("worker %d (pid %d) exited (%s); restarting in %.1f s",
                        slot, proc.pid, _status(code), delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.backoff[1])
            self.restarts += 1

    async def _terminate_all(self) -> None:
        procs = list(self.processes.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not procs:
            return
        waits = [asyncio.create_task(p.wait()) for p in procs]
        _, pending = await asyncio.wait(waits, timeout=self.stop_timeout)
        if pending:
            log.warning("%d workers still running %.0f s after SIGTERM: killing them",
                        len(pending), self.stop_timeout)  # fmt: skip
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*waits)


async def _read_ready(fd: int) -> bool:
    """True once the worker writes its ready line, False when it closes the pipe without."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return (await reader.readline()).startswith(b"ready")
    finally:
        transport.close()


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _supervise(settings: Settings, workers: int, extra_args: Sequence[str]) -> None:
    from ocs.service import redis_for

    settings, held = hold_ports(settings)
    # One directory for the workers' counts: whichever worker a scrape reaches serves the sum.
    counts = tempfile.TemporaryDirectory(prefix="ocs-metrics-")
    os.environ[METRICS_DIR_ENV] = counts.name
    try:
        async with redis_for(settings) as url:
            supervisor = Supervisor(settings, url, workers, extra_args)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, supervisor.stop)
            log.info(
                "supervising %d workers: native %s:%d, diameter %s:%d, http %s:%d, redis %s",
                workers, settings.bind, settings.native_port, settings.bind,
                settings.diameter_port, settings.bind, settings.http_port, url,
            )  # fmt: skip
            try:
                await supervisor.run()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            log.info("all workers stopped")
    finally:
        for sock in held:
            sock.close()
        os.environ.pop(METRICS_DIR_ENV, None)
        counts.cleanup()


def supervise(settings: Settings, workers: int, extra_args: Sequence[str] = ()) -> int:
    """Run ``workers`` OCS processes until SIGTERM or SIGINT; the exit status."""
    asyncio.run(_supervise(settings, workers, extra_args))
    return 0


async def serve_worker(settings: Settings, ready_fd: int) -> None:
    """One supervised worker: the whole OCS with its listeners shared (SO_REUSEPORT); writes
    ``ready`` to ``ready_fd`` once it serves, and runs until SIGTERM or SIGINT."""
    from ocs.service import run_ocs

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_ocs(settings, reuse_port=True):
            try:
                os.write(ready_fd, f"ready {os.getpid()}\n".encode())
            finally:
                os.close(ready_fd)
            await stop.wait()
            log.info("shutting down: draining in-flight requests")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
