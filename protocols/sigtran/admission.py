"""Which network elements may open CAMEL dialogues with the gsmSCF (``OCS_CAMEL_PEERS``).

An allow-list of SSFs by MTP3 point code (the originating point code of the M3UA DATA) and/or
by SCCP calling global title (exact digits, or a prefix ending in ``*`` for a pool of MSCs):

    OCS_CAMEL_PEERS="pc:2, pc:5, gt:491720000000, gt:4917300*"

(``*``: any peer, said explicitly.)
A dialogue is admitted when its originating point code or its calling global title is on
the list; any other TC-BEGIN is refused with a U-Abort carrying an AARE (reject-permanent,
dialogue-service-user no-reason-given) before the CAMEL agent hears of it (Q.774 §3.2.2.2),
and nothing is charged. Sans-IO: :meth:`PeerList.admit` is the ``admit`` hook of
:class:`~protocols.sigtran.server.CapServer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.sigtran.sccp import SccpAddress

#: ITU point codes are 14 bits.
MAX_POINT_CODE = 0x3FFF


@dataclass(frozen=True, slots=True)
class PeerList:
    point_codes: frozenset[int] = frozenset()
    global_titles: frozenset[str] = frozenset()
    gt_prefixes: tuple[str, ...] = ()
    #: ``*``: any peer, said explicitly (a closed lab), without the start-up warning.
    anyone: bool = False

    @classmethod
    def parse(cls, text: str) -> PeerList:
        """``pc:N`` and ``gt:DIGITS`` / ``gt:DIGITS*`` entries, comma-separated, or ``*``.
        ValueError (saying which entry) for anything else, or an empty list."""
        if text.strip() == "*":
            return cls(anyone=True)
        pcs: set[int] = set()
        gts: set[str] = set()
        prefixes: list[str] = []
        for raw in text.split(","):
            entry = raw.strip()
            kind, _, value = entry.partition(":")
            kind, value = kind.strip().lower(), value.strip()
            if kind == "pc" and value.isascii() and value.isdigit():
                pc = int(value)
                if pc > MAX_POINT_CODE:
                    raise ValueError(f"{entry!r}: a point code is 0..{MAX_POINT_CODE}")
                pcs.add(pc)
            elif kind == "gt" and value.endswith("*") and _digits(value[:-1]):
                prefixes.append(value[:-1])
            elif kind == "gt" and _digits(value):
                gts.add(value)
            else:
                raise ValueError(f"{entry!r}: expected pc:<point code> or gt:<digits>[*]")
        return cls(frozenset(pcs), frozenset(gts), tuple(prefixes))

    def admit(self, calling: SccpAddress, opc: int) -> bool:
        if self.anyone or opc in self.point_codes:
            return True
        gt = calling.gt
        if not gt:
            return False
        return gt in self.global_titles or any(gt.startswith(p) for p in self.gt_prefixes)

    def describe(self) -> str:
        if self.anyone:
            return "any (*)"
        parts = [f"pc:{pc}" for pc in sorted(self.point_codes)]
        parts += [f"gt:{gt}" for gt in sorted(self.global_titles)]
        parts += [f"gt:{p}*" for p in self.gt_prefixes]
        return ", ".join(parts)


def _digits(value: str) -> bool:
    return bool(value) and value.isascii() and value.isdigit()
