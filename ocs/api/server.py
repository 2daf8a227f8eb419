"""The HTTP listener: aiohttp's server, answering what its parser refuses in problem+json.

aiohttp answers a request it cannot parse (an unknown method, ``HTTP/9.9``, a request line or
header over 8190 bytes, a space in a header name, Content-Length with Transfer-Encoding, two
or negative Content-Lengths, a NUL or raw UTF-8 in the request line, TLS on the plain port)
itself, with a ``text/plain`` 400 and an ERROR traceback in the log, before any route or
middleware runs. :class:`ApiRunner` gives it a request handler that answers those in the
API's own terms instead (RFC 9457, like every other error: docs/api.md) and logs them at
debug: they are the client's fault. The connection is closed after such an answer (the
stream cannot be trusted), as aiohttp does.

``idle_timeout`` becomes aiohttp's keep-alive timeout, which runs from the connection's start
and from each answer: a client that sends nothing, or half a request line or header block,
is closed after it (aiohttp has no separate header timeout). A body that stalls is the
handlers' (``ocs.api.app``: ``body_timeout``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ocs.api.problems import problem

__all__ = ["ApiRunner", "ProblemRequestHandler", "parser_problem"]

#: Seconds the server keeps reading a body it refused before it closes the connection.
_LINGERING_TIME = 2.0

#: What each parser error means, for the problem's detail (the raw bytes are not echoed).
_DETAILS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "the request line or a header is longer than allowed"),
    (http_exceptions.InvalidHeader, "a header is not valid HTTP"),
    (http_exceptions.BadHttpMethod, "the request method is not one this server knows"),
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP/1.1"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL"),
    (http_exceptions.TransferEncodingError, "the chunked body is not valid"),
    (http_exceptions.ContentLengthError, "the body does not match its Content-Length"),
)


def parser_problem(exc: BaseException | None, status: int) -> web.Response:
    """The problem answering a request aiohttp's parser refused with ``exc``."""
    if isinstance(exc, http_exceptions.BadHttpMethod):
        # RFC 9110 §9.1: "An origin server that receives a request method that is
        # unrecognized or not implemented SHOULD respond with the 501 status code."
        status = HTTPStatus.NOT_IMPLEMENTED
    detail = next(
        (text for kind, text in _DETAILS if isinstance(exc, kind)), "the request is not valid HTTP"
    )
    return problem(status, detail=detail)


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors with problem+json."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            # A handler raised past the API's middleware: a bug; aiohttp logs it.
            return super().handle_error(request, status, exc, message)
        self.logger.debug("malformed request from %s: %r", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already; cannot send the error")
        resp = parser_problem(exc, status)
        resp.force_close()
        return resp


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` whose connections answer parser errors with problems
    and close after ``idle_timeout`` seconds without a request."""

    def __init__(self, app: web.Application, *, idle_timeout: float, **kwargs: Any) -> None:
        # Lingering (reading what is left of a refused body so that the client sees the
        # answer) is cut from aiohttp's 10 s: a stalled body must not keep the socket long.
        kwargs.setdefault("lingering_time", _LINGERING_TIME)
        super().__init__(app, keepalive_timeout=idle_timeout, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProblemServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
