"""Errors of the store layer.

Driver errors (:mod:`ocs.store.redis_client`, redis-py) never leave the store: they are
wrapped, ``raise StoreUnavailable(...) from exc``.
"""

from __future__ import annotations

__all__ = ["StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base class of every error the store raises."""


class StoreUnavailable(StoreError):
    """Redis is unreachable, the connection was lost, or a reply did not come in time.

    Whether a command that was in flight took effect is unknown: callers retry only
    operations that are idempotent (the scripts key them by request id).
    """
