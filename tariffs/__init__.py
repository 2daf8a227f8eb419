"""Rating: turning units into money and money into units, exactly and without I/O.

The charging engine talks to rating only through the :class:`Rater` protocol
(:mod:`tariffs.interface`); :class:`TariffRater` (:mod:`tariffs.rater`) implements it over plans
written in the TOML format of :mod:`tariffs.plan` (docs/tariffs.md). The shipped plans are in
``tariffs/plans/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tariffs.errors import PlanFileError, RatingError, UnknownPlan, UnknownService
from tariffs.interface import Rater, ServiceSpec, UnitKind, UsageContext
from tariffs.plan import (
    THRESHOLD_ACTIONS,
    PlanVersion,
    Threshold,
    load_plan_file,
    parse_plan,
    parse_thresholds,
)
from tariffs.rater import PlanBook, Rating, TariffRater

__all__ = [
    "THRESHOLD_ACTIONS",
    "PlanBook",
    "PlanFileError",
    "PlanVersion",
    "Rater",
    "Rating",
    "RatingError",
    "ServiceSpec",
    "TariffRater",
    "Threshold",
    "UnitKind",
    "UnknownPlan",
    "UnknownService",
    "UsageContext",
    "load_plan_file",
    "load_plans",
    "parse_plan",
    "parse_thresholds",
    "shipped_plans_dir",
]


def shipped_plans_dir() -> Path:
    return Path(__file__).parent / "plans"


def load_plans(dirs: Iterable[str | Path] = ()) -> list[PlanVersion]:
    """Every ``*.toml`` plan shipped in tariffs/plans/, then those in ``dirs``."""
    out: list[PlanVersion] = []
    for d in (shipped_plans_dir(), *dirs):
        out.extend(load_plan_file(f) for f in sorted(Path(d).glob("*.toml")))
    return out
