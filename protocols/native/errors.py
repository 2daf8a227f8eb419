"""Errors of the native charging protocol.

As h11's errors carry ``error_status_hint``, a :class:`ProtocolError` carries the reply the
server sends before it closes the connection: id 0 (the request id could not be read) and
result ``invalid-request``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.native.codec import Reply

__all__ = ["LocalProtocolError", "NativeProtocolError", "ProtocolError"]


class NativeProtocolError(Exception):
    """Base class of this package's errors."""


class ProtocolError(NativeProtocolError):
    """The peer sent a frame that cannot be read: bad length, bad msgpack, not a map, no id.

    The connection cannot be resynchronised and must be closed. On the server side
    :attr:`reply` is the error reply to send first; on the client side this means the server
    is broken and every call in flight fails.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.detail)
        #: The reply that answers the broken frame: id 0, result ``invalid-request``.
        self.reply = reply

    @property
    def detail(self) -> str:
        """What was wrong, for logs and for the peer."""
        return self.reply.detail


class LocalProtocolError(NativeProtocolError, ValueError):
    """We were asked to send something the protocol cannot carry (a frame over max_frame)."""
