"""The access policy: roles x resources x actions, with the agency scope as a condition.

The policy is a TOML file (the shipped default is ``ocs/auth/policy.toml``, which explains the
format; OCS_POLICY_FILE replaces it). :meth:`Policy.decide` answers one question: may a caller
of this role (limited to this agency or not) do this action on this resource? Decisions are
plain functions over values (STYLE.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Final

from ocs.money import MoneyFormatError, parse_money

__all__ = ["ROLES", "Policy", "PolicyError", "Rule", "load_policy"]

#: The roles the OCS knows (docs/security.md); a policy may describe no others.
ROLES: Final = (
    "admin",
    "operator",
    "finance",
    "tariff-manager",
    "auditor",
    "agency-viewer",
    "network-element",
)
ACTIONS: Final = ("read", "write")
CONDITIONS: Final = {"agency": ("own",)}


class PolicyError(ValueError):
    """The policy file is not valid; the message names the place."""


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[str]
    resources: tuple[str, ...]
    actions: frozenset[str]
    #: The caller must be limited to an agency.
    agency_scoped: bool = False

    def matches(self, resource: str) -> bool:
        return any(_match(p, resource) for p in self.resources)


def _match(pattern: str, resource: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return resource.startswith(pattern[:-1])
    return pattern == resource


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    descriptions: Mapping[str, str] = field(default_factory=dict)
    #: role -> resource -> the largest amount (micro-units) one request may move.
    limits: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    source: str = ""

    def decide(self, role: str, agency: str | None, resource: str, action: str) -> bool:
        """Whether ``role`` may do ``action`` on ``resource``."""
        for rule in self.rules:
            if role not in rule.roles or action not in rule.actions:
                continue
            if not rule.matches(resource):
                continue
            if rule.agency_scoped and agency is None:
                continue
            return True
        return False

    def limit(self, role: str, resource: str) -> int | None:
        """The role's cap on one request to ``resource`` (micro-units), or None."""
        return self.limits.get(role, {}).get(resource)

    def with_limit(self, role: str, resource: str, amount: int) -> Policy:
        """This policy with one role limit set (a setting overriding the file)."""
        limits = {r: dict(v) for r, v in self.limits.items()}
        limits.setdefault(role, {})[resource] = amount
        return replace(self, limits=limits)

    def roles_for(self, resource: str, action: str) -> list[str]:
        """The roles some rule allows ``action`` on ``resource`` (for the docs and tests)."""
        return [r for r in ROLES if any(
            r in rule.roles and action in rule.actions and rule.matches(resource)
            for rule in self.rules
        )]  # fmt: skip


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be a non-empty list of strings")
    return list(value)


def parse_policy(text: str, source: str) -> Policy:
    """A policy from TOML text; PolicyError names the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    unknown = set(data) - {"roles", "rule"}
    if unknown:
        raise PolicyError(f"{source}: unknown table {sorted(unknown)[0]!r}")
    descriptions: dict[str, str] = {}
    limits: dict[str, dict[str, int]] = {}
    roles = data.get("roles", {})
    if not isinstance(roles, dict):
        raise PolicyError(f"{source}: roles: must be a table")
    for role, spec in roles.items():
        where = f"{source}: roles.{role}"
        if role not in ROLES:
            raise PolicyError(f"{where}: not a role of the OCS ({', '.join(ROLES)})")
        if not isinstance(spec, dict) or set(spec) - {"description", "limits"}:
            raise PolicyError(f"{where}: may hold description and limits only")
        descriptions[role] = str(spec.get("description", ""))
        for resource, amount in spec.get("limits", {}).items():
            try:
                limits.setdefault(role, {})[resource] = parse_money(amount, allow_negative=False)
            except MoneyFormatError as exc:
                raise PolicyError(f"{where}.limits.{resource}: {exc}") from None
    rules = []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{source}: needs at least one [[rule]]")
    for i, r in enumerate(raw_rules):
        where = f"{source}: rule[{i}]"
        if not isinstance(r, dict):
            raise PolicyError(f"{where}: must be a table")
        unknown = set(r) - {"roles", "resources", "actions", *CONDITIONS}
        if unknown:
            raise PolicyError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        rule_roles = _strings(r.get("roles"), f"{where}.roles")
        for role in rule_roles:
            if role not in ROLES:
                raise PolicyError(f"{where}.roles: {role!r} is not a role of the OCS")
        actions = _strings(r.get("actions"), f"{where}.actions")
        for action in actions:
            if action not in ACTIONS:
                raise PolicyError(f"{where}.actions: {action!r} is not read or write")
        agency = r.get("agency")
        if agency is not None and agency not in CONDITIONS["agency"]:
            raise PolicyError(f'{where}.agency: must be "own"')
        rules.append(
            Rule(
                frozenset(rule_roles),
                tuple(_strings(r.get("resources"), f"{where}.resources")),
                frozenset(actions),
                agency_scoped=agency == "own",
            )
        )
    return Policy(tuple(rules), descriptions, limits, source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at ``path``, or the shipped default."""
    if path:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"policy file {p}: cannot read: {exc.strerror}") from None
        return parse_policy(text, str(p))
    text = resources.files("ocs.auth").joinpath("policy.toml").read_text(encoding="utf-8")
    return parse_policy(text, "ocs/auth/policy.toml")
