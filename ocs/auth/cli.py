"""``ocs auth key|user ...`` and ``ocs audit verify|list``.

Credentials are administered against the OCS's Redis directly (``--redis-url`` or
OCS_REDIS_URL), so that a fresh install can get its first key without one; each change is
appended to the audit log as done by ``cli:<os user>`` from this host. ``ocs audit list``
reads ``GET /v1/audit`` through the admin API (``--token``/OCS_API_TOKEN).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ocs.clikit import CliError
from ocs.clikit import api_url as _api
from ocs.clikit import common_options as _common
from ocs.clikit import print_json as _print
from ocs.clikit import request as _request
from ocs.clikit import run as _run
from ocs.clikit import settings as _settings

T = TypeVar("T")

_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _iso(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )  # fmt: skip


def expiry(text: str | None, now: int) -> int:
    """``--expires``: a duration (90d, 12h, 30m) or an RFC 3339 time; None: never (0)."""
    if text is None:
        return 0
    m = _DURATION.fullmatch(text)
    if m:
        return now + int(m.group(1)) * _UNITS[m.group(2)] * 1000
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--expires: {text!r}: a duration such as 90d or a time") from None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    ms = int(t.timestamp() * 1000)
    if ms <= now:
        raise CliError("--expires: must be in the future")
    return ms


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the passwords differ")
    return first


def _with_store(args: argparse.Namespace, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``work(security_store, authenticator)`` against the configured Redis."""
    from ocs.auth.credentials import AuthConfig, Authenticator
    from ocs.store.cluster import hot_client
    from ocs.store.errors import StoreUnavailable
    from ocs.store.security import SecurityStore

    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("--redis-url (or OCS_REDIS_URL) is required: the OCS's Redis")
    url = settings.redis_url

    async def main() -> T:
        async with hot_client(url) as client:
            store = SecurityStore(client)
            auth = Authenticator(store, AuthConfig(secret_key=settings.secret_key))
            try:
                return await work(store, auth)
            except StoreUnavailable as exc:
                raise CliError(str(exc)) from None

    result: T = _run(main())
    return result


async def _audit(auth: Any, action: str, target: str, detail: str = "") -> None:
    from ocs.auth.audit import AuditLog

    log = AuditLog(auth.store, await auth.key("audit"))
    await log.append(
        ts=str(_now()), who=f"cli:{getpass.getuser()}", role="admin", action=action,
        target=target, status="ok", detail=detail, **{"from": socket.gethostname()},
    )  # fmt: skip


def cmd_key(args: argparse.Namespace) -> int:
    from ocs.auth.credentials import new_api_key

    now = _now()

    async def create(store: Any, auth: Any) -> None:
        try:
            token, record = new_api_key(args.role, args.agency, now=now,
                                        expires_at=expiry(args.expires, now),
                                        label=args.label or "")  # fmt: skip
        except ValueError as exc:
            raise CliError(str(exc)) from None
        await store.add_api_key(record)
        await _audit(auth, "auth.key.create", f"key:{record.id}",
                     f"role={record.role} agency={record.agency or ''}")  # fmt: skip
        print(f"key {record.id} ({record.role}"
              + (f", agency {record.agency}" if record.agency else "")
              + f", expires {_iso(record.expires_at) if record.expires_at else 'never'})",
              file=sys.stderr)  # fmt: skip
        print("the token is shown once; keep it secret:", file=sys.stderr)
        print(token)

    async def listing(store: Any, auth: Any) -> None:
        rows = await store.api_keys()
        if args.json:
            _print([{"id": r.id, "role": r.role, "agency": r.agency, "label": r.label,
                     "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at),
                     "last_used_at": _iso(r.last_used_at), "revoked_at": _iso(r.revoked_at)}
                    for r in rows])  # fmt: skip
            return
        for r in rows:
            state = "revoked" if r.revoked_at else ("expired" if 0 < r.expires_at <= now
                                                    else "active")  # fmt: skip
            print(f"{r.id}  {r.role:<15} {r.agency or '-':<10} {state:<8} "
                  f"expires {_iso(r.expires_at)}  last used {_iso(r.last_used_at)}  "
                  f"{r.label}")  # fmt: skip

    async def revoke(store: Any, auth: Any) -> None:
        if not await store.revoke_api_key(args.id, now):
            raise CliError(f"no key {args.id}")
        await _audit(auth, "auth.key.revoke", f"key:{args.id}")
        print(f"key {args.id} revoked")

    work = {"create": create, "list": listing, "revoke": revoke}[args.key_action]
    _with_store(args, work)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    from ocs.auth.credentials import hash_password, new_user

    now = _now()

    async def create(store: Any, auth: Any) -> None:
        if await store.user(args.name) is not None:
            raise CliError(f"user {args.name} exists")
        try:
            record = new_user(args.name, _password(args), args.role, args.agency, now)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        await store.put_user(record)
        await _audit(auth, "auth.user.create", f"user:{args.name}",
                     f"role={args.role} agency={args.agency or ''}")  # fmt: skip
        print(f"user {args.name} created ({args.role})")

    async def passwd(store: Any, auth: Any) -> None:
        password = _password(args)
        if len(password) < 8:
            raise CliError("password: at least 8 characters")
        if not await store.set_user_field(args.name, "hash", hash_password(password)):
            raise CliError(f"no user {args.name}")
        await _audit(auth, "auth.user.passwd", f"user:{args.name}")
        print(f"password of {args.name} changed")

    async def disable(store: Any, auth: Any) -> None:
        flag = 1 if args.user_action == "disable" else 0
        if not await store.set_user_field(args.name, "disabled", flag):
            raise CliError(f"no user {args.name}")
        await _audit(auth, f"auth.user.{args.user_action}", f"user:{args.name}")
        print(f"user {args.name} {args.user_action}d")

    async def listing(store: Any, auth: Any) -> None:
        for u in await store.users():
            state = "disabled" if u.disabled else "active"
            print(f"{u.name:<20} {u.role:<15} {u.agency or '-':<10} {state}")

    work = {"create": create, "passwd": passwd, "disable": disable, "enable": disable,
            "list": listing}[args.user_action]  # fmt: skip
    _with_store(args, work)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.audit_action == "list":
        params = {k: v for k in ("who", "action", "since", "until", "before")
                  if (v := getattr(args, k)) is not None}  # fmt: skip
        params["limit"] = str(args.limit)
        _print(_run(_request("GET", f"{_api(args)}/v1/audit", params=params)))
        return 0
    from ocs.auth.audit import export, verify, verify_export

    if args.audit_action == "export":

        async def copy(store: Any, auth: Any) -> int:
            return await export(store, args.dir)

        n = _with_store(args, copy)
        print(f"exported {n} audit records to {args.dir}")
        return 0

    async def check(store: Any, auth: Any) -> Any:
        key = await auth.key("audit")
        if args.dir:
            try:
                return await asyncio.to_thread(verify_export, args.dir, key)
            except (OSError, ValueError, KeyError) as exc:
                raise CliError(f"{args.dir}: not an audit export: {exc}") from None
        return await verify(store, key)

    secret = _settings(args).secret_key
    if args.dir and secret:  # the copy checked with no Redis at all
        from ocs.auth.credentials import derive_key

        try:
            verdict = verify_export(args.dir, derive_key(secret, "audit"))
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"{args.dir}: not an audit export: {exc}") from None
    else:
        verdict = _with_store(args, check)
    if args.json:
        print(json.dumps({"ok": verdict.ok, "records": verdict.records,
                          "problem": verdict.problem}))  # fmt: skip
    elif verdict.ok:
        print(f"audit chain intact: {verdict.records} records, head signed")
    else:
        print(f"audit chain BROKEN after {verdict.records} good records: {verdict.problem}")
    return 0 if verdict.ok else 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ocs.auth.policy import ROLES

    p = sub.add_parser("auth", help="API keys and users (against the OCS's Redis)")
    groups = p.add_subparsers(dest="group", required=True, metavar="GROUP")
    k = groups.add_parser("key", help="API keys for machines and scripts")
    acts = k.add_subparsers(dest="key_action", required=True, metavar="ACTION")
    a = acts.add_parser("create", help="a new key; its token is printed once")
    _common(a)
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--agency", help="limit the key to one agency's objects")
    a.add_argument("--expires", help="a duration (90d, 12h) or a time; default never")
    a.add_argument("--label", help="what the key is for")
    a = acts.add_parser("list", help="every key: role, state, expiry, last use")
    _common(a)
    a.add_argument("--json", action="store_true")
    a = acts.add_parser("revoke", help="refuse a key from now on")
    _common(a)
    a.add_argument("id")
    k.set_defaults(func=cmd_key)

    u = groups.add_parser("user", help="people's logins (argon2id password hashes)")
    acts = u.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    actions = (
        ("create", "a new user"),
        ("passwd", "change a password"),
        ("disable", "refuse a user (their tokens stop at once)"),
        ("enable", "let a disabled user in again"),
        ("list", "every user"),
    )
    for name, text in actions:
        a = acts.add_parser(name, help=text)
        _common(a)
        if name != "list":
            a.add_argument("name")
        if name == "create":
            a.add_argument("--role", required=True, choices=ROLES)
            a.add_argument("--agency", help="limit the user to one agency's objects")
        if name in ("create", "passwd"):
            a.add_argument("--password-stdin", action="store_true",
                           help="read the password from standard input (else: prompt)")  # fmt: skip
    u.set_defaults(func=cmd_user)

    p = sub.add_parser("audit", help="the tamper-evident audit log")
    acts = p.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    a = acts.add_parser("verify", help="check the whole chain and its signed head (exit 2 "
                        "when broken, naming the first bad record)")  # fmt: skip
    _common(a)
    a.add_argument("--json", action="store_true")
    a.add_argument("--dir", help="check an exported copy (ocs audit export) instead of Redis")
    a = acts.add_parser("export", help="append the records not exported yet to DIR/audit.jsonl "
                        "(with the signed head, DIR/audit.head); at least once")  # fmt: skip
    _common(a)
    a.add_argument("--dir", default=".ocs/audit", help="where the copy goes (.ocs/audit)")
    a = acts.add_parser("list", help="records, newest first (admin API: auditor or admin)")
    a.add_argument("--api", help="admin API URL (or OCS_API_URL)")
    a.add_argument("--who")
    a.add_argument("--action", help="records whose action starts with this")
    a.add_argument("--since", help="RFC 3339 with an offset (2026-11-01T00:00:00Z)")
    a.add_argument("--until", help="RFC 3339 with an offset; records before it")
    a.add_argument("--before", help="page: the id of the last record of the previous page")
    a.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_audit)
