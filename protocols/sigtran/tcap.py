"""TCAP (ITU-T Q.773) carrying CAP (3GPP TS 29.078), on pycrate's ``TCAP_CAP`` grammar.

pycrate is the codec (its import takes a moment: :func:`grammar` loads it once). Decoding is
done at this edge and nothing from pycrate leaks past it: any exception it raises on
malformed input becomes a :class:`~protocols.sigtran.errors.TcapError` (answered with a
P-Abort), and a component it could read the frame of but not the argument becomes a
:class:`~protocols.sigtran.errors.ComponentError` (answered with a Reject), never a crash.

Also here: the table of open dialogues (transaction ids, the phase of each, its peer, the TC
timer), sans-IO: the caller passes the clock.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from protocols.sigtran import fastber
from protocols.sigtran.constants import (
    AC_OF_PHASE,
    APPLICATION_CONTEXTS,
    ARGUMENT_TYPES,
    DIALOGUE_AS_ID,
    GeneralProblem,
    InvokeProblem,
    PAbortCause,
    Phase,
)
from protocols.sigtran.errors import ComponentError, TcapError
from protocols.sigtran.sccp import SccpAddress

#: Dialogue-as protocol version 1 (a BIT STRING of one bit, set).
_VERSION1: Final = (1, 1)
#: Message-type tags (Q.773 §4.2.1): a fallback reader uses them to find the originating
#: transaction of a message pycrate could not read.
_TAGS: Final = {0x61: "unidirectional", 0x62: "begin", 0x64: "end", 0x65: "continue",
                0x67: "abort"}  # fmt: skip
_OTID_TAG: Final = 0x48


@functools.cache
def grammar() -> Any:
    """pycrate's TCAP_CAP message type (imported once, on first use)."""
    from pycrate_asn1dir import TCAP_CAP

    return TCAP_CAP.TCAP_CAP_Messages.TCAP_CAP_Message


class MessageType(StrEnum):
    BEGIN = "begin"
    CONTINUE = "continue"
    END = "end"
    ABORT = "abort"
    UNIDIRECTIONAL = "unidirectional"


@dataclass(frozen=True, slots=True)
class Invoke:
    """An operation invoked. ``argument``: the operation's argument as pycrate's value (dicts,
    tuples for CHOICEs, bytes), or None for an operation without one."""

    invoke_id: int
    opcode: int
    argument: Any = None
    linked_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReturnResult:
    invoke_id: int
    opcode: int | None = None
    result: Any = None


@dataclass(frozen=True, slots=True)
class ReturnError:
    invoke_id: int
    code: int


@dataclass(frozen=True, slots=True)
class Reject:
    invoke_id: int | None
    problem: GeneralProblem | InvokeProblem


Component = Invoke | ReturnResult | ReturnError | Reject


class DialogueKind(StrEnum):
    REQUEST = "dialogueRequest"
    RESPONSE = "dialogueResponse"
    ABORT = "dialogueAbort"


@dataclass(frozen=True, slots=True)
class DialoguePortion:
    """The structured dialogue (Q.773 §4.2.3): AARQ, AARE or ABRT. ``result`` 0 accepted, 1
    reject-permanent; ``diagnostic`` the dialogue-service-user diagnostic (2:
    application-context-name-not-supported)."""

    kind: DialogueKind
    application_context: tuple[int, ...] | None = None
    result: int = 0
    diagnostic: int = 0

    @property
    def phase(self) -> Phase | None:
        ac = self.application_context
        return None if ac is None else APPLICATION_CONTEXTS.get(ac)


@dataclass(frozen=True, slots=True)
class TcapMessage:
    type: MessageType
    otid: bytes | None = None
    dtid: bytes | None = None
    dialogue: DialoguePortion | None = None
    components: tuple[Component, ...] = ()
    #: An Abort from the TC provider (a P-Abort cause) or from its user (None: u-abort).
    p_abort: PAbortCause | None = None
    #: Components read whose argument could not be (each is answered with a Reject).
    bad_components: tuple[ComponentError, ...] = ()


# -- decoding -----------------------------------------------------------------------------------


def _int_choice(v: Any) -> int | None:
    if isinstance(v, tuple) and v[0] == "present":
        return int(v[1])
    return None


def _dialogue(dp: Any) -> DialoguePortion | None:
    if not isinstance(dp, dict):
        return None
    enc = dp.get("encoding")
    if not (isinstance(enc, tuple) and enc[0] == "single-ASN1-type"):
        raise TcapError(PAbortCause.BADLY_FORMATTED_TRANSACTION_PORTION, "dialogue encoding")
    _, (_, (kind, pdu)) = enc
    if kind == "dialogueRequest":
        return DialoguePortion(DialogueKind.REQUEST, tuple(pdu["application-context-name"]))
    if kind == "dialogueResponse":
        diag = pdu.get("result-source-diagnostic", ("dialogue-service-user", 0))[1]
        return DialoguePortion(DialogueKind.RESPONSE, tuple(pdu["application-context-name"]),
                               int(pdu["result"]), int(diag))  # fmt: skip
    if kind == "dialogueAbort":
        return DialoguePortion(DialogueKind.ABORT, None, 0, int(pdu["abort-source"]))
    return None  # (a unidialogue PDU)


def _component(c: Any, bad: list[ComponentError]) -> Component | None:
    _, (kind, body) = c
    iid = _int_choice(body.get("invokeId"))
    if kind == "invoke":
        opcode = body["opcode"]
        if opcode[0] != "local" or int(opcode[1]) not in ARGUMENT_TYPES:
            bad.append(ComponentError(InvokeProblem.UNRECOGNIZED_OPERATION, iid,
                                      f"operation {opcode[1]}"))  # fmt: skip
            return None
        op = int(opcode[1])
        arg = body.get("argument")
        if arg is not None:
            name, value = arg
            if name != ARGUMENT_TYPES[op]:
                bad.append(
                    ComponentError(
                        InvokeProblem.MISTYPED_ARGUMENT,
                        iid,
                        f"argument of operation {op} cannot be read",
                    )
                )
                return None
            arg = value
        elif ARGUMENT_TYPES[op] is not None:
            bad.append(ComponentError(InvokeProblem.MISTYPED_ARGUMENT, iid,
                                      f"operation {op} without its argument"))  # fmt: skip
            return None
        assert iid is not None
        return Invoke(iid, op, arg, _int_choice(body.get("linkedId")))
    if kind == "returnResult":
        res = body.get("result")
        rop = None if res is None else int(res["opcode"][1])
        return ReturnResult(iid or 0, rop, None if res is None else res["result"])
    if kind == "returnError":
        return ReturnError(iid or 0, int(body["errcode"][1]))
    problem_kind, code = body["problem"]
    problem: GeneralProblem | InvokeProblem
    try:
        problem = (GeneralProblem if problem_kind == "general" else InvokeProblem)(int(code))
    except ValueError:
        problem = GeneralProblem.UNRECOGNIZED_COMPONENT
    return Reject(iid, problem)


_TYPES: Final = {t.value: t for t in MessageType}


def _decode_fast(data: bytes) -> TcapMessage:
    """The fast path's message straight from its parts (no pycrate value built and read
    back): what :func:`decode` makes of the same bytes, or Fallback."""
    kind, otid, dtid, dp, invokes = fastber.decode_parts(data)
    comps: list[Component] = []
    bad: list[ComponentError] = []
    for iid, linked, op, arg in invokes or ():
        if arg is not fastber.NO_ARGUMENT:
            comps.append(Invoke(iid, op, arg, linked))
        elif ARGUMENT_TYPES[op] is None:
            comps.append(Invoke(iid, op, None, linked))
        else:
            bad.append(ComponentError(InvokeProblem.MISTYPED_ARGUMENT, iid,
                                      f"operation {op} without its argument"))  # fmt: skip
    return TcapMessage(_TYPES[kind], otid, dtid, _dialogue(dp), tuple(comps), None, tuple(bad))


def decode(data: bytes) -> TcapMessage:
    """One TCAP message. TcapError (with the originating transaction id when one could be
    found) for anything that cannot be read as a whole; unreadable components are kept in
    ``bad_components``."""
    try:
        if fastber.enabled:
            try:
                return _decode_fast(data)
            except fastber.Fallback:
                pass  # (pycrate reads it, or says what is wrong with it)
        kind, body = _read_pycrate(data)
        dlg = _dialogue(body.get("dialoguePortion"))
        bad: list[ComponentError] = []
        comps = [x for c in body.get("components", ()) if (x := _component(c, bad)) is not None]
        p_abort = None
        if kind == "abort":
            reason = body.get("reason")
            if reason is not None and reason[0] == "p-abortCause":
                p_abort = PAbortCause(int(reason[1]))
            elif reason is not None:
                dlg = _dialogue(reason[1])
        return TcapMessage(MessageType(kind), body.get("otid"), body.get("dtid"), dlg,
                           tuple(comps), p_abort, tuple(bad))  # fmt: skip
    except TcapError as exc:
        exc.otid = exc.otid or scan_otid(data)
        raise
    except Exception as exc:  # pycrate raises more than its own errors on malformed input
        tag = data[0] if data else -1
        cause = (PAbortCause.UNRECOGNIZED_MESSAGE_TYPE if tag not in _TAGS
                 else PAbortCause.BADLY_FORMATTED_TRANSACTION_PORTION)  # fmt: skip
        raise TcapError(cause, f"{type(exc).__name__}: {exc}"[:200], scan_otid(data)) from None


def _read_pycrate(data: bytes) -> tuple[str, Any]:
    """pycrate's value of a message (pycrate raises on what it cannot read)."""
    m = grammar()
    m.from_ber(data)
    value: tuple[str, Any] = m.get_val()
    return value


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A BER definite length at ``pos``: (length, position after it)."""
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > 3:
        raise ValueError("indefinite or huge length")
    return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def scan_otid(data: bytes) -> bytes | None:
    """The originating transaction id of a message pycrate could not read, if its first
    element is one (Q.773 §4.2.1: it comes first in Begin and Continue)."""
    try:
        if not data or data[0] not in (0x62, 0x65):
            return None
        _, pos = _length(data, 1)
        if data[pos] != _OTID_TAG:
            return None
        n, pos = _length(data, pos + 1)
        otid = data[pos : pos + n]
        return otid if 1 <= n <= 4 and len(otid) == n else None
    except (IndexError, ValueError):
        return None


# -- encoding -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def dialogue_value(d: DialoguePortion) -> dict[str, Any]:
    """pycrate's value of a dialogue portion (shared, and frozen for the fast path: the
    AARE of each phase goes out with every first answer)."""
    return fastber.freeze(_dialogue_value(d))  # type: ignore[no-any-return]


def _dialogue_value(d: DialoguePortion) -> dict[str, Any]:
    pdu: dict[str, Any]
    if d.kind is DialogueKind.REQUEST:
        pdu = {"protocol-version": _VERSION1, "application-context-name": d.application_context}
    elif d.kind is DialogueKind.RESPONSE:
        pdu = {
            "protocol-version": _VERSION1,
            "application-context-name": d.application_context,
            "result": d.result,
            "result-source-diagnostic": ("dialogue-service-user", d.diagnostic),
        }
    else:
        pdu = {"abort-source": d.diagnostic}
    return {
        "direct-reference": DIALOGUE_AS_ID,
        "encoding": ("single-ASN1-type", ("DialoguePDU", (d.kind.value, pdu))),
    }


def _component_value(c: Component) -> tuple[str, Any]:
    if isinstance(c, Invoke):
        body: dict[str, Any] = {"invokeId": ("present", c.invoke_id), "opcode": ("local", c.opcode)}
        if c.linked_id is not None:
            body["linkedId"] = ("present", c.linked_id)
        name = ARGUMENT_TYPES.get(c.opcode)
        if name is not None:
            body["argument"] = (name, c.argument)
        return ("basicROS", ("invoke", body))
    if isinstance(c, ReturnResult):
        return ("basicROS", ("returnResult", {"invokeId": ("present", c.invoke_id)}))
    if isinstance(c, ReturnError):
        return ("basicROS", ("returnError", {"invokeId": ("present", c.invoke_id),
                                              "errcode": ("local", c.code)}))  # fmt: skip
    iid = ("absent", 0) if c.invoke_id is None else ("present", c.invoke_id)
    kind = "general" if isinstance(c.problem, GeneralProblem) else "invoke"
    return ("basicROS", ("reject", {"invokeId": iid, "problem": (kind, int(c.problem))}))


def _encode_fast(msg: TcapMessage) -> bytes:
    """The fast path's BER straight from the message (no pycrate value built): invokes of the
    flow only, else Fallback."""
    comps = []
    for c in msg.components:
        if type(c) is not Invoke:
            raise fastber.Fallback
        # (as _component_value: an operation without an argument type carries none)
        arg = fastber.NO_ARGUMENT if ARGUMENT_TYPES.get(c.opcode) is None else c.argument
        comps.append(fastber.invoke(c.invoke_id, c.opcode, arg, c.linked_id))
    d = msg.dialogue
    return fastber.message(msg.type.value, msg.otid, msg.dtid,
                           None if d is None else dialogue_value(d), comps)  # fmt: skip


def encode(msg: TcapMessage) -> bytes:
    if fastber.enabled and msg.type is not MessageType.ABORT:
        try:
            return _encode_fast(msg)
        except fastber.Fallback:
            pass  # (the general way below: the fast path on pycrate's value, else pycrate)
    body: dict[str, Any] = {}
    if msg.otid is not None:
        body["otid"] = msg.otid
    if msg.dtid is not None:
        body["dtid"] = msg.dtid
    if msg.type is MessageType.ABORT:
        if msg.p_abort is not None:
            body["reason"] = ("p-abortCause", int(msg.p_abort))
        elif msg.dialogue is not None:
            body["reason"] = ("u-abortCause", dialogue_value(msg.dialogue))
    else:
        if msg.dialogue is not None:
            body["dialoguePortion"] = dialogue_value(msg.dialogue)
        if msg.components:
            body["components"] = [_component_value(c) for c in msg.components]
    value = (msg.type.value, body)
    if fastber.enabled:
        try:
            return fastber.encode(value)
        except fastber.Fallback:
            pass
    return encode_pycrate(value)


def encode_pycrate(value: tuple[str, Any]) -> bytes:
    """pycrate's BER of a message value (the reference the fast path is tested against)."""
    m = grammar()
    m.set_val(value)
    return bytes(m.to_ber())


def request(phase: Phase) -> DialoguePortion:
    return DialoguePortion(DialogueKind.REQUEST, AC_OF_PHASE[phase])


def accepted(phase: Phase) -> DialoguePortion:
    return DialoguePortion(DialogueKind.RESPONSE, AC_OF_PHASE[phase])


# -- dialogues ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Dialogue:
    """One open TCAP dialogue (transaction) and whom it is with."""

    local_tid: bytes
    remote_tid: bytes
    phase: Phase
    #: Our SCCP address in it and the peer's, and the MTP3 label to answer with.
    local: SccpAddress
    remote: SccpAddress
    opc: int
    dpc: int
    association: object
    last_activity: float
    #: The first answer carries the dialogue response (AARE), later ones do not.
    answered: bool = False
    _invoke_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Whatever the TC user keeps about the dialogue (the CAMEL agent's call).
    user: Any = None

    @property
    def key(self) -> str:
        """A stable name: the peer's global title (or point code) and its transaction id."""
        who = self.remote.gt or f"pc{self.opc}"
        return f"{who}/{self.remote_tid.hex()}"

    def invoke_id(self) -> int:
        return next(self._invoke_ids) % 128

    def dialogue_portion(self) -> DialoguePortion | None:
        if self.answered:
            return None
        self.answered = True
        return accepted(self.phase)


class DialogueTable:
    """Open dialogues by our transaction id, with the TC timer (idle ones expire)."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self._by_tid: dict[bytes, Dialogue] = {}
        self._next = itertools.count(1)
        self.limit = limit

    def __len__(self) -> int:
        return len(self._by_tid)

    def open(
        self, remote_tid: bytes, phase: Phase, local: SccpAddress, remote: SccpAddress,
        opc: int, dpc: int, association: object, now: float,
    ) -> Dialogue:  # fmt: skip
        if len(self._by_tid) >= self.limit:
            raise TcapError(PAbortCause.RESOURCE_LIMITATION, "too many open dialogues",
                            remote_tid)  # fmt: skip
        while True:
            tid = (next(self._next) & 0xFFFFFFFF).to_bytes(4, "big")
            if tid not in self._by_tid:
                break
        d = Dialogue(tid, remote_tid, phase, local, remote, opc, dpc, association, now)
        self._by_tid[tid] = d
        return d

    def get(self, local_tid: bytes | None) -> Dialogue | None:
        return None if local_tid is None else self._by_tid.get(local_tid)

    def close(self, d: Dialogue) -> None:
        self._by_tid.pop(d.local_tid, None)

    def idle(self, now: float, timeout: float) -> list[Dialogue]:
        """Dialogues with no message for ``timeout`` seconds (their TC timer expired)."""
        return [d for d in self._by_tid.values() if now - d.last_activity >= timeout]

    def all(self) -> list[Dialogue]:
        return list(self._by_tid.values())
