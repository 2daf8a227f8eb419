"""The import graph keeps the layering of docs/architecture.md: command modules use the CLI
toolkit (ocs.clikit), never the entry point (ocs.cli), and production packages never import
the simulators of the outside world (ocs.sims), and the agents and the provisioning worker
never import the HTTP API (ocs.api): their metrics live in ocs.metrics."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Packages allowed to import ocs.sims: the demo, the entry point and the sims themselves.
SIM_USERS = (
    "ocs/demo/",
    "ocs/sims/",
    "ocs/cli.py",
    "ocs/billing/cli.py",
    "ocs/provisioning/cli.py",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


SOURCES = sorted(p for p in (ROOT / "ocs").rglob("*.py"))


def test_the_walk_finds_the_sources() -> None:
    rel = {str(p.relative_to(ROOT)) for p in SOURCES}
    assert {"ocs/cli.py", "ocs/clikit.py", "ocs/sims/switch.py", "ocs/mediation/cli.py"} <= rel


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_the_entry_point(path: Path) -> None:
    bad = {n for n in _imports(path) if n == "ocs.cli" or n.startswith("ocs.cli.")}
    if path.name == "cli.py" and path.parent.name == "ocs":
        bad -= {"ocs.cli", "ocs.cli.main"}  # `python -m ocs.cli` runs the imported copy
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: use ocs.clikit"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_production_code_does_not_import_the_simulators(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if rel.startswith(SIM_USERS):
        return
    bad = {n for n in _imports(path) if n == "ocs.sims" or n.startswith("ocs.sims.")}
    assert not bad, f"{rel} imports the simulators {sorted(bad)}"


#: Layers below the HTTP API: they count into ocs.metrics, never into anything under ocs.api.
BELOW_API = ("ocs/agents/", "ocs/provisioning/", "ocs/metrics.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layers_below_the_api_do_not_import_it(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if not rel.startswith(BELOW_API) or rel.endswith("/cli.py"):
        return
    bad = {n for n in _imports(path) if n == "ocs.api" or n.startswith("ocs.api.")}
    assert not bad, f"{rel} imports the HTTP API {sorted(bad)}: metrics live in ocs.metrics"
