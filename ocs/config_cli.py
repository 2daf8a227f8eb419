"""``ocs config show``: the effective settings, each with where it came from (a command-line
flag, the environment, the config file, or the default), secrets masked."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ocs.clikit import common_options, print_json, settings
from ocs.config import SECRET_FILES, Settings

#: Settings whose value is a secret besides those that may come from a file.
_SECRETS = frozenset(SECRET_FILES)
MASK = "********"


def _mask_url(text: str) -> str:
    """A URL with its password (if any) masked: the rest says where it points."""
    try:
        u = urlsplit(text)
        password = u.password
    except ValueError:
        return text
    if not password:
        return text
    host = u.netloc.rpartition("@")[2]
    user = u.username or ""
    return urlunsplit(u._replace(netloc=f"{user}:{MASK}@{host}"))


def shown_value(name: str, value: Any) -> Any:
    """A setting's value as ``ocs config show`` prints it: secrets masked (an empty secret
    stays empty, so "not set" is visible), passwords in URLs masked."""
    if name in _SECRETS:
        return MASK if value else value
    if isinstance(value, str):
        return _mask_url(value) if "://" in value else value
    if isinstance(value, tuple | list):
        return [shown_value(name, v) for v in value]
    return value


def effective(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every setting: name, value (masked) and source."""
    sources: dict[str, str] = {}
    current = settings(args, sources)
    out = []
    for f in fields(Settings):
        if f.name == "extra":
            continue
        value = getattr(current, f.name)
        out.append({"name": f.name, "env": f"OCS_{f.name.upper()}",
                    "value": shown_value(f.name, value),
                    "source": sources.get(f.name, "default")})  # fmt: skip
    return out


def cmd_config(args: argparse.Namespace) -> int:
    rows = effective(args)
    if args.json:
        print_json(rows)
        return 0
    width = max(len(r["env"]) for r in rows)
    shown = 0
    for r in rows:
        value = r["value"]
        if value is None:
            text = "(none)"
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if args.changed and r["source"] == "default":
            continue
        print(f"{r['env']:<{width}}  {text or '(empty)'}  [{r['source']}]")
        shown += 1
    if not shown:  # --changed with nothing changed: say so rather than print nothing
        print("every setting is at its default (ocs config show lists them)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ocs config show`` to the command line."""
    p = sub.add_parser("config", help="the effective settings and where each came from")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser(
        "show",
        help="every setting, its value (secrets masked) and its source",
        description="Print every setting as OCS_NAME, its value and where it came from: a "
        "command-line flag, the environment (env OCS_X, or env OCS_X_FILE for a secret read "
        "from a file), the config file, or the default. Secrets are masked, and so are "
        "passwords in URLs.",
    )
    common_options(a)
    a.add_argument("--changed", action="store_true", help="only the settings not at default")
    a.add_argument("--json", action="store_true", help="print JSON: name, env, value, source")
    p.set_defaults(func=cmd_config)
