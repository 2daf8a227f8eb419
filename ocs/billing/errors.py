"""What billing refuses, each carrying the HTTP status it maps to (architecture.md,
Conventions: errors per layer)."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from ocs.api.problems import FieldError


class BillingError(Exception):
    """Base of billing's refusals; ``status`` is the HTTP answer."""

    status: int = HTTPStatus.UNPROCESSABLE_ENTITY
    type_: str = "urn:ocs:problem:billing"


class NotFound(BillingError):
    """No such object (or not one the caller's agency may see: the same answer)."""

    status = HTTPStatus.NOT_FOUND
    type_ = "urn:ocs:problem:billing-not-found"


class Conflict(BillingError):
    """The request contradicts what is stored (an issued invoice, an existing code)."""

    status = HTTPStatus.CONFLICT
    type_ = "urn:ocs:problem:billing-conflict"


class Invalid(BillingError):
    """Input that does not validate; ``errors`` names each bad field."""

    type_ = "urn:ocs:problem:invalid-input"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.detail}" for e in errors))
        self.errors = tuple(errors)


def invalid(field: str, detail: str) -> Invalid:
    return Invalid([FieldError(field, detail)])


class StorageUnavailable(BillingError):
    """The billing database cannot be reached (the driver's error is the cause)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type_ = "urn:ocs:problem:billing-store-unavailable"
