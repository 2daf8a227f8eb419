"""Errors of the Diameter codec, each carrying the answer it maps to.

As h11's errors carry ``error_status_hint``, these carry a Diameter Result-Code:

* :class:`Problem` is not an exception: it describes one thing wrong in a message that was
  still read (an AVP with a bad length, an unknown AVP with the M-bit, a missing AVP...). The
  decoder lists them on ``Message.problems`` and ``validate`` adds the command's own; the
  server answers the request with ``error_answer(request, problems)`` and keeps the connection.
* :class:`FramingError` means the byte stream itself cannot be trusted (bad version, a length
  that is not a multiple of 4 or over the limit): the connection must be closed, after sending
  an answer to ``exc.request`` when there is one.
* :class:`InvalidAvpValue` is raised by ``Avp.value`` (and the typed getters) for an AVP whose
  bytes cannot be decoded as its type; the decoder has already listed it in ``problems``.
* :class:`LocalProtocolError` is raised when we are asked to build or send something Diameter
  cannot carry (a value of the wrong type or range, a message over the size limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.diameter.codec import Message

__all__ = [
    "DiameterError",
    "FramingError",
    "InvalidAvpValue",
    "LocalProtocolError",
    "Problem",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One error found in a received message, with the answer it calls for."""

    #: The Result-Code to answer with (RFC 6733 §7.1).
    result_code: int
    #: Human-readable detail, sent as Error-Message (cut to a safe length).
    message: str
    #: The offending AVP as it goes into Failed-AVP (header, data and padding), or None.
    failed_avp: bytes | None = None


class DiameterError(Exception):
    """Base class of this package's errors."""


class FramingError(DiameterError):
    """The stream cannot be read any further; close the connection.

    ``result_code`` is 5011 (DIAMETER_UNSUPPORTED_VERSION) or 5015
    (DIAMETER_INVALID_MESSAGE_LENGTH). ``request`` holds the header fields of the offending
    message, as a Message with no AVPs, when its 20-byte header arrived and it is a request: the
    server may send ``error_answer(exc.request, exc.problem, ...)`` before closing.
    """

    def __init__(self, result_code: int, detail: str, request: Message | None = None) -> None:
        super().__init__(detail)
        self.result_code = result_code
        self.detail = detail
        self.request = request

    @property
    def problem(self) -> Problem:
        """The error as a :class:`Problem`, for ``error_answer``."""
        return Problem(self.result_code, self.detail)


class InvalidAvpValue(DiameterError):
    """An AVP's bytes are not a valid value of its type (``problem`` says how to answer)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class LocalProtocolError(DiameterError, ValueError):
    """We were asked to build or send something Diameter cannot carry."""
