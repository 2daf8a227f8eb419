"""Error answers of the HTTP API as RFC 9457 "problem details" (``application/problem+json``).

Every error the API returns is a JSON object with ``type`` (a URI naming the kind of problem),
``title`` (the same for every occurrence of that kind), ``status`` (the HTTP status, repeated),
``detail`` (this occurrence, for a human) and, per RFC 9457 section 3.2, extension members:
``field`` and ``errors`` for invalid input; ``errors`` (one line per problem) for an invalid
tariff plan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from aiohttp import web

__all__ = [
    "CONTENT_TYPE",
    "TYPE_BLANK",
    "TYPE_INVALID_INPUT",
    "TYPE_INVALID_PLAN",
    "TYPE_MALFORMED_JSON",
    "TYPE_REFERENCE_CONFLICT",
    "TYPE_STORE_UNAVAILABLE",
    "TYPE_SUBSCRIBER_EXISTS",
    "TYPE_UNKNOWN_PLAN",
    "TYPE_UNKNOWN_SUBSCRIBER",
    "FieldError",
    "InvalidInput",
    "invalid_input",
    "invalid_plan",
    "problem",
    "reference_conflict",
]

CONTENT_TYPE: Final = "application/problem+json"

#: RFC 9457 section 4.2.1: no more semantics than the status code itself.
TYPE_BLANK: Final = "about:blank"
TYPE_INVALID_INPUT: Final = "urn:ocs:problem:invalid-input"
TYPE_MALFORMED_JSON: Final = "urn:ocs:problem:malformed-json"
TYPE_UNKNOWN_SUBSCRIBER: Final = "urn:ocs:problem:unknown-subscriber"
TYPE_SUBSCRIBER_EXISTS: Final = "urn:ocs:problem:subscriber-exists"
TYPE_STORE_UNAVAILABLE: Final = "urn:ocs:problem:store-unavailable"
TYPE_UNKNOWN_PLAN: Final = "urn:ocs:problem:unknown-plan"
TYPE_INVALID_PLAN: Final = "urn:ocs:problem:invalid-plan"
TYPE_REFERENCE_CONFLICT: Final = "urn:ocs:problem:reference-conflict"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input: ``field`` is a path into the body or query (``buckets[0].units``)."""

    field: str
    detail: str


class InvalidInput(Exception):
    """Raised by request parsing; the app answers it with :func:`invalid_input` (422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.detail}" for e in errors))
        self.errors = tuple(errors)


def problem(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = TYPE_BLANK,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    """An ``application/problem+json`` response.

    ``title`` defaults to the status's reason phrase (as RFC 9457 asks for ``about:blank``);
    ``extra`` members are added to the object as they are (they must be JSON-serialisable).
    """
    body: dict[str, object] = {
        "type": type_,
        "title": title if title is not None else HTTPStatus(status).phrase,
        "status": int(status),
    }
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


def invalid_input(errors: Sequence[FieldError]) -> web.Response:
    """422 naming the first bad field in ``field``/``detail`` and every one in ``errors``."""
    if not errors:
        raise ValueError("invalid_input() needs at least one FieldError")
    first = errors[0]
    detail = f"{first.field}: {first.detail}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "Unprocessable Content",
        detail,
        type_=TYPE_INVALID_INPUT,
        field=first.field,
        errors=[{"field": e.field, "detail": e.detail} for e in errors],
    )


def invalid_plan(problems: Sequence[str]) -> web.Response:
    """422 for a tariff plan file that does not validate: ``errors`` lists every problem as the
    plan loader wrote it (file, line where known, path of the value, what is wrong)."""
    if not problems:
        raise ValueError("invalid_plan() needs at least one problem")
    detail = problems[0]
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more)"
    return problem(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "Invalid tariff plan",
        detail,
        type_=TYPE_INVALID_PLAN,
        errors=list(problems),
    )


def reference_conflict(operation: str, reference: str) -> web.Response:
    """409: ``reference`` was already used for a different ``operation`` request (another
    amount, say). The first request's effect stands and this one changed nothing."""
    return problem(
        HTTPStatus.CONFLICT,
        "Reference already used",
        f"reference {reference!r} was already used for a different {operation}; "
        "the first one stands and nothing changed",
        type_=TYPE_REFERENCE_CONFLICT,
        reference=reference,
    )
