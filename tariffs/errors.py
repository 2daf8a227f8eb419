"""Rating errors: the charging engine answers each with rating-failed."""

from __future__ import annotations


class RatingError(Exception):
    """Units could not be rated (no plan, no price for the service, bad context)."""


class UnknownPlan(RatingError):
    """The subscriber's plan is not loaded, or has no version in force at that time."""


class UnknownService(RatingError):
    """The plan has no such service."""


class PlanFileError(RatingError):
    """A plan file is not valid. ``problems`` lists each one, naming the file, the line where
    it can be found, and the path of the value."""

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)
