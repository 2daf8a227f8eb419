"""Errors of the SIGTRAN codecs. Each carries the answer it maps to in its own protocol's
terms: an M3UA ERR's Error Code, an SCCP return cause, a TCAP P-Abort cause or a Reject
problem (as h11's errors carry ``error_status_hint``)."""

from __future__ import annotations

from protocols.sigtran.constants import ErrorCode, GeneralProblem, InvokeProblem, PAbortCause


class SigtranError(Exception):
    """A message of the stack that cannot be carried out."""


class M3uaError(SigtranError):
    """Answered with an M3UA ERR of ``code`` (RFC 4666 §3.8.1)."""

    def __init__(self, code: ErrorCode, detail: str = "", diagnostic: bytes = b"") -> None:
        super().__init__(f"M3UA {code.name}: {detail}" if detail else f"M3UA {code.name}")
        self.code = code
        self.diagnostic = diagnostic


class SccpError(SigtranError):
    """An SCCP message that cannot be read or routed; ``cause`` is the Q.713 return cause."""

    def __init__(self, cause: int, detail: str = "") -> None:
        super().__init__(f"SCCP return cause {cause}: {detail}")
        self.cause = cause


class TcapError(SigtranError):
    """A TCAP message that cannot be read: answered with a P-Abort of ``cause`` to the
    originating transaction ``otid`` when it could be found (Q.774 §3.2.1.2)."""

    def __init__(self, cause: PAbortCause, detail: str = "", otid: bytes | None = None) -> None:
        super().__init__(f"TCAP {cause.name}: {detail}")
        self.cause = cause
        self.otid = otid


class ComponentError(SigtranError):
    """A component that cannot be carried out: answered with a Reject (Q.773 §3.2.2.4)."""

    def __init__(
        self, problem: GeneralProblem | InvokeProblem, invoke_id: int | None, detail: str = ""
    ) -> None:
        super().__init__(f"reject {problem.name}: {detail}")
        self.problem = problem
        self.invoke_id = invoke_id
