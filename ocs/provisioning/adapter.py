"""The provisioning adapter interface, its HTTP client, and the webhook sender.

An adapter carries a barring command to the network (an HLR, usually through a provisioning
gateway) and says what became of it: applied now, accepted (the gateway confirms later with
a callback), or failed, for a while (``TransientError``: the worker retries) or for good
(``PermanentError``: the command goes to the dead letters). Commands set a state ("bar
outgoing", "bar nothing"), so applying one twice is harmless; they carry an idempotency key
(``command_id``) and the account version that decided them (``seq``), so a receiver can also
drop a command older than one it applied.

The HTTP protocol (docs/barring.md) is small on purpose: a shim in front of a real gateway
(SOAP, MML over TCP, ...) implements it in a page of code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import aiohttp

from ocs.provisioning.signing import sign

#: Barring levels the network knows.
BARRING_LEVELS: Final = ("none", "outgoing", "all")


class CommandOutcome(StrEnum):
    APPLIED = "applied"
    #: The gateway took the command and will confirm (or reject) it with a callback.
    ACCEPTED = "accepted"


class TransientError(Exception):
    """Failed this time (gateway down, timeout, 5xx): try again later."""


class PermanentError(Exception):
    """Refused for good (a 4xx): retrying cannot help; the command is dead-lettered."""


@dataclass(frozen=True, slots=True)
class BarringCommand:
    """Set the subscriber's barring in the network to ``barring``."""

    command_id: str
    msisdn: str
    #: none | outgoing | all
    barring: str
    #: The account version that decided it: later commands have higher numbers.
    seq: int
    #: Why: "threshold", "state", "reconcile", "replay".
    reason: str
    #: The balance then (micro-units).
    balance: int

    @property
    def action(self) -> str:
        return "unbar" if self.barring == "none" else "bar"

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, **asdict(self)}


class ProvisioningAdapter(Protocol):
    async def apply(self, command: BarringCommand) -> CommandOutcome:
        """Send the command; TransientError or PermanentError when it fails."""
        ...

    async def query(self, msisdn: str) -> str | None:
        """The barring the network applies to the subscriber now (None: unknown there)."""
        ...

    async def close(self) -> None: ...


def _json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class _SignedClient:
    """POST and GET with the configured auth header and signature."""

    def __init__(self, *, secret: str, auth: str, timeout: float) -> None:
        self.secret = secret
        self.auth = auth
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth
        if self.secret:
            headers.update(sign(self.secret, body))
        return headers

    async def post(self, url: str, data: Any) -> tuple[int, Any]:
        body = _json_body(data)
        try:
            async with self._http().post(url, data=body, headers=self._headers(body)) as resp:
                return resp.status, await _answer(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{url}: {exc or type(exc).__name__}") from exc

    async def get(self, url: str) -> tuple[int, Any]:
        try:
            async with self._http().get(url, headers=self._headers(b"")) as resp:
                return resp.status, await _answer(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{url}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _answer(resp: aiohttp.ClientResponse) -> Any:
    text = await resp.text()
    try:
        return json.loads(text) if text else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return text[:200]


def _failure(url: str, status: int, answer: Any) -> Exception:
    detail = answer.get("detail") if isinstance(answer, dict) else answer
    msg = f"{url}: HTTP {status}" + (f": {detail}" if detail else "")
    # Timeouts, throttling and server errors pass; other client errors will not.
    if status in (408, 425, 429) or status >= 500:
        return TransientError(msg)
    return PermanentError(msg)


class HttpProvisioningAdapter:
    """JSON over HTTP to a provisioning gateway (or the HLR simulator).

    ``POST {url}/v1/commands`` with the command: 200 applied, 202 accepted (a callback to
    ``callback_url`` follows). ``GET {url}/v1/subscribers/{msisdn}``: ``{"barring": ...}``,
    404 when the HLR does not know the subscriber.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str = "",
        auth: str = "",
        timeout: float = 5.0,
        callback_url: str = "",
    ) -> None:
        self.url = url.rstrip("/")
        self.callback_url = callback_url
        self._client = _SignedClient(secret=secret, auth=auth, timeout=timeout)

    async def apply(self, command: BarringCommand) -> CommandOutcome:
        data = command.to_json()
        if self.callback_url:
            data["callback_url"] = self.callback_url
        url = f"{self.url}/v1/commands"
        status, answer = await self._client.post(url, data)
        if status in (200, 201, 204):
            return CommandOutcome.APPLIED
        if status == 202:
            return CommandOutcome.ACCEPTED
        raise _failure(url, status, answer)

    async def query(self, msisdn: str) -> str | None:
        url = f"{self.url}/v1/subscribers/{msisdn}"
        status, answer = await self._client.get(url)
        if status == 404:
            return None
        if status != 200 or not isinstance(answer, dict):
            raise _failure(url, status, answer)
        barring = answer.get("barring")
        if barring not in BARRING_LEVELS:
            raise PermanentError(f"{url}: unexpected barring {barring!r}")
        return str(barring)

    async def close(self) -> None:
        await self._client.close()


class WebhookSender:
    """Signed JSON POSTs of notifications to the configured URLs."""

    def __init__(self, urls: list[str], *, secret: str = "", timeout: float = 5.0) -> None:
        self.urls = urls
        self._client = _SignedClient(secret=secret, auth="", timeout=timeout)

    async def send(self, url: str, payload: dict[str, Any]) -> None:
        """One delivery; 2xx is success, TransientError / PermanentError otherwise."""
        status, answer = await self._client.post(url, payload)
        if not 200 <= status < 300:
            raise _failure(url, status, answer)

    async def close(self) -> None:
        await self._client.close()


#: How long the worker waits for an adapter call before counting it failed (seconds).
CALL_TIMEOUT: Final = 30.0


async def with_timeout(coro: Any, seconds: float = CALL_TIMEOUT) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError as exc:
        raise TransientError(f"no answer in {seconds:g} s") from exc
