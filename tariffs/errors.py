"""Rating errors: the charging engine answers each with rating-failed."""

from __future__ import annotations


class RatingError(Exception):
    """Units could not be rated (no plan, no price for the service, bad context)."""


class UnknownPlan(RatingError):
    """The subscriber's plan is not loaded."""


class UnknownService(RatingError):
    """The plan has no such service."""


class PlanFileError(RatingError):
    """A plan file is not valid; the message names the file and the problem."""
