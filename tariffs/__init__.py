"""Rating: turning units into money and money into units, exactly and without I/O.

The charging engine talks to rating only through the :class:`Rater` protocol defined in
:mod:`tariffs.interface`. The first implementation, :mod:`tariffs.simple`, prices each service
at a fixed amount per block of units; the full rating engine replaces it behind the same
protocol.
"""

from __future__ import annotations

from tariffs.errors import RatingError, UnknownPlan, UnknownService
from tariffs.interface import Rater, ServiceSpec, UnitKind, UsageContext

__all__ = [
    "Rater",
    "RatingError",
    "ServiceSpec",
    "UnitKind",
    "UnknownPlan",
    "UnknownService",
    "UsageContext",
]
