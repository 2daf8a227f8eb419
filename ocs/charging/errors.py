"""Errors of the charging layer. Business outcomes are not errors: they are
:class:`ocs.charging.types.Outcome` values in a result."""

from __future__ import annotations


class ChargingError(Exception):
    """A request the engine cannot carry out for a reason that is not a business outcome."""
