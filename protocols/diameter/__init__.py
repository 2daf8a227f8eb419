"""Diameter for the OCS: RFC 6733 base, RFC 4006/8506 credit control, 3GPP TS 32.299 Gy.

Sans-IO, like ``protocols.native``: nothing here opens a socket, reads a clock or imports
``ocs``. Four modules:

* ``constants``: command codes, application ids, flags, result codes, enumerations, limits.
* ``dictionary``: the AVP dictionary (code, vendor, name, type, M-bit rule) as data.
* ``codec``: messages and AVPs, the stream :class:`Framer`, answers, per-command validation.
* ``peer``: the peer state machine (CER/CEA, DWR/DWA with the RFC 3539 watchdog, DPR/DPA).

Reading a stream (one :class:`Framer` per connection)::

    framer = Framer(max_message_size=64 * 1024)
    framer.receive_data(data)                 # whatever the socket gave
    while (message := framer.next_message()) is not NEED_DATA:
        ...                                   # FramingError: send exc.request's answer, close

Checking a request and answering an error: ``validate`` returns the decoder's problems (bad
AVP lengths 5014, unknown M-bit AVPs 5001, bad UTF-8 5004, E-bit on a request 3008) and the
command's (missing 5005, repeated 5009, unknown enumerated value 5004)::

    if problems := validate(request):
        answer = error_answer(request, problems, origin_host=HOST, origin_realm=REALM,
                              copy=("Auth-Application-Id", "CC-Request-Type",
                                    "CC-Request-Number"))

Finding AVPs, by dictionary name, code (vendor 0) or (code, vendor); a path walks into grouped
AVPs, following the first match (``find``) or every match (``find_all``)::

    request.get_int("CC-Request-Type")                # None when absent
    request.get_str("Subscription-Id", "Subscription-Id-Data")
    for mscc in request.find_all("Multiple-Services-Credit-Control"):
        used = mscc.get_int("Used-Service-Unit", "CC-Total-Octets", default=0)
        wants_quota = mscc.find("Requested-Service-Unit") is not None
    rat = request.get_bytes("Service-Information", "PS-Information", "3GPP-RAT-Type")

Values decode on access (``Avp.value``: int, str, bytes, float, datetime, IPv4Address /
IPv6Address / OtherAddress, or the member list of a grouped AVP); unknown AVPs are kept as raw
bytes and re-encoded unchanged.

Building: items are ``(name, value)`` pairs, a grouped value being a list of items, or
:class:`Avp` objects (built once with ``avp(name, value)`` and reused)::

    answer = make_answer(
        request,
        [("Multiple-Services-Credit-Control", [
            ("Granted-Service-Unit", [("CC-Total-Octets", 10_485_760)]),
            ("Rating-Group", 10), ("Validity-Time", 3600),
            ("Result-Code", DIAMETER_SUCCESS)])],
        result_code=DIAMETER_SUCCESS, origin_host=HOST, origin_realm=REALM,
        copy=("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number"))
    transport.write(framer.send(answer))

``make_answer`` keeps the command code, application id and both identifiers, clears R and T,
keeps P, sets E for 3xxx codes, puts Session-Id first and copies Proxy-Info (RFC 6733 §6.2).
Requests we originate (RAR, ASR) use ``make_request`` with ``PeerMachine.ids`` for their
Hop-by-Hop and End-to-End identifiers.

Driving the peer machine (one per connection; ``now`` is ``loop.time()``)::

    peer = PeerMachine(LocalIdentity("ocs.example.net", "example.net", ("192.0.2.1",)))
    run(peer.start(now))                       # responder: arms the CER timer
    run(peer.receive(message, now))            # for every message from the framer
    run(peer.timer_expired(now))               # when the last SetTimer deadline passes
    run(peer.stop(now))                        # graceful shutdown: DPR, wait for DPA
    run(peer.connection_lost(now))             # the socket closed

    def run(actions):
        for action in actions:                 # in order
            Send -> write framer.send(action.message); Deliver -> hand the request (or an
            answer to our RAR/ASR) to the agent; SetTimer -> (re)schedule; Opened -> the peer
            is known (action.peer.origin_host); Close -> close the transport.

Application requests arrive as ``Deliver`` only once the peer is open (``peer.is_open``);
the agent answers them through the framer itself.
"""

from __future__ import annotations

from protocols.diameter.codec import (
    NEED_DATA,
    AnswerTemplate,
    Avp,
    AvpKey,
    AvpValue,
    Framer,
    Identifiers,
    Item,
    Message,
    NeedData,
    OtherAddress,
    avp,
    build_avps,
    decode,
    error_answer,
    make_answer,
    make_request,
    raw_avp,
    validate,
)
from protocols.diameter.dictionary import AvpDef, AvpType, MRule
from protocols.diameter.errors import (
    DiameterError,
    FramingError,
    InvalidAvpValue,
    LocalProtocolError,
    Problem,
)
from protocols.diameter.peer import (
    Action,
    Close,
    Deliver,
    LocalIdentity,
    Opened,
    PeerMachine,
    PeerState,
    RemotePeer,
    Role,
    Send,
    SetTimer,
)

__all__ = [
    "NEED_DATA",
    "Action",
    "AnswerTemplate",
    "Avp",
    "AvpDef",
    "AvpKey",
    "AvpType",
    "AvpValue",
    "Close",
    "Deliver",
    "DiameterError",
    "Framer",
    "FramingError",
    "Identifiers",
    "InvalidAvpValue",
    "Item",
    "LocalIdentity",
    "LocalProtocolError",
    "MRule",
    "Message",
    "NeedData",
    "Opened",
    "OtherAddress",
    "PeerMachine",
    "PeerState",
    "Problem",
    "RemotePeer",
    "Role",
    "Send",
    "SetTimer",
    "avp",
    "build_avps",
    "decode",
    "error_answer",
    "make_answer",
    "make_request",
    "raw_avp",
    "validate",
]
