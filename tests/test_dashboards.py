"""The Grafana dashboard and the Prometheus alert rules under deploy/ name only metrics the OCS
exports, and promtool (when installed: .ci/run installs it) accepts the rules and the scrape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ocs.agents.diameter import outcome_of
from ocs.charging.types import Outcome
from ocs.metrics import FAMILIES, Metrics, family_names
from protocols.diameter import constants as dc

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "ocs-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ocs-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(apt-get install prometheus; .ci/run does)")  # fmt: skip
#: Names in PromQL that are metrics of ours or of prometheus_client's collectors (label names
#: and functions never start so); quoted label values are removed first.
_METRIC = re.compile(r"\b(?:ocs|process|python)_[a-z0-9_]+\b")


def _rules() -> list[dict[str, str]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def _exported() -> set[str]:
    m = Metrics()
    m.observe("native", "debit", "success", 0.001)
    names = {ln.split("{")[0].split(" ")[0] for ln in m.render().decode().splitlines()
             if ln and not ln.startswith("#")}  # fmt: skip
    return names | family_names()


def _metrics_in(expr: str) -> set[str]:
    return set(_METRIC.findall(re.sub(r'"[^"]*"', '""', expr)))


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    alerts = {r["alert"] for r in _rules()}
    assert {"OcsStoreUnavailable", "OcsRefusalRatioHigh", "OcsLatencyP99OverBudget",
            "OcsProvisioningDeadLetters", "OcsMediationLag"} <= alerts  # fmt: skip


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_names_exported_metrics(source: str) -> None:
    exprs = [r["expr"] for r in _rules()] if source == "rules" else _dashboard_exprs()
    assert exprs
    exported = _exported()
    for expr in exprs:
        used = _metrics_in(expr)
        assert used, f"no metric in {expr!r}"
        assert used <= exported, f"{expr!r} names {sorted(used - exported)}, not exported"


#: What ``outcome`` of ``ocs_requests_total`` can be: the charging outcomes, which every agent
#: speaks (Diameter's Result-Codes and CAMEL's results mapped to them), and for the RARs and
#: ASRs the OCS sends, ``undelivered``; ``other`` for a Result-Code of no known meaning.
REQUEST_OUTCOMES = {o.value for o in Outcome} | {"undelivered", "other"}


def test_outcome_matchers_name_outcomes_the_agents_emit() -> None:
    matched = 0
    for expr in [r["expr"] for r in _rules()] + _dashboard_exprs():
        for selector in re.findall(r"ocs_requests_total\{([^}]*)\}", expr):
            for values in re.findall(r'outcome\s*(?:=~|!~|!=|=)\s*"([^"]*)"', selector):
                matched += 1
                assert set(values.split("|")) <= REQUEST_OUTCOMES, expr
    assert matched, "the refusal ratio alert selects by outcome"


def test_diameter_result_codes_are_counted_as_outcomes() -> None:
    assert outcome_of(dc.DIAMETER_SUCCESS) == "success"
    assert outcome_of(dc.DIAMETER_USER_UNKNOWN) == "user-unknown"
    assert outcome_of(dc.DIAMETER_CREDIT_LIMIT_REACHED) == "credit-limit-reached"
    assert outcome_of(dc.DIAMETER_END_USER_SERVICE_DENIED) == "service-denied"
    assert outcome_of(dc.DIAMETER_UNKNOWN_SESSION_ID) == "unknown-session"
    assert outcome_of(dc.DIAMETER_UNABLE_TO_COMPLY) == "store-unavailable"
    assert outcome_of(dc.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE) == "success"
    assert outcome_of(dc.DIAMETER_MISSING_AVP) == "invalid-request"
    assert outcome_of(3004) == "invalid-request"  # TOO_BUSY: a protocol error
    assert outcome_of(2002) == "success"  # LIMITED_SUCCESS
    assert outcome_of(4002) == "other"  # OUT_OF_SPACE: never answered by the engine
    assert outcome_of(0) == "other"
    assert {outcome_of(code) for code in range(1000, 6000)} <= REQUEST_OUTCOMES


def test_the_dashboard_shows_every_family() -> None:
    used = set().union(*map(_metrics_in, _dashboard_exprs()))
    bases = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    assert set(FAMILIES) <= bases, f"not on the dashboard: {sorted(set(FAMILIES) - bases)}"


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_lints_the_scrape() -> None:
    assert PROMTOOL is not None
    m = Metrics()
    m.observe("diameter", "CCR-I", "success", 0.001)
    m.observe_http("GET", "/v1/subscribers/{msisdn}", 200, 0.001)
    m.observe_client("hlr", "bar", "applied", 0.01)
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=m.render(), capture_output=True,
                         check=False)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
