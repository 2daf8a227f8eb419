"""The small toolkit every ``ocs`` command module uses: the error a user reads, running a
coroutine, settings from the common options, and the admin API client.

It sits below ``ocs/cli.py`` and the command modules beside the code they drive
(``ocs/*/cli.py``, ``ocs/sims/``), so none of them imports the entry point
(docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from ocs.config import Settings, load_settings


class CliError(Exception):
    """One line for the user; exit status 1."""


class PlanProblems(CliError):
    """A plan file does not validate: each problem is one line for the user; exit status 1."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def tune_gc() -> None:
    """For a long-running server: move what start-up allocated out of the collector's sight
    and collect the youngest generation less often (the allocation rate of the request path
    otherwise triggers a gen-0 collection every few requests: ~5% of the CPU, bench/)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def use_uvloop() -> None:
    # uvloop is chosen here, at the entry point, and nowhere else (docs/architecture.md).
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one coroutine to its end on a fresh event loop (uvloop where there is one)."""
    use_uvloop()
    return asyncio.run(coro)


def settings(args: argparse.Namespace, sources: dict[str, str] | None = None) -> Settings:
    """The effective settings: the command's options over the environment and the file
    (``sources``: filled with where each came from, :func:`ocs.config.load_settings`)."""
    overrides = {
        k: getattr(args, k, None)
        for k in (
            "redis_url",
            "native_port",
            "http_port",
            "diameter_port",
            "bind",
            "data_dir",
            "plans_dir",
            "workers",
        )
    }
    return load_settings(os.environ, getattr(args, "config", None), overrides, sources)


def common_options(p: argparse.ArgumentParser, *, embedded: bool = True) -> None:
    """``--config``, ``--redis-url`` and ``--data-dir``, for commands that use the store
    (``embedded``: without a Redis URL the command starts an embedded Redis)."""
    p.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
    more = "default: embedded Redis" if embedded else "required: the OCS's Redis"
    p.add_argument("--redis-url", help=f"Redis URL (or OCS_REDIS_URL); {more}")
    if embedded:
        p.add_argument("--data-dir", help="where the embedded Redis keeps its data (default .ocs)")


# -- admin API client -------------------------------------------------------------------------


def api_url(args: argparse.Namespace) -> str:
    """The admin API's base URL: ``--api``, OCS_API_URL, or the local default."""
    return str(getattr(args, "api", None) or os.environ.get("OCS_API_URL")
               or "http://127.0.0.1:8080").rstrip("/")  # fmt: skip


#: The problem type of a plan file that does not validate (ocs.api.problems).
_INVALID_PLAN = "urn:ocs:problem:invalid-plan"
#: The bearer token sent to the admin API (``--token`` or OCS_API_TOKEN; set by ``ocs.cli``).
_token: list[str] = []


def set_token(token: str | None) -> None:
    """The bearer token every later :func:`request` sends (none if empty)."""
    _token[:] = [token] if token else []


def _auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {_token[0]}"} if _token else {}


async def request(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    *,
    content: bytes | None = None,
    content_type: str = "application/octet-stream",
    params: Mapping[str, str] | None = None,
) -> Any:
    """Send ``body`` as JSON (or ``content`` as it is); the answer's JSON, or CliError."""
    kwargs: dict[str, Any] = {"params": params, "headers": _auth_headers()}
    if content is not None:
        kwargs.update(data=content)
        kwargs["headers"]["Content-Type"] = content_type
    else:
        kwargs.update(json=body)
    import aiohttp  # (here: ~0.1 s to import, which commands that talk to no API do not pay)

    try:
        async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as resp:
            text = await resp.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = None
            if resp.status >= 400:
                if isinstance(data, dict) and data.get("type") == _INVALID_PLAN:
                    errors = data.get("errors") or [data.get("detail", "invalid plan")]
                    raise PlanProblems([str(e) for e in errors])
                if isinstance(data, dict):
                    detail = data.get("detail") or data.get("title")
                else:
                    detail = " ".join(text.split())[:200] or resp.reason
                raise CliError(f"{method} {url}: {resp.status} {detail}")
            if data is None and text:
                raise CliError(f"{method} {url}: the answer is not JSON")
            return data
    except aiohttp.ClientConnectionError as exc:
        raise CliError(f"cannot reach the OCS admin API at {url}: {exc} "
                       "(is `ocs serve` running? see --api)") from None  # fmt: skip


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# -- the parser -------------------------------------------------------------------------------


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _children(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    kids: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            kids.extend(dict.fromkeys(action.choices.values()))  # aliases share a parser
    return kids


def spread_option(parser: argparse.ArgumentParser, flag: str) -> None:
    """Let ``flag`` (declared on ``parser``, the top level) be given anywhere on the line:
    every command below accepts it too, and the last one given wins. Below the top, its
    default is "not given", so a later parser does not reset what an earlier one read; the
    commands that declared it themselves keep it in their help."""
    top = _option(parser, flag)
    if top is None:
        raise ValueError(f"{flag} is not an option of {parser.prog}")

    def walk(p: argparse.ArgumentParser, shown: bool) -> None:
        for child in _children(p):
            own = _option(child, flag)
            if own is None:
                child.add_argument(flag, dest=top.dest, default=argparse.SUPPRESS,
                                   help=top.help if shown else argparse.SUPPRESS)  # fmt: skip
            else:
                own.default = argparse.SUPPRESS
            walk(child, shown or own is not None)

    walk(parser, False)


def completion(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete where it is installed (``pip install
    ocs[completion]``, then ``eval "$(register-python-argcomplete ocs)"``): it answers and
    exits only when the shell asks (``_ARGCOMPLETE`` set); otherwise nothing happens."""
    if "_ARGCOMPLETE" not in os.environ:  # not asked: spare every command the import
        return
    try:
        import argcomplete
    except ImportError:  # optional
        return
    argcomplete.autocomplete(parser)
