"""Authentication of network elements: the shared secrets the native protocol's ``hello``
handshake is checked against (protocols.native.server.HelloKeys), and what a refused
connection leaves behind, on the native protocol and on Diameter: a metric, a log line, an
audit record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from ocs.auth.http import Security
from ocs.metrics import Metrics

__all__ = ["NativeKeys", "Refusals"]

log = logging.getLogger(__name__)


class Refusals:
    """Counts, logs and audits the connections ``interface`` refused (a callable for the
    servers: ``refusals(peer, reason)``)."""

    def __init__(self, interface: str, metrics: Metrics, security: Security) -> None:
        self.interface = interface
        self.metrics = metrics
        self.security = security
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, peer: object, reason: str) -> None:
        self.metrics.auth_failure(self.interface, reason.replace(" ", "-"))
        log.warning("%s: connection from %s refused: %s", self.interface, peer, reason)
        task = asyncio.get_running_loop().create_task(
            self.security.record_event(
                action="auth.failure",
                target=self.interface,
                status="unauthenticated",
                detail=reason,
                **{"from": str(peer)},
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the audit records still being written."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class NativeKeys:
    """Key id -> shared secret, from OCS_NATIVE_KEYS (or its _FILE); never logged."""

    def __init__(self, keys: Mapping[str, bytes], refusals: Refusals) -> None:
        self._keys = dict(keys)
        self.refusals = refusals

    def __repr__(self) -> str:
        return f"NativeKeys({len(self._keys)} keys)"

    def secret(self, key: str) -> bytes | None:
        return self._keys.get(key)

    def refused(self, peer: object, reason: str) -> None:
        self.refusals(peer, reason)
