"""Which Diameter peers may connect (docs/security.md, "Network elements").

A Diameter peer names itself in its CER (Origin-Host, Origin-Realm): on its own that proves
nothing. The OCS therefore admits a peer only when one of these holds, and answers any other
CER with DIAMETER_UNKNOWN_PEER (3010, RFC 6733 §5.3) before it can send a single CCR:

- TLS with client certificates (``OCS_DIAMETER_TLS_CA``): the handshake has verified the peer's
  certificate; with a peer list too, its Origin-Host must also be on the list;
- the peer list ``OCS_DIAMETER_PEERS``: its Origin-Host is listed, and where the entry names
  addresses (``pgw1.example.net@10.0.0.0/24``), the connection comes from one of them (the
  RFC 6733 peer table: a peer is a host at known addresses);
- ``OCS_DIAMETER_PEERS=*``: any peer, an explicit choice for a closed lab network (logged as a
  warning at start).

With neither a list nor client certificates, no peer is admitted: a fresh install has no open
charging port. This module turns the settings into that rule; the Diameter server calls
``admit`` with each CER's peer and the connection's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from protocols.diameter.peer import RemotePeer

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Why a CER is refused when nothing admits peers (the CEA's Error-Message and the log).
NOT_CONFIGURED = "no Diameter peer is configured (set OCS_DIAMETER_PEERS or OCS_DIAMETER_TLS_CA)"


class PeerListError(ValueError):
    """``OCS_DIAMETER_PEERS`` is not a list of ``host`` / ``host@address[/prefix]`` / ``*``."""


@dataclass(frozen=True)
class DiameterAdmission:
    """The admission rule: ``hosts`` maps each listed Origin-Host to the networks it may
    connect from (empty: any address); ``any_peer`` is ``*``; ``certified`` says the TLS
    handshake already required and verified a client certificate."""

    hosts: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    any_peer: bool = False
    certified: bool = False

    @property
    def closed(self) -> bool:
        """True when no peer can be admitted (nothing configured)."""
        return not (self.any_peer or self.hosts or self.certified)

    @property
    def open_to_anyone(self) -> bool:
        """True when an unauthenticated peer is admitted (``*`` without certificates)."""
        return self.any_peer and not self.certified

    def admit(self, peer: RemotePeer, address: object) -> str | None:
        """None to admit ``peer`` connecting from ``address`` (a socket peername), else why not."""
        if self.any_peer:
            return None
        if not self.hosts:
            return None if self.certified else NOT_CONFIGURED
        networks = self.hosts.get(peer.origin_host)
        if networks is None:
            return f"peer {peer.origin_host!r} is not allowed"
        if not networks:
            return None
        ip = _ip_of(address)
        if ip is not None and any(ip in net for net in networks if net.version == ip.version):
            return None
        return f"peer {peer.origin_host!r} is not allowed from {ip or 'this address'}"


def _ip_of(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        try:
            ip = ipaddress.ip_address(address[0].split("%", 1)[0])
        except ValueError:
            return None
        # An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    return None


def parse_peers(text: str, *, certified: bool = False) -> DiameterAdmission:
    """``OCS_DIAMETER_PEERS`` as an admission rule; ``certified``: TLS client certificates
    are required (``OCS_DIAMETER_TLS_CA``). Raises PeerListError naming the bad entry."""
    hosts: dict[str, list[Network] | None] = {}  # None: from any address
    any_peer = False
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry == "*":
            any_peer = True
            continue
        host, sep, where = entry.partition("@")
        host = host.strip()
        if not host or " " in host or host == "*":
            raise PeerListError(f"{entry!r} is not an Origin-Host (a DiameterIdentity)")
        if not sep:
            hosts[host] = None
            continue
        try:
            network = ipaddress.ip_network(where.strip(), strict=False)
        except ValueError:
            raise PeerListError(
                f"{entry!r}: {where.strip()!r} is not an address or network"
            ) from None
        networks = hosts.setdefault(host, [])
        if networks is not None:
            networks.append(network)
    if any_peer and hosts:
        raise PeerListError("'*' admits any peer: list hosts or '*', not both")
    return DiameterAdmission(
        {h: () if nets is None else tuple(nets) for h, nets in hosts.items()},
        any_peer=any_peer,
        certified=certified,
    )
