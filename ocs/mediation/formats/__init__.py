"""CDR file decoders: ASN.1 BER per TS 32.298 (framed per TS 32.297 or plain) and the ASCII
format of docs/cdr-formats.md, both to ``ocs.mediation.usage.Usage``.

``decode`` never raises on malformed bytes: a record that does not decode is yielded as a
``Rejected`` with the reason, and decoding goes on with the next record where the framing
says where it starts (a truncated file yields what could be read, then one ``Rejected`` for
the rest).
"""

from __future__ import annotations

from collections.abc import Iterator

from ocs.mediation.formats._fields import network_id
from ocs.mediation.formats.ascii import decode_ascii, is_ascii
from ocs.mediation.formats.ber import Decoder, decode_ber
from ocs.mediation.formats.record import CdrRecord
from ocs.mediation.formats.rejected import Rejected
from ocs.mediation.naming import Format
from ocs.mediation.usage import Usage

__all__ = ["CdrRecord", "Rejected", "decode", "detect_format", "network_id"]


def detect_format(data: bytes, file: str = "") -> Format:
    """The format of a file: ASCII when it starts with the ASCII header line or is named
    ``.txt``/``.asc`` (without the header, the ASCII decoder rejects it, saying why); BER
    otherwise."""
    if is_ascii(data) or file.lower().endswith((".txt", ".asc")):
        return "ascii"
    return "ber"


def decode(
    data: bytes, *, switch: str, file: str, decoder: Decoder = "fast"
) -> Iterator[Usage | Rejected]:
    """Every record of one CDR file, in file order, as a ``Usage`` or a ``Rejected``.

    ``switch`` and ``file`` make a ``Usage.record_id`` (``<switch>:<file>:<sequence>``) for
    a record with no identity of its own; ``file`` (the base name) also helps choose the
    format. ``decoder`` picks the BER decoder:
    ``fast`` (default) or ``pycrate`` (the reference; slower). Records of types that are not
    charged (a transit or location-update record, say) are skipped.
    """
    if detect_format(data, file) == "ascii":
        return decode_ascii(data, switch=switch, file=file)
    return decode_ber(data, switch=switch, file=file, decoder=decoder)
